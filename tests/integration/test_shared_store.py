"""The shared duplicate store against a real Redis (tests/servers/redis.py): two stores on one
key base stand for two nodes."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sarra.codec import v02
from sarra.codec.timestamps import now_timestamp
from sarra.config.credentials import CredentialStore, parse_url
from sarra.errors import ConfigError, Interrupted
from sarra.flow.sharedstore import Claim, SharedDuplicateCache, SharedStore, open_store, redis_url
from sarra.notice import Checksum, Notice, PartSpec
from tests.integration.flowkit import unique
from tests.servers.redis import Redis


def _store(redis_server: Redis, keybase: str, ttl: float = 60.0, **kw: object) -> SharedStore:
    url = parse_url(redis_server.credentials_line())
    return SharedStore(url, keybase, ttl, **kw)  # type: ignore[arg-type]


def _notice(path: str, md5: str = "0" * 32) -> Notice:
    return v02.make_notice(
        exchange="xs_x",
        topic_prefix="v02.post",
        pubtime=now_timestamp(),
        base_url="http://a.example",
        path=path,
        checksum=Checksum("d", md5),
        parts=PartSpec("1", 10, 1, 0, 0),
        headers={},
    )


def test_a_check_on_one_node_makes_the_same_entry_a_duplicate_on_another(
    redis_server: Redis,
) -> None:
    base = unique("nd")
    a, b = _store(redis_server, base), _store(redis_server, base)
    assert a.check(1) is False
    assert b.check(1) is True
    assert a.check(2) is False
    other = _store(redis_server, unique("nd"))  # another configuration: its own entries
    assert other.check(1) is False
    for s in (a, b, other):
        s.close()


def test_an_entry_expires_after_the_ttl(redis_server: Redis) -> None:
    store = _store(redis_server, unique("nd"), ttl=0.4)
    assert store.check(7) is False
    assert store.check(7) is True
    time.sleep(0.8)
    assert store.check(7) is False
    store.close()


def test_concurrent_claims_from_two_nodes_give_each_entry_to_exactly_one(
    redis_server: Redis,
) -> None:
    base = unique("nd")
    won: Counter[int] = Counter()
    lock = threading.Lock()

    def node() -> None:
        store = _store(redis_server, base)
        mine = []
        for digest in range(300):
            if store.claim(digest, lambda: store.commit(mine)) is Claim.NEW:
                mine.append(digest)
                with lock:
                    won[digest] += 1
            if len(mine) >= 10:
                store.commit(mine)
                mine.clear()
        store.commit(mine)
        store.close()

    threads = [threading.Thread(target=node) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(won) == list(range(300))
    assert set(won.values()) == {1}


def test_a_pending_claim_holds_the_other_node_until_committed_then_it_is_a_duplicate(
    redis_server: Redis,
) -> None:
    base = unique("nd")
    a, b = _store(redis_server, base), _store(redis_server, base)
    assert a.claim(5) is Claim.NEW
    assert a.claim(5) is Claim.NEW  # its own claim again (e.g. asked twice)
    verdicts: list[Claim] = []
    busy: list[bool] = []
    waiter = threading.Thread(target=lambda: verdicts.append(b.claim(5, lambda: busy.append(True))))
    waiter.start()
    time.sleep(0.5)
    assert verdicts == [] and busy == [True]  # waiting, its own claims flushed once
    a.commit([5])
    waiter.join(10)
    assert verdicts == [Claim.DUPLICATE]


def test_the_claim_of_a_node_that_died_expires_and_another_node_takes_the_file(
    redis_server: Redis,
) -> None:
    base = unique("nd")
    dead = _store(redis_server, base, claim_ttl=0.5)
    assert dead.claim(9) is Claim.NEW  # then never commits
    alive = _store(redis_server, base)
    started = time.monotonic()
    assert alive.claim(9) is Claim.NEW
    assert time.monotonic() - started >= 0.3
    alive.commit([9])
    assert dead.claim(9) is Claim.DUPLICATE


def test_a_released_claim_is_free_at_once_and_only_its_owner_releases_it(
    redis_server: Redis,
) -> None:
    base = unique("nd")
    a, b = _store(redis_server, base), _store(redis_server, base)
    assert a.claim(3) is Claim.NEW
    assert b.release([3]) == 0  # not b's
    assert a.release([3]) == 1
    assert b.claim(3) is Claim.NEW


def test_while_redis_is_down_the_store_waits_logs_once_without_the_password_and_goes_on(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from tests.servers.redis import start_redis

    server = start_redis()
    try:
        store = _store(server, unique("nd"), timeout=1.0)
        assert store.check(1) is False
        server.stop()
        got: list[bool] = []
        caplog.set_level(logging.WARNING, logger="sarra.flow.sharedstore")
        worker = threading.Thread(target=lambda: got.append(store.check(1)))
        worker.start()
        time.sleep(2.0)
        assert got == []  # waiting, not guessing
        server.start()  # an empty Redis (no persistence): the entry is gone
        worker.join(30)
        assert got == [False]
        text = caplog.text
        assert text.count("unreachable") == 1
        assert "reachable again" in text
        assert server.password not in text
        assert f"redis://sarra@127.0.0.1:{server.port}/0" in text
        store.close()
    finally:
        server.stop()


def test_stopping_while_redis_is_down_raises_interrupted_not_a_verdict() -> None:
    url = parse_url("redis://127.0.0.1:1/0")  # nothing listens on port 1
    stop = threading.Event()
    store = SharedStore(url, "k", 60.0, stop=stop, timeout=0.5)
    threading.Timer(0.5, stop.set).start()
    with pytest.raises(Interrupted):
        store.claim(1)
    with pytest.raises(Interrupted):
        store.check(1)  # stop is set: the first failure ends it


def test_the_password_comes_from_the_credentials_file(redis_server: Redis, tmp_path: Path) -> None:
    creds = tmp_path / "credentials.conf"
    creds.write_text(redis_server.credentials_line() + "\n")
    creds.chmod(0o600)
    url = redis_url(redis_server.url(), CredentialStore.load(creds))
    assert url.password == redis_server.password
    store = SharedStore(url, unique("nd"), 60.0)
    store.ping()
    assert redis_server.password not in repr(store)
    store.close()
    with pytest.raises(ConfigError, match="redis:// or rediss://"):
        redis_url("amqp://u@h/", CredentialStore())


def test_open_store_follows_the_options(
    redis_server: Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sarra.config.settings import Settings

    config = tmp_path / "config"
    (config / "subscribe").mkdir(parents=True)
    creds = config / "credentials.conf"
    creds.write_text(redis_server.credentials_line() + "\n")
    creds.chmod(0o600)
    monkeypatch.setenv("SR_CONFIG_DIR", str(config))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    (config / "subscribe" / "s.conf").write_text(
        "broker amqp://u@127.0.0.1/\nsuppress_duplicates 60\n"
        f"nodupe_driver redis\nnodupe_redis_serverurl {redis_server.url()}\n"
    )
    s = Settings.load("subscribe", "s")
    store = open_store(s, "subscribe")
    assert store is not None and store.keybase == "sarra.nodupe.subscribe.s"
    store.ping()
    store.close()
    (config / "subscribe" / "s.conf").write_text(
        "broker amqp://u@127.0.0.1/\nsuppress_duplicates 60\nnodupe_driver redis\n"
        "nodupe_redis_keybase mine\n"
    )
    with pytest.raises(ConfigError, match="needs nodupe_redis_serverurl"):
        open_store(Settings.load("subscribe", "s"), "subscribe")
    (config / "subscribe" / "s.conf").write_text("broker amqp://u@127.0.0.1/\n")
    assert open_store(Settings.load("subscribe", "s"), "subscribe") is None
    (config / "winnow").mkdir()
    (config / "winnow" / "w.conf").write_text(
        "broker amqp://u@127.0.0.1/\nexchange x\npost_exchange y\nnodupe_driver redis\n"
        f"nodupe_redis_serverurl {redis_server.url()}\nnodupe_redis_claim 5s\n"
    )
    winnow = open_store(Settings.load("winnow", "w"), "winnow")
    assert winnow is not None
    assert (winnow.keybase, winnow.claim_ms, winnow.ttl_ms) == (
        "sarra.nodupe.winnow.w",
        5000,
        1200 * 1000,  # the winnow's default suppress_duplicates
    )
    winnow.close()


def test_shared_nodupe_of_two_subscribers_and_forget_after_a_delete(
    redis_server: Redis,
) -> None:
    base = unique("nd")
    a = SharedDuplicateCache(_store(redis_server, base), ttl=60.0)
    b = SharedDuplicateCache(_store(redis_server, base), ttl=60.0)
    n = _notice("/data/f1.txt", "1" * 32)
    assert a.check(n) is False
    assert b.check(n) is True
    assert a.forget("/data/f1.txt") == 1  # e.g. the file was deleted: a new copy may come
    assert b.check(n) is False
    a.close()
    b.close()


def test_a_wrong_password_gives_no_verdict_it_waits_and_says_why(
    redis_server: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    url = parse_url(f"redis://sarra:Not-The-Pw-42@127.0.0.1:{redis_server.port}/0")
    stop = threading.Event()
    store = SharedStore(url, unique("nd"), 60.0, stop=stop)
    caplog.set_level(logging.ERROR, logger="sarra.flow.sharedstore")
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        store.claim(1)
    assert time.monotonic() - started >= 0.8  # waited for the stop, neither passed nor dropped
    assert "unreachable or failing" in caplog.text
    assert "Not-The-Pw-42" not in caplog.text
    store.close()


def test_a_stopping_winnow_releases_the_claims_it_never_published(
    redis_server: Redis, tmp_path: Path
) -> None:
    from sarra.flow.winnow import WinnowCache, Winnower
    from sarra.flow.work import WorkItem

    class NoBroker:  # select only fills the outbox: publishing happens at settle
        connected = False

    base = unique("nd")
    store = _store(redis_server, base)
    cache = WinnowCache(None, ttl=600.0)
    winnower = Winnower(cache, NoBroker(), "xout", store=store)  # type: ignore[arg-type]
    notice = _notice("/data/w.txt", "2" * 32)
    item = WorkItem(notice=notice)
    assert winnower.select(item) is False and item.code == 201  # claimed, in the outbox
    other = _store(redis_server, base, claim_ttl=60.0)
    digest = cache.digest(notice)
    assert other._claim(keys=[other.key(digest)], args=[other.owner, 1000, 1000]) == 2
    winnower.close()  # stopping before the outbox was published
    assert other.claim(digest) is Claim.NEW  # at once, not after the claim expired
    store.close()
    other.close()
