"""accept/reject in sr_post and sr_watch configurations: a rejected file is not posted.

sr2 and sr3 both apply the masks when posting (``reject .*\\.tmp$`` in a watch keeps files
being written from being announced); sarra matches the notice's URL, as its consumers do.
"""

from __future__ import annotations

from pathlib import Path

from sarra.broker.memory import MemoryBroker, MemorySession
from sarra.config.settings import load_settings
from sarra.flow.posting import NoticeBuilder, PostSettings, Publisher


def _publisher(tmp_path: Path, masks: str) -> tuple[Publisher, MemoryBroker]:
    conf = tmp_path / "masks.conf"
    conf.write_text(
        f"post_broker amqp://u@localhost/\npost_base_url http://h/\n"
        f"post_base_dir {tmp_path}\n{masks}"
    )
    env = {"SR_CONFIG_DIR": str(tmp_path / "c"), "SR_STATE_DIR": str(tmp_path / "s")}
    cfg = load_settings("watch", str(conf), [], env=env)
    builder = NoticeBuilder(PostSettings.from_config(cfg, "u", "localhost"))
    broker = MemoryBroker()
    session = MemorySession(broker, name="poster")
    session.connect()
    session.declare_exchange("xs_u")
    return Publisher(session, builder), broker


def _post(publisher: Publisher, tmp_path: Path, names: list[str]) -> list[str]:
    for name in names:
        path = tmp_path / name
        path.write_text(name)
        publisher.add(publisher.builder.file_notices(str(path)), item=str(path))
    publisher.flush()
    return publisher.pending_paths()


def test_rejected_files_are_not_posted_and_are_counted(tmp_path: Path) -> None:
    publisher, broker = _publisher(tmp_path, "reject .*\\.tmp$\naccept .*\n")
    _post(publisher, tmp_path, ["a.dat", "b.tmp", "c.dat"])
    posted = [m.body.decode().split()[-1] for m in broker.published]
    assert posted == ["/a.dat", "/c.dat"]
    assert publisher.rejected == 1


def test_accept_unmatch_off_posts_only_what_is_accepted(tmp_path: Path) -> None:
    publisher, broker = _publisher(tmp_path, "accept_unmatch off\naccept .*\\.xml$\n")
    _post(publisher, tmp_path, ["a.xml", "b.txt"])
    assert [m.body.decode().split()[-1] for m in broker.published] == ["/a.xml"]


def test_without_masks_everything_is_posted(tmp_path: Path) -> None:
    publisher, broker = _publisher(tmp_path, "")
    _post(publisher, tmp_path, ["a.tmp", "b.txt"])
    assert len(broker.published) == 2 and publisher.rejected == 0


def test_without_masks_and_accept_unmatch_off_nothing_is_posted(tmp_path: Path) -> None:
    publisher, broker = _publisher(tmp_path, "accept_unmatch off\nlog_reject on\n")
    _post(publisher, tmp_path, ["a.tmp", "b.txt"])
    assert broker.published == [] and publisher.rejected == 2
