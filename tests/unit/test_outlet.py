"""``outlet``: what sr_post and sr_watch print instead of publishing (sr2's json and url
outlets), and that the broker is left alone. The same against RabbitMQ, through the real
sr_post command: tests/integration/test_post.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.config.settings import Settings, load_settings
from sarra.flow.posting import (
    NoticeBuilder,
    PostSettings,
    PrintingPublisher,
    Publisher,
    make_publisher,
    outlet_line,
)


def _builder(tmp_path: Path, outlet: str, base_url: str) -> tuple[NoticeBuilder, Settings]:
    env = {"SR_CONFIG_DIR": str(tmp_path / "c"), "SR_STATE_DIR": str(tmp_path / "s")}
    given = [
        ("post_broker", "amqp://u@localhost/"),
        ("post_base_url", base_url),
        ("outlet", outlet),
        ("sum", "s"),
    ]
    cfg = load_settings("post", None, given, env=env)
    return NoticeBuilder(PostSettings.from_config(cfg, "u", "localhost")), cfg


@pytest.mark.parametrize("outlet", ["json", "url"])
def test_a_printing_outlet_prints_one_line_per_notice_and_never_connects(
    tmp_path: Path, outlet: str
) -> None:
    data = tmp_path / "d"
    data.mkdir()
    (data / "a b.txt").write_text("hello\n")
    builder, cfg = _builder(tmp_path, outlet, "file:")
    broker = MemoryBroker()
    session = MemorySession(broker)
    out = io.StringIO()
    publisher = make_publisher(cfg, session, builder)
    assert isinstance(publisher, PrintingPublisher)
    publisher.out = out
    publisher.add(builder.file_notices(str(data / "a b.txt")), item="a")
    publisher.flush()
    assert not session.connected and broker.published == []
    assert publisher.items_posted == 1 and publisher.published == 1
    [line] = out.getvalue().splitlines()
    if outlet == "url":
        assert line == f"file:{data}/a%20b.txt"
    else:
        topic, headers, body = json.loads(line)
        assert topic.startswith("v02.post.")
        assert body.split(" ")[1:] == ["file:", f"{data}/a%20b.txt"]
        assert headers["sum"].startswith("s,") and list(headers) == sorted(headers)


def test_outlet_post_publishes(tmp_path: Path) -> None:
    builder, cfg = _builder(tmp_path, "post", "http://h/")
    publisher = make_publisher(cfg, MemorySession(MemoryBroker()), builder)
    assert type(publisher) is Publisher


def test_outlet_line_joins_base_url_and_path_with_one_slash(tmp_path: Path) -> None:
    builder, _ = _builder(tmp_path, "url", "https://h.example/pub/")
    f = tmp_path / "x.txt"
    f.write_text("x")
    [notice] = builder.file_notices(str(f))
    wire = builder.wire(notice)
    assert outlet_line("url", wire) == "https://h.example/pub" + str(f)
    with pytest.raises(ValueError, match="prints nothing"):
        outlet_line("post", wire)
