"""Pump-wide bandwidth caps (sarra.flow.bandwidth): the bucket arithmetic with a fake clock,
the division of a pump total, the ``bandwidth`` lines, and the fallback to a local bucket
when the store fails (a client double here; the real Redis in
tests/integration/test_bandwidth.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import redis

from sarra.config.credentials import parse_url
from sarra.config.options import parse_bandwidth
from sarra.config.settings import load_settings
from sarra.errors import ConfigError, RateCapped
from sarra.flow.bandwidth import (
    RETRY_AFTER,
    AllOf,
    Bandwidth,
    BandwidthStore,
    Cap,
    SharedBucket,
    bandwidth_lines,
    fair_share,
    open_bandwidth,
    refill_take,
)
from sarra.flow.ratelimit import TokenBucket, read_size, throttle_callback, throttled

# -- the arithmetic -------------------------------------------------------------------------


def test_a_new_bucket_starts_full_and_a_take_beyond_it_is_a_debt_to_wait_out() -> None:
    tokens, last, wait = refill_take(None, 0.0, 100.0, 50.0, rate=1000.0, burst=100.0)
    assert (tokens, last, wait) == (50.0, 100.0, 0.0)
    tokens, last, wait = refill_take(tokens, last, 100.0, 250.0, rate=1000.0, burst=100.0)
    assert tokens == -200.0
    assert wait == pytest.approx(0.2)  # 200 bytes of debt at 1000 bytes/s


def test_the_bucket_refills_at_the_rate_up_to_its_burst_only() -> None:
    tokens, last, _ = refill_take(-500.0, 10.0, 10.3, 0.0, rate=1000.0, burst=100.0)
    assert tokens == pytest.approx(-200.0)  # 0.3 s repaid 300 of the 500
    assert last == 10.3
    tokens, last, wait = refill_take(tokens, last, 60.0, 0.0, rate=1000.0, burst=100.0)
    assert tokens == 100.0  # an idle minute leaves only the burst
    assert wait == 0.0


def test_a_clock_going_back_refills_nothing_and_keeps_the_later_time() -> None:
    tokens, last, wait = refill_take(-100.0, 50.0, 49.0, 100.0, rate=1000.0, burst=100.0)
    assert (tokens, last) == (-200.0, 50.0)
    assert wait == pytest.approx(0.2)


def test_over_a_long_run_the_takes_stay_within_rate_times_time_plus_burst() -> None:
    rate, burst, now = 1000.0, 100.0, 0.0
    tokens: float | None = None
    last, taken = 0.0, 0.0
    # three callers taking 64-byte chunks, each waiting its turn: simulated time only
    while now < 30.0:
        tokens, last, wait = refill_take(tokens, last, now, 64.0, rate, burst)
        taken += 64.0
        now += wait if wait > 0 else 0.001
    assert taken <= rate * now + burst + 64
    assert taken >= rate * now * 0.99


def test_a_pump_total_is_divided_by_weight_among_the_active_sources() -> None:
    assert fair_share(3000.0, 1.0, {"a": 1.0, "b": 1.0}, 0.0) == 1500.0
    assert fair_share(3000.0, 2.0, {"a": 2.0, "b": 1.0}, 0.0) == 2000.0
    assert fair_share(3000.0, 1.0, {"b": 1.0}, 0.0) == 3000.0  # alone: the whole total
    # its own cap is lower than its share: the cap
    assert fair_share(3000.0, 1.0, {"a": 1.0, "b": 1.0}, 1000.0) == 1000.0
    # no total: the cap alone
    assert fair_share(0.0, 1.0, {}, 700.0) == 700.0


# -- the lines ------------------------------------------------------------------------------


def test_bandwidth_lines_parse_and_the_last_of_a_name_wins() -> None:
    assert parse_bandwidth("alice 10M") == ("alice", 10_000_000, 1.0)
    assert parse_bandwidth("bob 1mi 2.5") == ("bob", 1024 * 1024, 2.5)
    assert parse_bandwidth("* 100m") == ("*", 100_000_000, 1.0)
    found = bandwidth_lines(["alice 1m", "* 5m", "alice 2m 3"])
    assert found == {"alice": (2_000_000, 3.0), "*": (5_000_000, 1.0)}


@pytest.mark.parametrize(
    "text",
    [
        "alice",
        "alice 10M 2 3",
        "alice fast",
        "alice 0",
        "alice 1m 0",
        "alice 1m -1",
        "alice 1m x",
        "* 1m 2",
        "alice 1m inf",
    ],
)
def test_a_malformed_bandwidth_line_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bandwidth(text)


def test_the_loader_refuses_a_bad_bandwidth_line_with_its_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "config"
    (conf / "subscribe").mkdir(parents=True)
    (conf / "admin.conf").write_text("bandwidth alice 1m\nbandwidth bob lots\n")
    (conf / "subscribe" / "x.conf").write_text("broker amqp://u@h/\n")
    env = {"SR_CONFIG_DIR": str(conf), "SR_STATE_DIR": str(tmp_path / "state")}
    with pytest.raises(ConfigError) as err:
        load_settings("subscribe", "x", [], env=env)
    text = str(err.value)
    assert "admin.conf" in text and ":2" in text and "lots" in text


def test_admin_conf_lines_reach_a_flow_s_settings(tmp_path: Path) -> None:
    conf = tmp_path / "config"
    (conf / "subscribe").mkdir(parents=True)
    (conf / "admin.conf").write_text(
        "bandwidth * 3m\nbandwidth alice 2m 2\nbandwidth_redis_serverurl redis://u@127.0.0.1:1/\n"
    )
    (conf / "subscribe" / "x.conf").write_text("broker amqp://u@h/\nbandwidth_shared 500k\n")
    env = {"SR_CONFIG_DIR": str(conf), "SR_STATE_DIR": str(tmp_path / "state")}
    s = load_settings("subscribe", "x", [], env=env)
    assert s.bandwidth == ("* 3m", "alice 2m 2")
    assert s.bandwidth_shared == 500_000
    assert s.bandwidth_redis_serverurl == "redis://u@127.0.0.1:1/"


def test_caps_without_a_redis_url_are_a_configuration_error(tmp_path: Path) -> None:
    conf = tmp_path / "config"
    (conf / "subscribe").mkdir(parents=True)
    (conf / "subscribe" / "x.conf").write_text("broker amqp://u@h/\nbandwidth alice 1m\n")
    env = {"SR_CONFIG_DIR": str(conf), "SR_STATE_DIR": str(tmp_path / "state")}
    s = load_settings("subscribe", "x", [], env=env)
    with pytest.raises(ConfigError, match="bandwidth_redis_serverurl"):
        open_bandwidth(s, "subscribe", None)


def test_a_store_url_that_is_not_redis_is_a_configuration_error(tmp_path: Path) -> None:
    conf = tmp_path / "config"
    (conf / "subscribe").mkdir(parents=True)
    (conf / "subscribe" / "x.conf").write_text(
        "broker amqp://u@h/\nbandwidth alice 1m\nbandwidth_redis_serverurl http://h/\n"
    )
    env = {"SR_CONFIG_DIR": str(conf), "SR_STATE_DIR": str(tmp_path / "state")}
    s = load_settings("subscribe", "x", [], env=env)
    with pytest.raises(ConfigError, match="bandwidth_redis_serverurl must be a redis"):
        open_bandwidth(s, "subscribe", None)


def test_the_store_password_comes_from_credentials_conf_and_no_dump_shows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "config"
    (conf / "subscribe").mkdir(parents=True)
    (conf / "subscribe" / "x.conf").write_text(
        "broker amqp://u@h/\nbandwidth alice 1m\nbandwidth_redis_serverurl redis://sarra@h:7/2\n"
    )
    cred = conf / "credentials.conf"
    cred.write_text("redis://sarra:s3cret@h:7/2\n")
    cred.chmod(0o600)
    env = {"SR_CONFIG_DIR": str(conf), "SR_STATE_DIR": str(tmp_path / "state")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = load_settings("subscribe", "x", [], env=env)
    found = open_bandwidth(s, "subscribe", None)
    assert found is not None
    assert found.store.url.password == "s3cret"
    assert "s3cret" not in repr(found.store)


def test_no_caps_build_nothing(tmp_path: Path) -> None:
    conf = tmp_path / "config"
    (conf / "subscribe").mkdir(parents=True)
    (conf / "subscribe" / "x.conf").write_text("broker amqp://u@h/\n")
    env = {"SR_CONFIG_DIR": str(conf), "SR_STATE_DIR": str(tmp_path / "state")}
    assert open_bandwidth(load_settings("subscribe", "x", [], env=env), "subscribe", None) is None


# -- composition and the outage fallback (a client double) ----------------------------------


class _Client:
    """Stands for redis.Redis: its script answers ``wait rate`` or raises when ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.calls: list[tuple[list[str], list[Any]]] = []
        self.answer = b"0 1000"

    def register_script(self, _source: str) -> Any:
        def script(keys: list[str], args: list[Any]) -> bytes:
            if self.down:
                raise redis.ConnectionError("connection refused")
            self.calls.append((keys, args))
            return self.answer

        return script

    def close(self) -> None:
        pass


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _store(client: _Client, clock: _Clock) -> BandwidthStore:
    return BandwidthStore(parse_url("redis://u@127.0.0.1:1/"), client=client, clock=clock)


