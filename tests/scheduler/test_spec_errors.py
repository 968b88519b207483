"""Every spec field refuses a bad value with the file, the field and why: never a traceback.

Table-driven over the ``[scheduler]`` settings and the ``[workers.<type>]`` keys; each row is
run through ``sr_scheduler status`` (in process) so that an exception escaping the command
line fails the test as surely as a missing word in the message.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sarra.scheduler import cli

SCHEDULER = {"master": '"http://127.0.0.1:5050"', "user": '"sarra"', "state_dir": '"ST"'}
WORKER = {"config": '"feed"', "count": "1"}
WITH_VOLUME = {"role": '"pump"', "volume": '{ size = 10, path = "state" }'}

# (table, key, TOML value, words the message must hold besides the file and the field)
SCHEDULER_ROWS = [
    ("name", "1", "must be a string, not int"),
    ("name", '""', "is empty"),
    ("name", '"a b"', "letters, digits"),
    ("master", '"ftp://m"', "zk://, http:// or https://"),
    ("master", "[1]", "must be a string"),
    ("user", '""', "is empty"),
    ("user", '"a b"', "user is required"),
    ("state_dir", "7", "must be a string"),
    ("state_dir", '""', "is empty"),
    ("zookeeper", "true", "must be a string"),
    ("election_path", '"sarra/x"', "absolute ZooKeeper path"),
    ("election_path", '"/a//b"', "absolute ZooKeeper path"),
    ("checkpoint", '"yes"', "must be true or false"),
    ("watch_spec", "1", "must be true or false"),
    ("status_listen", '"nonsense"', "host:port"),
    ("status_listen", '""', "is empty"),
    ("on_framework_removed", '"restart"', "must be one of"),
    ("principal", "5", "must be a string"),
    ("secret_file", '"/x"', "needs principal"),
    ("bogus", "1", "unknown keys ['bogus']"),
]
DURATIONS = [
    "failover_timeout", "min_running_seconds", "staging_timeout", "avoid_seconds",
    "refuse_seconds", "heartbeat_misses", "reconcile_interval", "kill_retry_seconds",
    "call_timeout", "zk_session_timeout",
]  # fmt: skip
POSITIVE = {
    "staging_timeout", "heartbeat_misses", "reconcile_interval", "kill_retry_seconds",
    "call_timeout", "zk_session_timeout",
}  # fmt: skip
for key in DURATIONS:
    SCHEDULER_ROWS += [
        (key, '"30s"', "must be an integer or a number, not str '30s'"),
        (key, "true", "must be an integer or a number, not bool"),
        (key, "-1", "must be a"),
        (key, "nan", "must be a finite number"),
        (key, "inf", "must be a finite number"),
        (key, "1e12", "too large"),
    ]
    if key in POSITIVE:
        SCHEDULER_ROWS.append((key, "0", "must be a positive number"))

WORKER_ROWS = [
    ("component", '"subscrbe"', "is not an sr_* daemon"),
    ("component", '""', "is empty"),
    ("config", "3", "must be a string"),
    ("config", '""', "is empty"),
    ("count", "-1", "count must be an integer from 0 to"),
    ("count", "1.5", "count must be an integer, not float"),
    ("count", '"3"', "count must be an integer, not str"),
    ("count", "true", "count must be an integer, not bool"),
    ("count", "100000000", "count must be an integer from 0 to"),
    ("cpus", "0", "must be a positive number"),
    ("cpus", "-0.5", "must be a positive number"),
    ("cpus", '"1"', "must be an integer or a number"),
    ("cpus", "nan", "finite"),
    ("mem", "0", "must be a positive number"),
    ("mem", "inf", "finite"),
    ("disk", "-1", "non-negative"),
    ("command", '""', "is empty"),
    ("command", "[1]", "must be a string"),
    ("uris", '"http://x"', "must be a list"),
    ("uris", '[""]', "non-empty strings"),
    ("uris", "[1]", "non-empty strings"),
    ("env", '"A=1"', "must be a table"),
    ("env", "{ A = [1] }", "env A must be a string or a number"),
    ("env", "{ A = true }", "env A must be a string or a number"),
    ("env", '{ "A=B" = "1" }', "not a valid variable name"),
    ("hostnames", '"h1"', "must be a list"),
    ("hostnames", "[1]", "non-empty strings"),
    ("attributes", '["rack"]', "must be a table"),
    ("attributes", "{ rack = true }", "attribute rack must be text or a number"),
    ("attributes", '{ rack = "" }', "attribute rack is empty"),
    ("attributes", '{ rack = "[1-" }', "not a valid range or set"),
    ("attributes", "{ rack = nan }", "attribute rack must be a finite number"),
    ("role", '"."', "role"),
    ("role", '""', "is empty"),
    ("kill_grace_seconds", "-1", "non-negative"),
    ("kill_grace_seconds", '"10s"', "must be an integer or a number"),
    ("kill_grace_seconds", "1e12", "too large"),
    ("volume", '"10"', "must be a table"),
    ("volume", '{ size = 10, path = "state", mode = "RW" }', "volume has unknown keys"),
    ("volume", '{ size = 0, path = "state" }', "volume size (MB) must be positive"),
    ("volume", '{ size = "10", path = "state" }', "size must be an integer or a number"),
    ("volume", '{ size = 10, path = "/abs" }', "volume path must be a relative path"),
    ("volume", '{ size = 10, path = "../up" }', "volume path must be a relative path"),
    ("bogus", "1", "unknown keys ['bogus']"),
]


def write(tmp_path: Path, sched: dict[str, str], worker: dict[str, str]) -> Path:
    sched = {k: v.replace("ST", str(tmp_path / "st")) for k, v in sched.items()}
    spec = tmp_path / "pump.toml"
    spec.write_text(
        "[scheduler]\n"
        + "".join(f"{k} = {v}\n" for k, v in sched.items())
        + "\n[workers.feed]\n"
        + "".join(f"{k} = {v}\n" for k, v in worker.items())
    )
    return spec


def refused(spec: Path, capsys: pytest.CaptureFixture[str], key: str | None = None) -> str:
    """The message of ``sr_scheduler status`` on ``spec``; with ``key``, it names its line."""
    assert cli.main(["status", str(spec)]) == 2  # a spec error, found before any connection
    err = capsys.readouterr().err
    assert err.startswith(f"sr_scheduler: {spec}") and "Traceback" not in err, err
    if key is not None:
        lines = spec.read_text().splitlines()
        line = next(n for n, t in enumerate(lines, 1) if t.startswith(f"{key} = "))
        assert err.startswith(f"sr_scheduler: {spec}:{line}: "), (line, err)
    return err


@pytest.mark.parametrize(("key", "value", "words"), SCHEDULER_ROWS)
def test_a_bad_scheduler_setting_is_refused_naming_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, words: str
) -> None:
    err = refused(write(tmp_path, {**SCHEDULER, key: value}, WORKER), capsys, key)
    assert "[scheduler]" in err and key in err and words in err, err


@pytest.mark.parametrize(("key", "value", "words"), WORKER_ROWS)
def test_a_bad_worker_value_is_refused_naming_file_type_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, value: str, words: str
) -> None:
    worker = {**WORKER, **(WITH_VOLUME if key == "volume" else {}), key: value}
    err = refused(write(tmp_path, SCHEDULER, worker), capsys, key)
    field = {"attributes": "attribute"}.get(key, "size" if "size must be" in words else key)
    assert "[workers.feed]" in err and field in err and words in err, err


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[scheduler\n", "not valid TOML"),
        ('scheduler = "x"\n', "[scheduler] must be a table"),
        ("[schedular]\nmaster = 1\n", "unknown tables ['schedular']"),
        ('[scheduler]\nmaster = "http://m"\nuser = "u"\n[workers]\nfeed = 1\n', "[workers.feed]"),
        ("[scheduler]\nuser = 'u'\n", "master must be"),
        ('[scheduler]\nmaster = "http://m"\n', "user is required"),
        ('[scheduler]\nmaster = "http://m"\nuser = "u"\n[workers."a b"]\nconfig = "c"\n',
         "worker type names"),
        ('[scheduler]\nmaster = "http://m"\nuser = "u"\n[workers.w]\ncount = 1\n',
         "config (the worker's configuration name) is required"),
    ],
)  # fmt: skip
def test_a_bad_layout_is_refused_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, words: str
) -> None:
    spec = tmp_path / "pump.toml"
    spec.write_text(text)
    assert words in refused(spec, capsys)


def test_a_missing_key_is_reported_at_its_table_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = write(tmp_path, SCHEDULER, {"count": "1"})
    header = spec.read_text().splitlines().index("[workers.feed]") + 1
    err = refused(spec, capsys)
    assert err.startswith(f"sr_scheduler: {spec}:{header}: [workers.feed]: config"), err
