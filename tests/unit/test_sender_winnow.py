"""Fast checks of sr_sender and sr_winnow pieces (the real paths are in tests/integration)."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from sarra.broker.base import Broker, BrokerUrl
from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.codec import v02
from sarra.components.common import MaskResolver
from sarra.components.sender import SenderComponent, send_settings
from sarra.components.winnow import WinnowComponent
from sarra.config.settings import Settings, load_settings
from sarra.errors import ConfigError, HostilePath
from sarra.flow.send import RemoteTarget, Sender, SendSettings, inflight_path
from sarra.flow.winnow import WinnowCache, Winnower, input_bindings, shard_of
from sarra.flow.work import WorkItem
from sarra.notice import Checksum, Notice, PartSpec, WireMessage
from sarra.transfer.url import retrieval_url

ETC = Path(__file__).resolve().parents[2] / "etc"


def _notice(path: str, content: str = "x", base: str = "http://a.example", **kw: str) -> Notice:
    return v02.make_notice(
        exchange="xwinnow",
        topic_prefix="v02.post",
        pubtime="20261125120000.5",
        base_url=base,
        path=path,
        checksum=Checksum("d", hashlib.md5(content.encode()).hexdigest()),
        parts=PartSpec("1", 10, 1, 0, 0),
        headers=kw or None,
    )


def _env(tmp_path: Path) -> dict[str, str]:
    return {"SR_CONFIG_DIR": str(tmp_path), "SR_STATE_DIR": str(tmp_path), "HOME": "/home/u"}


# -- sender --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("final", "inflight", "expected"),
    [
        ("/in/a/b.txt", ".tmp", "/in/a/b.txt.tmp"),
        ("/in/a/b.txt", "tmp/", "/in/a/tmp/b.txt"),
        ("/in/a/b.txt", "_part_", "/in/a/_part_b.txt"),
        ("b.txt", "tmp/", "tmp/b.txt"),
        ("/b.txt", ".tmp", "/b.txt.tmp"),
        ("/in/b.txt", None, "/in/b.txt"),
    ],
)
def test_the_inflight_name_follows_the_sr2_forms(
    final: str, inflight: str | None, expected: str
) -> None:
    assert inflight_path(final, inflight) == expected


def _sender(base_dir: str | None = "/srv/pump") -> Sender:
    settings = SendSettings(destination="sftp://u@h/", base_dir=base_dir)
    return Sender(settings, lambda n: RemoteTarget("/incoming", n.path))


def test_a_sender_reads_local_files_under_base_dir_only() -> None:
    sender = _sender()
    assert sender.local_path(_notice("a/b.txt")) == "/srv/pump/a/b.txt"
    with pytest.raises(HostilePath):
        sender.local_path(_notice("a/../../etc/shadow"))


def test_a_sender_without_base_dir_only_locates_file_urls() -> None:
    sender = _sender(None)
    assert sender.local_path(_notice("data/x", base="file:")) == "/data/x"
    with pytest.raises(HostilePath):
        sender.local_path(_notice("data/x"))


def test_a_remote_path_that_would_leave_the_remote_directory_is_refused() -> None:
    settings = SendSettings(destination="sftp://u@h/", base_dir="/srv")
    sender = Sender(settings, lambda n: RemoteTarget("/incoming", "../outside/x"))
    with pytest.raises(HostilePath):
        sender.select(WorkItem(notice=_notice("a/x")))


def test_a_block_of_a_local_file_that_is_not_complete_is_not_sent() -> None:
    notice = v02.derive(_notice("a/x"), parts=PartSpec("i", 10, 3, 0, 1))
    item = WorkItem(notice=notice)
    assert _sender().select(item) is False
    assert item.code == 499 and "not the 30 announced" in item.message


def test_a_part_object_block_is_refused_by_a_sender() -> None:
    notice = v02.derive(_notice("a/x.10.3.0.1.d.Part"), parts=PartSpec("p", 10, 3, 0, 1))
    item = WorkItem(notice=notice)
    assert _sender().select(item) is False
    assert item.code == 417


def test_the_sender_example_loads_and_resolves(tmp_path: Path) -> None:
    cfg = load_settings("sender", str(ETC / "sender" / "to_partner.conf"), env=_env(tmp_path))
    assert cfg.get("mirror") is True and cfg.get("accept_unmatch") is False
    settings = send_settings(cfg)
    assert settings.inflight == ".tmp" and settings.base_dir == "/srv/pump"
    assert settings.announce is not None and settings.announce.exchange == "xs_pumpa"
    assert settings.announce.base_url == "sftp://ingest@partner.example.com/"


@pytest.mark.parametrize(
    ("destination", "accepted"),
    [("sftp://u@h/", True), ("ftp://u@h/", True), ("ftps://u@h:2121/", True),
     ("http://h/", False), ("file:///tmp", False)],
)  # fmt: skip
def test_a_sender_sends_to_sftp_ftp_and_ftps_only(
    tmp_path: Path, destination: str, accepted: bool
) -> None:
    conf = tmp_path / "dest.conf"
    conf.write_text(f"broker amqp://u@localhost/\nexchange xpublic\ndestination {destination}\n")
    cfg = load_settings("sender", str(conf), env=_env(tmp_path))
    if accepted:
        assert send_settings(cfg).destination == destination
    else:
        with pytest.raises(ConfigError, match="destination scheme"):
            send_settings(cfg)


@pytest.mark.parametrize(("rigour", "verify"), [("", True), ("tls_rigour lax\n", False)])
def test_tls_rigour_lax_turns_off_certificate_checks_of_a_sender(
    tmp_path: Path, rigour: str, verify: bool
) -> None:
    conf = tmp_path / "tls.conf"
    conf.write_text(
        f"broker amqp://u@localhost/\nexchange xpublic\ndestination ftps://u@h/\n{rigour}"
    )
    settings = send_settings(load_settings("sender", str(conf), env=_env(tmp_path)))
    assert settings.tls_verify is verify


def _dest_conf(tmp_path: Path, destination: str, extra: str = "") -> Settings:
    conf = tmp_path / "dest.conf"
    conf.write_text(
        f"broker amqp://u@localhost/\nexchange xpublic\ndestination {destination}\n{extra}"
        "post_broker amqp://u@localhost/\naccept .*\n"
    )
    return load_settings("sender", str(conf), env=_env(tmp_path))


@pytest.mark.parametrize(
    ("destination", "directory", "remote", "announced"),
    [
        # no path: directory as it is (absolute, or relative to the login directory)
        ("sftp://u@h/", "/data/in", "/data/in/a/x", "sftp://u@h/data/in/a/x"),
        ("sftp://u@h", "in", "in/a/x", "sftp://u@h/~/in/a/x"),
        # a path: the remote tree; directory relative to it, or inside it
        ("sftp://u@h/data/out", "", "/data/out/a/x", "sftp://u@h/data/out/a/x"),
        ("sftp://u@h/data/out/", "in", "/data/out/in/a/x", "sftp://u@h/data/out/in/a/x"),
        ("ftp://u@h/data/out", "/data/out/in", "/data/out/in/a/x", "ftp://u@h/data/out/in/a/x"),
        ("ftp://u@h/~/out", "in", "out/in/a/x", "ftp://u@h/~/out/in/a/x"),
        ("sftp://u@h/sp%20ace", "", "/sp ace/a/x", "sftp://u@h/sp%20ace/a/x"),
    ],
)
def test_the_path_of_the_destination_is_the_remote_tree_files_are_sent_to_and_announced_in(
    tmp_path: Path, destination: str, directory: str, remote: str, announced: str
) -> None:
    cfg = _dest_conf(tmp_path, destination, f"directory {directory}\n" if directory else "")
    settings = send_settings(cfg)
    sender = Sender(settings, MaskResolver(cfg, RemoteTarget, rename_header=True))
    item = WorkItem(notice=_notice("a/x", base="file:"))
    assert sender.select(item) is True
    assert RemoteTarget(str(item.dest_root), str(item.dest_rel)).path == remote
    sender._announce(item, remote)
    (wire,) = item.outgoing
    decoded = v02.decode(wire.exchange, wire.routing_key, wire.body, wire.headers)
    assert (
        isinstance(decoded, Notice) and retrieval_url(decoded.base_url, decoded.path) == announced
    )


def test_a_password_in_the_destination_is_never_announced(tmp_path: Path) -> None:
    cfg = _dest_conf(tmp_path, "sftp://u:s3cret@h/data")
    announce = send_settings(cfg).announce
    assert announce is not None and announce.base_url == "sftp://u@h/data"


@pytest.mark.parametrize(
    ("destination", "directory"),
    [
        ("sftp://u@h/data/out", "/data/other"),  # absolute, elsewhere
        ("sftp://u@h/data/out", "/data/outside"),  # a prefix of the name is not inside
        ("sftp://u@h/data/out", "/"),
        ("sftp://u@h/data/out", "../other"),
        ("sftp://u@h/data/out", "in/../../other"),
        ("ftp://u@h/~/out", "/out"),  # the login directory is not known: absolute is outside
        ("sftp://u@h/data/../etc", ""),
    ],
)
def test_a_directory_outside_the_destination_path_does_not_start(
    tmp_path: Path, destination: str, directory: str
) -> None:
    cfg = _dest_conf(tmp_path, destination, f"directory {directory}\n" if directory else "")
    with pytest.raises(ConfigError):
        send_settings(cfg)


def test_an_expanded_directory_outside_the_destination_path_is_refused_per_notice(
    tmp_path: Path,
) -> None:
    cfg = _dest_conf(tmp_path, "sftp://u@h/data/out", "directory /data/${SOURCE}\n")
    sender = Sender(send_settings(cfg), MaskResolver(cfg, RemoteTarget, rename_header=True))
    assert sender.select(WorkItem(notice=_notice("a/x", base="file:", source="out"))) is True
    with pytest.raises(HostilePath, match="outside the destination's tree /data/out"):
        sender.select(WorkItem(notice=_notice("a/x", base="file:", source="evil")))


def test_a_sender_without_destination_does_not_start(tmp_path: Path) -> None:
    conf = tmp_path / "nodest.conf"
    conf.write_text("broker amqp://u@localhost/\nexchange xpublic\n")
    cfg = load_settings("sender", str(conf), env=_env(tmp_path))
    with pytest.raises(ConfigError, match="destination"):
        SenderComponent().run(cfg, 0, threading.Event())


# -- winnow --------------------------------------------------------------------------------


class _PostDouble:
    """Records what would be published (the real broker path is in tests/integration)."""

    connected = True

    def __init__(self) -> None:
        self.published: list[WireMessage] = []

    def connect(self) -> None:
        self.connected = True

    def publish(self, messages: Sequence[WireMessage]) -> None:
        self.published.extend(messages)


def test_the_winnow_passes_each_file_once_whatever_its_base_url() -> None:
    post = _PostDouble()
    winnower = Winnower(WinnowCache(None, ttl=1200), post, "xout")  # type: ignore[arg-type]
    items = [
        WorkItem(notice=_notice("a/f1", "one", x_extra="kept")),
        WorkItem(notice=_notice("a/f1", "one", base="sftp://b.example")),  # same file
        WorkItem(notice=_notice("a/f2", "one")),  # same content, other path
        WorkItem(notice=_notice("a/f1", "changed")),  # same path, new content
    ]
    for item in items:
        assert winnower.select(item) is False
    assert [i.code for i in items] == [201, 304, 201, 201]
    assert post.published == []  # nothing before the settle step
    winnower.before_settle()
    assert len(post.published) == 3
    first = post.published[0]
    assert first.exchange == "xout"
    assert first.headers["x_extra"] == "kept"
    assert first.body == v02.to_wire(items[0].notice).body  # otherwise unchanged
    again = WorkItem(notice=_notice("a/f1", "one", base="http://c.example"))
    winnower.select(again)
    assert again.code == 304


def test_an_on_message_plugin_drops_notices_before_the_winnow_sees_them() -> None:
    from sarra.flow.hooks import Plugins

    class NoTmp:
        def __init__(self) -> None:
            self.seen: list[str] = []

        def on_message(self, work: WorkItem) -> bool:
            self.seen.append(work.notice.path)
            return not work.notice.path.endswith(".tmp")

    plugin = NoTmp()
    plugins = Plugins()
    plugins.register("notmp", plugin)
    post = _PostDouble()
    winnower = Winnower(WinnowCache(None, ttl=1200), post, "xout", plugins=plugins)  # type: ignore[arg-type]
    items = [WorkItem(notice=_notice(p)) for p in ("a/f1.tmp", "a/f1", "a/f1.tmp")]
    for item in items:
        assert winnower.select(item) is False
    # the plugin runs before the duplicate check: the repeated .tmp is dropped, not a 304
    assert [(i.code, i.message) for i in items] == [
        (0, "dropped by an on_message plugin"),
        (201, "Published"),
        (0, "dropped by an on_message plugin"),
    ]
    assert plugin.seen == ["a/f1.tmp", "a/f1", "a/f1.tmp"]
    winnower.before_settle()
    assert [m.body for m in post.published] == [v02.to_wire(items[1].notice).body]


def test_the_winnow_splits_its_posts_by_checksum_as_sr2() -> None:
    post = _PostDouble()
    winnower = Winnower(WinnowCache(None, ttl=1200), post, "xout", split=2)  # type: ignore[arg-type]
    notice = _notice("a/f1")
    assert winnower.target_exchange(notice) == v02.split_exchange("xout", notice.checksum, 2)
    assert winnower.target_exchange(notice) in ("xout00", "xout01")


def test_the_winnow_cache_persists_across_restarts_and_expires_by_age(tmp_path: Path) -> None:
    path = tmp_path / "recent_files_000.cache"
    notice = _notice("a/f1")
    cache = WinnowCache(path, ttl=60)
    assert not cache.seen(notice)
    cache.record(notice)
    cache.sync()
    cache.close()
    reopened = WinnowCache(path, ttl=60)
    assert reopened.seen(notice)
    import time

    assert not reopened.seen(notice, now=time.time() + 61)
    reopened.expire(time.time() + 61)
    assert len(reopened) == 0
    reopened.close()


def test_winnow_instances_each_read_their_own_shard(tmp_path: Path) -> None:
    cfg = load_settings("winnow", str(ETC / "winnow" / "sharded.conf"), env=_env(tmp_path))
    assert shard_of(cfg, 0) == 0 and shard_of(cfg, 3) == 2
    assert input_bindings(cfg, 2) == (("xwinnow02", "v02.post.#"),)
    single = load_settings("winnow", str(ETC / "winnow" / "radar.conf"), env=_env(tmp_path))
    assert shard_of(single, 1) is None
    assert input_bindings(single, None) == (("xwinnow", "v02.post.#"),)
    assert single.get("suppress_duplicates") == 1200


def test_exchange_split_shards_a_single_winnow_instance(tmp_path: Path) -> None:
    radar = str(ETC / "winnow" / "radar.conf")
    split = load_settings("winnow", radar, [("exchange_split", "on")], env=_env(tmp_path))
    assert shard_of(split, 1) == 0
    assert input_bindings(split, 0) == (("xwinnow00", "v02.post.#"),)


def test_a_winnow_without_an_input_exchange_does_not_start(tmp_path: Path) -> None:
    conf = tmp_path / "noin.conf"
    conf.write_text("broker amqp://u@localhost/\npost_exchange xpublic\n")
    with pytest.raises(ConfigError, match="exchange"):
        load_settings("winnow", str(conf), env=_env(tmp_path))


def test_a_winnow_without_a_post_exchange_or_with_caching_off_does_not_start(
    tmp_path: Path,
) -> None:
    for name, body, why in [
        ("nopost", "exchange xwinnow\n", "post_exchange"),
        ("nocache", "exchange xwinnow\npost_exchange xp\ncaching off\n", "suppress_dup"),
    ]:
        conf = tmp_path / f"{name}.conf"
        conf.write_text("broker amqp://u@localhost/\n" + body)
        cfg = load_settings("winnow", str(conf), env=_env(tmp_path))
        with pytest.raises(ConfigError, match=why):
            WinnowComponent().declare(cfg)


def test_post_exchange_split_spreads_posts_by_checksum(tmp_path: Path) -> None:
    from sarra.flow.posting import NoticeBuilder, PostSettings

    conf = tmp_path / "split.conf"
    conf.write_text("post_broker amqp://u@localhost/\npost_base_url http://h/\n")
    given = [("post_exchange_split", "4")]
    cfg = load_settings("post", str(conf), given, env=_env(tmp_path))
    builder = NoticeBuilder(PostSettings.from_config(cfg, "u", "localhost"))
    seen = set()
    for i in range(16):
        n = _notice(f"f{i}.txt", f"content {i}")
        total = sum(n.checksum.wire().encode("ascii"))
        exchange = builder.wire(dataclasses.replace(n, exchange="xs_u")).exchange
        assert exchange == f"xs_u{total % 4:02d}"
        seen.add(exchange)
    assert len(seen) > 1


def test_a_winnow_whose_post_broker_is_unreachable_stops_promptly_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SR_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("SR_STATE_DIR", str(tmp_path / "state"))
    conf = tmp_path / "away.conf"
    conf.write_text(
        "broker amqp://u:p@in.example/\nexchange xwinnow\n"
        "post_broker amqp://u:p@out.example/\npost_exchange xpublic\n"
    )
    cfg = load_settings("winnow", str(conf), env=_env(tmp_path))
    feeds, posts = MemoryBroker(), MemoryBroker()
    posts.refuse_connects(1_000_000)
    labels: list[str] = []

    def factory(url: BrokerUrl, s: Settings, label: str) -> Broker:
        labels.append(label)
        return MemorySession(posts if url.host == "out.example" else feeds, url, name=label)

    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            WinnowComponent(factory).run(cfg, 0, stop)
        except BaseException as e:  # surfaced below
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while posts._refuse_connects > 1_000_000 - 2:  # in the backoff after a second refusal
        assert time.monotonic() < deadline, "the post broker was never tried twice"
        time.sleep(0.01)
    asked = time.monotonic()
    stop.set()
    thread.join(10)
    assert not thread.is_alive(), "the winnow did not stop while its post broker was away"
    assert time.monotonic() - asked < 3
    assert errors == []
    assert any(label.endswith("(post)") for label in labels)
    assert "q_u.sr_winnow.away.journal00" not in posts.queues  # nothing replayed or posted
    assert feeds.queues == {}  # the input was never consumed
    assert posts.published == [] and feeds.published == []


# -- post_format v03 reaches every publisher ---------------------------------------------


def test_the_winnow_forwards_in_v03_when_it_posts_v03() -> None:
    import json

    post = _PostDouble()
    winnower = Winnower(WinnowCache(None, ttl=1200), post, "xout", post_format="v03")  # type: ignore[arg-type]
    item = WorkItem(notice=_notice("a/f1", "one", x_extra="kept"))
    winnower.select(item)
    winnower.before_settle()
    (wire,) = post.published
    assert wire.content_type == "application/json" and dict(wire.headers) == {}
    assert wire.routing_key == "v03.a" and wire.exchange == "xout"
    body = json.loads(wire.body)
    assert body["x_extra"] == "kept" and body["identity"]["method"] == "md5"
    assert v02.decode("xout", wire.routing_key, wire.body, None, wire.content_type) == (
        dataclasses.replace(item.notice, exchange="xout", topic="v02.post.a")
    )


def test_post_format_reaches_the_sender_announce_the_poster_and_the_republisher(
    tmp_path: Path,
) -> None:
    from sarra.flow.posting import PostSettings
    from sarra.flow.republish import RepublishSettings

    env = _env(tmp_path)
    cfg = load_settings("sender", str(ETC / "sender" / "to_partner.conf"), env=env)
    assert send_settings(cfg).announce.post_format == "v02"  # type: ignore[union-attr]
    cfg = load_settings(
        "sender", str(ETC / "sender" / "to_partner.conf"), [("post_format", "v03")], env=env
    )
    assert send_settings(cfg).announce.post_format == "v03"  # type: ignore[union-attr]
    post = load_settings(
        "post",
        None,
        [("post_broker", "amqp://u@h/"), ("post_base_url", "http://h/"), ("postFormat", "v03")],
        env=env,
    )
    settings = PostSettings.from_config(post, "u", "h")
    assert settings.post_format == "v03"
    wire = v02.publish_wire(_notice("a/b/c"), "xs_u", settings)
    assert wire.content_type == "application/json" and wire.routing_key == "v03.a.b"
    sarra = load_settings(
        "sarra",
        None,
        [("post_base_url", "http://h/"), ("post_base_dir", "/srv"), ("post_format", "v03")],
        env=env,
    )
    assert RepublishSettings.from_config(sarra).post_format == "v03"