def test_a_shared_bucket_waits_what_the_store_says() -> None:
    client, clock = _Client(), _Clock()
    waits: list[float] = []
    bucket = SharedBucket(
        _store(client, clock), "source.a", Cap(1000.0), wait=lambda d: waits.append(d) or False
    )
    client.answer = b"0.25 1000"
    assert bucket.take(500) is True
    assert waits == [0.25]
    keys, args = client.calls[-1]
    assert keys[0] == "sarra.bandwidth.bucket.source.a"
    assert args[0] == 500 and args[-1] == ""  # no time given: the script asks Redis


def test_with_the_store_down_a_process_limits_itself_then_tries_again_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, clock = _Client(), _Clock()
    store = _store(client, clock)
    bucket = SharedBucket(store, "source.a", Cap(1000.0), wait=lambda d: False)
    client.down = True
    with caplog.at_level(logging.WARNING, logger="sarra.flow.bandwidth"):
        first = bucket.reserve(100)  # from the local bucket (burst 100): no wait
        second = bucket.reserve(1000)  # the local bucket's debt
    assert first == 0.0
    assert second == pytest.approx(1.0, abs=0.01)
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # once per outage
    assert "limits itself alone" in warnings[0]
    client.down = False
    client.calls.clear()
    bucket.reserve(10)
    assert client.calls == []  # not tried again before RETRY_AFTER
    clock.now += RETRY_AFTER + 0.1
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sarra.flow.bandwidth"):
        client.answer = b"0.5 1000"
        assert bucket.reserve(10) == 0.5
    assert client.calls  # back on the shared bucket
    assert any("reachable again" in r.getMessage() for r in caplog.records)


