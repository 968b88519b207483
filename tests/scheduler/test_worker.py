"""A real pump worker launched through the scheduler: sr_subscribe consuming from RabbitMQ."""

from __future__ import annotations

import secrets
import urllib.error
from collections.abc import Callable
from pathlib import Path

from tests.integration.flowkit import Site, make_files, md5_tree, post
from tests.scheduler.conftest import ROOT, Runner, spec_text, wait_for
from tests.scheduler.fake_master import Cluster


def _queue_consumed(rabbitmq, name: str) -> bool:  # type: ignore[no-untyped-def]
    try:
        return int(rabbitmq.queue_info(name).get("consumers", 0)) >= 1
    except urllib.error.HTTPError:
        return False  # not declared yet


def test_a_launched_sr_subscribe_worker_downloads_what_is_posted(  # type: ignore[no-untyped-def]
    cluster: Cluster,
    start_scheduler: Callable[[str], Runner],
    tmp_path: Path,
    rabbitmq,
    nginx,
) -> None:
    site = Site(tmp_path / "site", rabbitmq.port).setup()
    tag = f"sched{secrets.token_hex(4)}"
    queue = f"q_guest.sched.{tag}"
    dest = tmp_path / "dest"
    site.write_subscribe(
        tag,
        f"exchange xs_guest\nsubtopic {tag}.#\nqueue_name {queue}\ndirectory {dest}\n"
        "mirror on\nstrip 1\nexpire 10m\nreport_back off\naccept .*\n",
    )
    workers = (
        f'[workers.sub]\nconfig = "{tag}"\ncount = 1\ncpus = 0.5\nmem = 128\n'
        f'command = "exec {ROOT}/.venv/bin/sr_subscribe foreground {tag}"\n'
        f'env = {{ SR_CONFIG_DIR = "{site.config_dir}", SR_STATE_DIR = "{site.state_dir}" }}\n'
        "kill_grace_seconds = 2\n"
    )
    runner = start_scheduler(spec_text(cluster.masters[0].url, tmp_path / "st", workers))
    wait_for(lambda: len(cluster.running_tasks()) == 1, 30, "the worker task to run")
    (task,) = cluster.running_tasks().values()
    assert f".sub-0.{runner.sched.spec.workers['sub'].version}." in task.task_id
    wait_for(lambda: _queue_consumed(rabbitmq, queue), 60, "the worker to consume its queue")
    src = nginx.root / tag
    names = ["a.txt", "b/c.bin", "b/d e.dat"]
    make_files(src, names, size=3000)
    assert post(site, nginx.base_url, nginx.root, [src]) == 0
    # equal trees, not a count: a download in progress has a temporary name for a moment
    wait_for(lambda: dest.exists() and md5_tree(dest) == md5_tree(src), 60, "the downloads")
    # the downloader really is the task the scheduler launched, and it is still running
    assert task.task_id in cluster.running_tasks()
    assert all(r.started for r in runner.sched.state.tasks.values())
