"""Realistic sr2 and sr3 configuration files (tests/configs/) load with the settings they ask
for, or are refused with file, line and reason; ``convert`` turns each into a file that loads
(issue 11, item 7)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from sarra.config import load_config
from sarra.config.convert import convert_text
from sarra.config.settings import Settings
from sarra.errors import ConfigError

CORPUS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*.conf"))
DD = "amqps://anonymous@dd.weather.gc.ca/"
HPFX = "amqps://anonymous@hpfx.collab.science.gc.ca/"

#: file -> settings it produces (``routing_keys``: the queue bindings), or the refusal (regex)
EXPECTED: dict[str, dict[str, Any] | str] = {
    "subscribe/v2_dd_swob.conf": {
        "broker": DD, "exchange": "xpublic", "expire": 86400.0, "instances": 2,
        "routing_keys": ["v02.post.observations.swob-ml.#"], "directory": "/data/swob",
        "mirror": True, "accept_unmatch": False, "inflight": ".tmp",
    },
    "subscribe/v2_dd_citypage.conf": {
        "routing_keys": ["v02.post.citypage_weather.xml.ON.#"], "mirror": False,
        "loglevel": "warning", "plugins": {"on_file": ("sarra.plugins.file_log",)},
        "masks": [(".*/ON/s0000.*_e\\.xml", True), (".*", False)],
    },
    "subscribe/v2_dd_radar.conf": {
        "routing_keys": ["v02.post.radar.CAPPI.GIF.#", "v02.post.radar.PRECIPET.GIF.#"],
        "strip": 3, "suppress_duplicates": 600.0,
        "plugins": {"on_message": ("sarra.plugins.msg_log",)},
    },
    "subscribe/v2_hpfx_gdps_delay.conf": {
        "broker": HPFX, "msg_delay": 60.0, "transfer_threads": 8, "timeout": 600.0,
        "plugins": {"plugin": ("sarra.plugins.msg_delay",)},
        "routing_keys": ["v02.post.*.WXO-DD.model_gem_global.15km.grib2.lat_lon.00.#"],
    },
    "subscribe/v2_dd_bulletins_whatfn.conf": {
        "plugins": {"on_message": ("sarra.plugins.msg_rename_whatfn",)},
        "directory": "/data/bulletins",
    },
    "subscribe/v2_dd_notify_only.conf": {
        "notify_only": True, "report_back": False,
        "plugins": {"on_message": ("sarra.plugins.msg_log",)},
    },
    "subscribe/v2_dd_renamer.conf": {
        "plugins": {
            "on_message": ("sarra.plugins.msg_renamer",),
            "on_file": ("sarra.plugins.file_log",),
        },
    },
    "subscribe/v2_dd_fdelay_rxpipe.conf": {
        "msg_fdelay": 120.0, "file_rxpipe_name": "/var/run/sarra/swob_rxpipe",
        "plugins": {
            "on_message": ("sarra.plugins.msg_fdelay",),
            "on_file": ("sarra.plugins.file_rxpipe",),
        },
    },
    "subscribe/v2_dd_total.conf":
        r"v2_dd_total\.conf:4: option 'on_message': sr2 plugin 'msg_total' is not available in "
        r"sarra: sarra logs the outcome counts",
    "subscribe/v2_dd_accel_wget.conf":
        r"v2_dd_accel_wget\.conf:4: option 'plugin': sr2 plugin 'accel_wget' is not available "
        r"in sarra: sarra downloads http, https, sftp, ftp and ftps itself",
    "subscribe/v2_dd_hb_memory.conf":
        r"v2_dd_hb_memory\.conf:4: option 'plugin': sr2 plugin 'hb_memory' is not available in "
        r"sarra: sarra does not restart an instance whose memory grows",
    "sender/v2_to_remote_sftp.conf": {
        "exchange": "xs_tsource_output", "base_dir": "/var/data/outgoing",
        "destination": "sftp://partner@remote.example.com/incoming", "mirror": False,
        "post_exchange": "xs_tsource_delivered", "routing_keys": ["v02.post.#"],
        "accept_unmatch": False,
    },
    "watch/v2_outgoing.conf": {
        "post_exchange": "xs_tsource_output", "post_base_dir": "/var/data",
        "path": ("/var/data/outgoing",), "events": "create|modify", "sum": "s",
        "to_clusters": "localhost",
    },
    "post/v2_one_shot.conf": {
        "post_exchange": "xs_tsource", "post_base_url": "http://localhost/",
        "to_clusters": "ALL", "post_topic_prefix": "v02.post",
    },
    "sarra/v2_dd_feed.conf": {
        "instances": 4, "post_exchange": "xpublic", "suppress_duplicates": 600.0,
        "source_from_exchange": False, "mirror": True, "post_base_dir": "/var/www/html",
    },
    "winnow/v2_winnow.conf": {
        "exchange": "xwinnow", "post_exchange": "xpublic", "suppress_duplicates": 1200.0,
        "cache_basis": "path", "routing_keys": ["v02.post.#"],
    },
    "subscribe/sr3_dd_swob.conf": {
        "topic_prefix": "v02.post", "suppress_duplicates": 300.0, "cache_basis": "name",
        "loglevel": "info", "accept_unmatch": False,
        "plugins": {"plugin": ("sarra.plugins.log",)},
    },
    "subscribe/sr3_hpfx_v03.conf": {
        "routing_keys": ["v03.*.WXO-DD.citypage_weather.#"],
        "queue_name": "q_anonymous.sr_subscribe.citypage.example", "preserve_time": False,
        "chmod": 0o644, "chmod_dir": 0o755,
    },
    "subscribe/sr3_flowcb_paths.conf": {
        "plugins": {"plugin": ("sarra.plugins.msg_rename_whatfn", "sarra.plugins.msg_fdelay")},
        "msg_fdelay": 30.0,
    },
    "subscribe/sr3_nodupe_callback.conf":
        r"sr3_nodupe_callback\.conf:4: option 'callback': sr3 plugin 'nodupe' is not available "
        r"in sarra: duplicate suppression is built in",
    "subscribe/sr3_inline.conf":
        r"sr3_inline\.conf:5: option 'inlineByteMax': unknown option",
    "watch/sr3_watch_identity.conf": {
        "sum": "z,s", "blocksize": 100_000_000, "events": "create,modify",
        "path": ("/var/data/large",),
    },
    "subscribe/v2_dd_include.conf": {
        "broker": DD, "exchange": "xpublic", "expire": 86400.0,
        "routing_keys": ["v02.post.alerts.cap.#"], "masks": [(".*\\.cap$", True), (".*", False)],
    },
    "report/v2_report.conf": {
        "exchange": "xs_tsource", "routing_keys": ["v02.report.#"], "report_back": False,
        "plugins": {"on_message": ("sarra.plugins.msg_log",)},
    },
    "post/sr3_post.conf": {
        "sum": "d", "blocksize": 50 * 1024**2, "post_base_url": "http://localhost/",
        "post_topic_prefix": "v02.post",
    },
    "sarra/v2_pump_headers.conf": {
        "headers_add": {"flow": "hydro"}, "to_clusters": "ddsr,hpfx", "cluster": "localpump",
        "post_exchange": "xpublic",
    },
    "subscribe/sr3_rate_limited.conf": {
        "byte_rate_max": 500_000, "message_rate_max": 10.0,
        "routing_keys": ["v02.post.model_gem_regional.#"],
    },
    "subscribe/v2_dd_kbytes_ps.conf": {"kbytes_ps": 200, "byte_rate_max": 0},
    "sender/sr3_sender_refused.conf":
        r"sr3_sender_refused\.conf:6: option 'callback': sr3 plugin 'retry' is not available in "
        r"sarra: the disk retry queue is built in",
    "subscribe/sr3_baseurl.conf":
        r"sr3_baseurl\.conf:3: option 'baseUrl': not supported by sarra: sr3 reads no baseUrl",
    "watch/sr3_watch.conf": {
        "post_topic_prefix": "v02.post", "post_format": "v02",
        "post_base_url": "sftp://tsource@localhost/", "post_base_dir": "/var/data",
        "events": "create,modify,delete", "log_reject": True,
    },
    "sender/sr3_sender.conf": {
        "base_dir": "/var/data/outgoing", "destination": "sftp://partner@remote.example.com/",
        "post_base_url": "sftp://partner@remote.example.com/", "exchange": "xs_tsource",
    },
    "sarra/sr3_pump.conf": {
        "source_from_exchange": True, "suppress_duplicates": 300.0,
        "post_topic_prefix": "v02.post", "post_base_url": "http://localhost/",
        "routing_keys": ["v02.post.#"],
    },
    "sarra/sr3_pump_v03.conf": {"post_format": "v03", "post_base_url": "http://localhost/"},
}  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "SR_CONFIG_DIR": str(tmp_path / "config"),
        "SR_STATE_DIR": str(tmp_path / "state"),
        "HOME": str(tmp_path),
    }


def _actual(s: Settings, key: str) -> Any:
    if key == "routing_keys":
        return [b.routing_key for b in s.bindings]
    if key == "plugins":
        return dict(s.plugins)
    if key == "headers_add":
        return dict(s.headers_add)
    if key == "masks":
        return [(m.pattern, m.accept) for m in s.masks]
    return getattr(s, key)


def test_the_corpus_is_large_enough_and_every_file_has_an_expectation() -> None:
    assert sorted(EXPECTED) == FILES
    assert len(FILES) >= 30
    assert {f.split("/")[1][:3] for f in FILES} == {"v2_", "sr3"}


@pytest.mark.parametrize("name", FILES)
def test_a_corpus_file_loads_as_expected(name: str, env: dict[str, str]) -> None:
    component = name.split("/")[0]
    expected = EXPECTED[name]
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            load_config(component, str(CORPUS / name), env=env)
        return
    s = Settings.from_config(load_config(component, str(CORPUS / name), env=env))
    assert {k: _actual(s, k) for k in expected} == expected


@pytest.mark.parametrize("name", FILES)
def test_convert_gives_a_file_that_loads(name: str, env: dict[str, str], tmp_path: Path):
    component = name.split("/")[0]
    converted = convert_text(component, (CORPUS / name).read_text(encoding="utf-8"))
    out = tmp_path / "config" / component / Path(name).name
    out.parent.mkdir(parents=True)
    for include in (CORPUS / component).glob("*.inc"):  # converted as well
        (out.parent / include.name).write_text(
            convert_text(component, include.read_text(encoding="utf-8")), encoding="utf-8"
        )
    out.write_text(converted, encoding="utf-8")
    cfg = load_config(component, str(out), env=env)
    expected = EXPECTED[name]
    if isinstance(expected, str):  # the refused line is kept as a comment after its reason
        reason = re.sub(r"^.*?conf:(\d+): ", "", expected)
        number = int(re.match(r"^.*?conf:(\d+): ", expected).group(1))  # type: ignore[union-attr]
        line = (CORPUS / name).read_text(encoding="utf-8").splitlines()[number - 1]
        assert re.search(f"^# sarra: {reason}.*\n# {re.escape(line)}$", converted, re.M)
    else:
        original = Settings.from_config(load_config(component, str(CORPUS / name), env=env))
        assert Settings.from_config(cfg).plugins == original.plugins
        assert [b.routing_key for b in Settings.from_config(cfg).bindings] == [
            b.routing_key for b in original.bindings
        ]
