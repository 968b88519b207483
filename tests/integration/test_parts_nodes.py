"""Block completion across pump nodes: two ``sr_subscribe`` processes standing for two nodes
(each its own config and state directory) consume one queue into one shared tree; the blocks
of each multi-part file land on both, and each file is assembled once, correctly, because
both keep their part records (and the ``flock`` locks on them) in one ``parts_dir`` on the
shared file system.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import pytest

from tests.chaos import chaoskit as ck
from tests.integration.flowkit import Site, post, unique

pytestmark = [pytest.mark.timeout(180)]

BLOCK = 16 * 1024
FILES = 6
BLOCKS = 12


def _hooks(tmp_path: Path) -> tuple[Path, Path]:
    """A plugin logging ``<pid> part|file <path>`` for each on_part / on_file call."""
    log = tmp_path / "hooks.log"
    plugin = tmp_path / "node_hooks.py"
    plugin.write_text(
        "import os\n"
        "def _note(kind, work):\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f'{os.getpid()} {kind} {work.local_path}\\n')\n"
        "def on_part(work):\n"
        "    _note('part', work)\n"
        "def on_file(work):\n"
        "    _note('file', work)\n"
    )
    return plugin, log


def test_blocks_landing_on_two_nodes_sharing_the_tree_complete_each_file_once(  # type: ignore[no-untyped-def]
    rabbitmq, nginx, tmp_path
):
    tag = unique("pnodes")
    src = nginx.root / tag
    src.mkdir(parents=True)
    expected = {}
    for i in range(FILES):
        data = hashlib.sha512(f"{tag}{i}".encode()).digest() * (BLOCKS * BLOCK // 64 - 7)
        (src / f"big{i}.bin").write_bytes(data)
        expected[f"big{i}.bin"] = hashlib.md5(data).hexdigest()
    shared = tmp_path / "shared"
    tree, parts = shared / "tree", shared / "parts"
    plugin, hooks = _hooks(tmp_path)
    nodes = [Site(tmp_path / f"node{n}", rabbitmq.port).setup() for n in (1, 2)]
    # prefetch 1 and one transfer thread each: blocks alternate between the two nodes
    extra = f"inplace on\nparts_dir {parts}\non_part {plugin}\non_file {plugin}\n"
    fleets = [
        ck.Fleet(site, tag, tree, tmp_path / f"logs{n}", count=1, prefetch=1, extra=extra)
        for n, site in enumerate(nodes)
    ]
    try:
        fleets[0].declare()
        for f in fleets:
            f.start()
        paths = sorted(src.iterdir())
        rc = post(
            nodes[0],
            nginx.base_url,
            nginx.root,
            paths,
            ("blocksize", str(BLOCK)),
            ("randomize", "on"),
        )
        assert rc == 0

        def placed() -> int:
            if not hooks.exists():
                return 0
            return sum(" file " in line for line in hooks.read_text().splitlines())

        ck.wait_until(lambda: placed() >= FILES, 90, "every file placed", every=0.5)
        ck.wait_until(
            lambda: ck.queue_depth(rabbitmq, fleets[0].queue) == 0, 60, "the queue drained"
        )
        for f in fleets:
            f.stop()
        assert not any(f.crashed for f in fleets), [f.crashed for f in fleets]
    finally:
        for f in fleets:
            f.close()
    lines = [line.split(" ", 2) for line in hooks.read_text().splitlines()]
    part_pids: dict[str, set[str]] = defaultdict(set)
    for pid, kind, path in lines:
        if kind == "part":
            part_pids[Path(path).name].add(pid)
    # on_file once per file, for every file
    assert sorted(Path(path).name for _, kind, path in lines if kind == "file") == sorted(expected)
    # the blocks really landed on both nodes: some file got blocks from both processes
    spread = [name for name, pids in part_pids.items() if len(pids) == 2]
    assert spread, f"no file had blocks on both nodes: {dict(part_pids)}"
    got = {
        str(p.relative_to(tree)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in tree.rglob("*")
        if p.is_file()
    }
    assert got == expected  # each file once, correct, and nothing else (no part leftovers)
    # the records are in the shared parts_dir, not in either node's own state directory
    assert list(parts.rglob("done/*.json"))
    for site in nodes:
        assert not list(site.state_dir.rglob("parts/*/done/*.json"))
    print(f"\nparts across nodes: {FILES} files x {BLOCKS} blocks, {len(spread)} spread on 2 nodes")