def test_a_transfer_takes_from_every_bucket_that_applies_and_waits_for_the_slowest() -> None:
    client, clock = _Client(), _Clock()
    local = TokenBucket(10_000.0, burst=1.0, wait=lambda d: False)
    bw = Bandwidth(
        _store(client, clock),
        {"*": (3000, 1.0), "alice": (2000, 2.0)},
        ("subscribe.x", 5000),
        local=local,
    )
    lim = bw.limiter("alice")
    assert isinstance(lim, AllOf)
    assert lim.rate == 2000.0  # the smallest nominal rate: sizes reads
    assert read_size(lim) == read_size(TokenBucket(2000.0))
    client.answer = b"0.7 1000"
    assert lim.reserve(5000) == pytest.approx(0.7)
    buckets = sorted(k[0] for k, _ in client.calls)
    assert buckets == [
        "sarra.bandwidth.bucket.flow.subscribe.x",
        "sarra.bandwidth.bucket.source.alice",
    ]
    source_args = next(a for k, a in client.calls if k[0].endswith("source.alice"))
    assert source_args[1:5] == [2000.0, 3000.0, 2.0, "source.alice"]
    # a source without a line still shares the total, weight 1; no source header: "-"
    assert bw.limiter(None) is bw.limiter(None)
    client.calls.clear()
    bw.limiter(None).reserve(1)  # type: ignore[union-attr]
    assert any(k[0].endswith("source.-") for k, _ in client.calls)


def test_without_a_total_only_capped_sources_are_shared() -> None:
    client, clock = _Client(), _Clock()
    local = TokenBucket(10_000.0)
    bw = Bandwidth(_store(client, clock), {"alice": (2000, 1.0)}, local=local)
    assert bw.limiter("bob") is local
    assert isinstance(bw.limiter("alice"), AllOf)
    assert Bandwidth(_store(client, clock), {"alice": (2000, 1.0)}).limiter("bob") is None


def test_a_crowded_shared_cap_fails_a_transfer_past_bandwidth_wait_max_without_waiting() -> None:
    client, clock = _Client(), _Clock()
    local = TokenBucket(10_000.0, burst=1.0, wait=lambda d: False, wait_max=5.0)
    bw = Bandwidth(_store(client, clock), {"*": (3000, 1.0)}, local=local, wait_max=5.0)
    lim = bw.limiter("alice")
    assert isinstance(lim, AllOf) and lim.wait_max == 5.0
    client.answer = b"30 100"  # the total is crowded: this chunk would wait 30 s
    with pytest.raises(RateCapped, match="bandwidth_wait_max 5 s"):
        list(throttled([b"x" * 100], lim))
    throttle = throttle_callback(lim)
    assert throttle is not None
    with pytest.raises(RateCapped):
        throttle(100)
    # without the option the same wait is waited out
    waits: list[float] = []
    bucket = SharedBucket(
        _store(client, clock), "source.a", Cap(100.0), wait=lambda d: waits.append(d) or False
    )
    assert list(throttled([b"x" * 100], bucket)) == [b"x" * 100]
    assert waits == [30.0]
