"""sr_sarra fetches small whole files in its flow thread (no hand-off to the transfer pool)
and re-announces them exactly as the pool would, against a real nginx (the shipped
etc/nginx/sarra.conf). The ack rule around it (batch commit, directory sync, confirmed
publication, then ack) is the loop's; tests/pump/test_sarra_flow.py kills a sarra between
placing and announcing."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest

from sarra.codec import v02
from sarra.config.quota import quota_table
from sarra.errors import QuotaExceeded
from sarra.flow import download as download_mod
from sarra.flow.download import Destination, Downloader, DownloadSettings
from sarra.flow.hooks import Plugins
from sarra.flow.quota import FileLedger, QuotaGuard
from sarra.flow.republish import PumpIdentity, Republisher, RepublishSettings
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, Notice, PartSpec
from sarra.transfer.base import Transport
from tests.integration.flowkit import make_files
from tests.pump.pumpkit import PumpWeb, pump_nginx

PUMP = PumpIdentity("pumpx", users=frozenset({"alice"}))


def _republisher(
    web: PumpWeb, tree: Path, base_dir: Path | None = None, quota: QuotaGuard | None = None
) -> Republisher:
    def resolve(n: Notice) -> Destination:
        return Destination(str(tree), n.path)

    downloader = Downloader(
        DownloadSettings(base_url_private=True), resolve, Plugins(), batch_commit=True,
        quota=quota,
    )  # fmt: skip
    settings = RepublishSettings(
        "xpublic",
        f"{web.base_url}/{tree.name}",
        str(base_dir or tree),
        trusted_hosts=frozenset({"127.0.0.1"}),
    )
    return Republisher(downloader, PUMP, settings)


def _notice(web: PumpWeb, src: Path, path: Path) -> Notice:
    data = path.read_bytes()
    return v02.make_notice(
        exchange="xs_alice",
        topic_prefix="v02.post",
        pubtime="20260101T000000.000",
        base_url=f"{web.base_url}/{src.name}",
        path=str(path.relative_to(src)),
        checksum=Checksum("d", hashlib.md5(data).hexdigest()),
        parts=PartSpec("1", len(data), 1, 0, 0),
        headers={"source": "bob", "to_clusters": "pumpx"},
    )


def _selected(r: Republisher, notice: Notice) -> WorkItem:
    item = WorkItem(notice)
    assert r.select(item)
    return item


def test_a_small_file_is_fetched_inline_staged_and_announced_as_the_pool_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        (path,) = make_files(src, ["d/f1.bin"], size=3000)
        notice = _notice(web, src, path)
        inline_tree, pool_tree = web.root / "pub", web.root / "pub2"
        inline, pool = _republisher(web, inline_tree), _republisher(web, pool_tree)
        # transports are made per thread (each thread keeps its own connections): the
        # thread that made one is the thread that fetched through it
        made_in: list[int] = []
        real_open = download_mod.open_transport

        def spy(url: str, **kw: Any) -> Transport:
            made_in.append(threading.get_ident())
            return real_open(url, **kw)

        monkeypatch.setattr(download_mod, "open_transport", spy)
        item = _selected(inline, notice)
        assert inline.work_inline(item) is True
        # the pool's way, in a thread of its own, for the same notice into another tree
        pool_item = _selected(pool, notice)
        worker = threading.Thread(target=pool.work, args=(pool_item,))
        worker.start()
        worker.join()
        assert made_in == [threading.get_ident(), worker.ident]
        assert item.code == pool_item.code == 201
        # staged, not placed: the loop's batch commit places it before anything is published
        assert item.staged is not None
        assert not (inline_tree / "d" / "f1.bin").exists()
        (wire,) = item.outgoing
        (pool_wire,) = pool_item.outgoing
        # byte for byte what the pool announces (same relative path, the other tree's URL)
        assert wire.body == pool_wire.body.replace(b"/pub2", b"/pub")
        assert wire.headers == pool_wire.headers
        assert wire.routing_key == pool_wire.routing_key
        assert wire.exchange == pool_wire.exchange == "xpublic"
        announced = v02.decode(
            wire.exchange, wire.routing_key, wire.body, wire.headers, wire.content_type
        )
        assert isinstance(announced, Notice)
        assert announced.base_url.rstrip("/") == f"{web.base_url}/pub"
        assert announced.path == "d/f1.bin"
        assert announced.header("source") == "alice"  # policed
        assert announced.header("from_cluster") == "pumpx"
        assert announced.checksum == notice.checksum
        inline.downloader.commit_batch([item])
        inline.sync()
        assert (inline_tree / "d" / "f1.bin").read_bytes() == path.read_bytes()
        assert inline.counts.announced == 1
        inline.downloader.close()
        pool.downloader.close()


def test_an_inline_fetch_that_fails_leaves_the_item_unannounced_for_the_pool(
    tmp_path: Path,
) -> None:
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        (path,) = make_files(src, ["d/gone.bin"], size=100)
        notice = _notice(web, src, path)
        path.unlink()  # announced, then removed before the pump fetched it: a 404
        r = _republisher(web, web.root / "pub")
        item = _selected(r, notice)
        assert r.work_inline(item) is False
        assert item.code is None and item.outgoing == [] and item.staged is None
        assert r.counts.announced == 0
        r.downloader.close()


def test_a_file_that_cannot_be_announced_is_settled_with_the_error_not_announced(
    tmp_path: Path,
) -> None:
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        (path,) = make_files(src, ["d/f.bin"], size=100)
        # the tree is not under post_base_dir: no URL can name the copy
        r = _republisher(web, web.root / "pub", base_dir=tmp_path / "elsewhere")
        item = _selected(r, _notice(web, src, path))
        assert r.work_inline(item) is True
        assert item.code == 500 and "outside post_base_dir" in item.message
        assert item.error is not None  # the loop decides: retry queue or drop
        assert item.outgoing == []
        r.downloader.close()


def test_a_file_of_a_source_with_a_quota_goes_to_the_pool_which_charges_it_once(
    tmp_path: Path,
) -> None:
    with pump_nginx(tmp_path / "nginx", tmp_path / "www") as web:
        src = web.root / "src"
        (path,) = make_files(src, ["d/f.bin"], size=100)
        ledger = FileLedger(tmp_path / "ledger")
        guard = QuotaGuard(quota_table(["alice files=0"]), ledger)
        r = _republisher(web, web.root / "pub", quota=guard)
        item = _selected(r, _notice(web, src, path))
        # not tried inline: a refusal there would be retried by the pool, and counted twice
        assert r.work_inline(item) is False
        assert item.code is None and item.outgoing == []
        assert ledger.usage("alice").refused == 0
        # the pool's attempt is refused (507), and counted, once
        with pytest.raises(QuotaExceeded):
            r.work(item)
        assert ledger.usage("alice").refused == 1
        assert not (web.root / "pub" / "d" / "f.bin").exists()
        r.downloader.close()
