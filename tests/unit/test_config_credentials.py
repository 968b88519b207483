"""credentials.conf parsing, lookup, file-mode refusal, masking, broker URLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sarra.config.credentials import CredentialStore, parse_url, to_broker_url
from sarra.errors import ConfigError, CredentialsError

LINES = """\
# pump accounts
amqp://bunnymaster:p/a?s@s#1@localhost/
amqps://tsub:Sub%2FPw@broker.example.com/
amqp://tsource:src@localhost:5673/ops
sftp://alice:pw@files.example.com ssh_keyfile=/home/alice/.ssh/id_rsa, passive
ftp://anonymous:anonymous@localhost:2121/ active, binary, tls, prot_p
https://api.example.com/ bearer_token=tok-123
"""


def store_file(tmp_path: Path, text: str = LINES, mode: int = 0o600) -> Path:
    path = tmp_path / "credentials.conf"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_passwords_with_slash_question_mark_and_at_are_parsed(tmp_path):
    store = CredentialStore.load(store_file(tmp_path))
    credential = store.lookup("amqp://bunnymaster@localhost/")
    assert credential.password == "p/a?s@s#1"
    assert credential.url.host == "localhost"


def test_percent_escapes_in_a_password_are_decoded(tmp_path):
    store = CredentialStore.load(store_file(tmp_path))
    assert store.lookup("amqps://tsub@broker.example.com/").password == "Sub/Pw"


def test_options_after_the_url_are_read(tmp_path):
    store = CredentialStore.load(store_file(tmp_path))
    sftp = store.lookup("sftp://alice@files.example.com/some/dir")
    assert sftp.ssh_keyfile == "/home/alice/.ssh/id_rsa" and sftp.passive
    ftp = store.lookup("ftp://anonymous@localhost:2121/")
    assert (ftp.passive, ftp.binary, ftp.tls, ftp.prot_p) == (False, True, True, True)
    assert store.lookup("https://api.example.com/").bearer_token == "tok-123"


def test_ascii_is_refused_with_file_and_line(tmp_path):
    # transfers are always binary: sr2's text mode would be silently ignored otherwise
    path = store_file(tmp_path, "amqp://a:b@h/\nftp://u:p@h/ passive, ascii\n")
    with pytest.raises(CredentialsError) as caught:
        CredentialStore.load(path)
    assert f"{path}:2" in str(caught.value) and "ascii" in str(caught.value)
    assert "binary" in str(caught.value)


def test_lookup_matches_scheme_host_port_user_and_amqp_vhost(tmp_path):
    store = CredentialStore.load(store_file(tmp_path))
    assert store.lookup("amqp://tsource@localhost:5673/ops").password == "src"
    assert store.find("amqp://tsource@localhost:5673/") is None  # other vhost
    assert store.find("amqp://tsource@localhost/ops") is None  # other port
    assert store.find("amqp://nobody@localhost/") is None  # other user
    assert store.lookup("amqp://localhost:5672").user == "bunnymaster"  # no user: any user
    assert store.lookup("sftp://alice@files.example.com:22/x").password == "pw"  # default port


def test_a_missing_credential_is_an_error_without_secrets(tmp_path):
    store = CredentialStore.load(store_file(tmp_path))
    with pytest.raises(CredentialsError, match="no credentials for sftp://bob@x"):
        store.lookup("sftp://bob@x/")
    with pytest.raises(CredentialsError) as caught:
        store.lookup("sftp://bob:hunter2@x/")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_file_open_to_group_or_others_is_refused_with_the_fix(tmp_path, mode):
    path = store_file(tmp_path, mode=mode)
    with pytest.raises(CredentialsError) as caught:
        CredentialStore.load(path)
    assert f"chmod 600 {path}" in str(caught.value)


def test_a_missing_file_gives_an_empty_store(tmp_path):
    assert len(CredentialStore.load(tmp_path / "absent.conf")) == 0


def test_a_bad_option_names_file_and_line(tmp_path):
    path = store_file(tmp_path, "amqp://u:p@h/\nsftp://a:b@c bogus\n")
    with pytest.raises(CredentialsError) as caught:
        CredentialStore.load(path)
    assert (caught.value.path, caught.value.line) == (str(path), 2)


def test_secrets_never_appear_in_repr_or_str(tmp_path):
    store = CredentialStore.load(store_file(tmp_path))
    for url in ("amqp://bunnymaster@localhost/", "https://api.example.com/"):
        credential = store.lookup(url)
        for text in (repr(credential), str(credential), repr(credential.url), str(credential.url)):
            assert "p/a?s@s#1" not in text and "tok-123" not in text
    assert "<secret>" in repr(store.lookup("amqp://bunnymaster@localhost/"))
    broker = to_broker_url("amqp://bunnymaster@localhost/", store)
    assert "p/a?s" not in repr(broker) and "p/a?s" not in str(broker)


def test_broker_urls_follow_the_vhost_port_and_tls_rules(tmp_path):
    store = CredentialStore.load(store_file(tmp_path))
    plain = to_broker_url("amqp://bunnymaster@localhost/", store)
    assert (plain.host, plain.port, plain.vhost, plain.tls) == ("localhost", 5672, "/", False)
    assert plain.password == "p/a?s@s#1"
    assert to_broker_url("amqp://bunnymaster@localhost", store).vhost == "/"
    tls = to_broker_url("amqps://tsub@broker.example.com/", store)
    assert (tls.port, tls.tls, tls.password) == (5671, True, "Sub/Pw")
    vhost = to_broker_url("amqp://tsource@localhost:5673/ops", store)
    assert (vhost.port, vhost.vhost) == (5673, "ops")
    decoded = to_broker_url("amqp://anonymous@h/%2Fx", CredentialStore())
    assert decoded.vhost == "/x"
    anon = to_broker_url("amqps://dd.weather.gc.ca/", CredentialStore())
    assert (anon.user, anon.password) == ("anonymous", "anonymous")


def test_a_broker_user_without_password_is_an_error(tmp_path):
    with pytest.raises(CredentialsError, match="no password for amqp://who@h"):
        to_broker_url("amqp://who@h/", CredentialStore.load(store_file(tmp_path)))
    with pytest.raises(ConfigError, match="amqp"):
        to_broker_url("http://h/", CredentialStore())


def test_a_password_written_in_the_config_url_is_the_last_resort(tmp_path):
    assert to_broker_url("amqp://who:inline@h/", CredentialStore()).password == "inline"


def test_parse_url_handles_ipv6_and_rejects_bad_ports():
    url = parse_url("sftp://u@[::1]:2222/path")
    assert (url.host, url.port, url.path) == ("[::1]", 2222, "/path")
    with pytest.raises(ConfigError):
        parse_url("amqp://h:port/")
    with pytest.raises(ConfigError):
        parse_url("no-scheme")


def test_the_example_file_loads_with_its_ftp_lines() -> None:
    example = Path(__file__).parents[2] / "etc" / "credentials.conf.example"
    store = CredentialStore.load(example, check_mode=False)
    assert store.lookup("ftp://anonymous@ftp.example.com/").passive
    ftps = store.lookup("ftps://feeder@files.example.com:2121/")
    assert not ftps.passive and ftps.password == "secret"


CLUSTER_LINES = """\
amqp://feeder:pw-one@node1:5672/
amqp://feeder:pw-two@node2:5673/
amqp://feeder:pw-three@node3/
"""


def test_a_broker_url_may_name_several_nodes_as_libpq_does():
    url = parse_url("amqp://feeder@Node1:5672,node2:5673,[::1]:5674/ops")
    assert (url.host, url.port, url.path) == ("node1", 5672, "/ops")
    assert url.more_hosts == (("node2", 5673), ("[::1]", 5674))
    assert [(n.host, n.port, n.path, n.user) for n in url.nodes()] == [
        ("node1", 5672, "/ops", "feeder"),
        ("node2", 5673, "/ops", "feeder"),
        ("[::1]", 5674, "/ops", "feeder"),
    ]
    assert url.without_password() == "amqp://feeder@node1:5672,node2:5673,[::1]:5674/ops"
    assert parse_url("amqp://h1/").nodes() == (parse_url("amqp://h1/"),)


@pytest.mark.parametrize(
    "text",
    ["sftp://u@h1,h2/x", "mqtt://u@h1,h2/", "amqp://u@h1,,h3/", "amqp://u@h1,h2:port/"],
)
def test_several_hosts_are_refused_outside_amqp_and_when_malformed(text):
    with pytest.raises(ConfigError):
        parse_url(text)


def test_each_node_takes_the_password_of_its_own_credentials_line(tmp_path):
    store = CredentialStore.load(store_file(tmp_path, CLUSTER_LINES))
    broker = to_broker_url("amqp://feeder@node1,node2:5673,node3/", store)
    assert (broker.host, broker.port, broker.password) == ("node1", 5672, "pw-one")
    assert [(n.host, n.port, n.password) for n in broker.candidates()] == [
        ("node1", 5672, "pw-one"),
        ("node2", 5673, "pw-two"),
        ("node3", 5672, "pw-three"),
    ]
    assert str(broker) == "amqp://feeder@node1:5672,node2:5673,node3:5672/"
    for secret in ("pw-one", "pw-two", "pw-three"):
        assert secret not in str(broker) and secret not in repr(broker)
    single = to_broker_url("amqp://feeder@node2:5673/", store)
    assert single.nodes == () and single.candidates()[0].password == "pw-two"


def test_a_cluster_node_without_a_credentials_line_is_named(tmp_path):
    store = CredentialStore.load(store_file(tmp_path, CLUSTER_LINES))
    with pytest.raises(CredentialsError, match="no password for amqp://feeder@node4"):
        to_broker_url("amqp://feeder@node1,node4/", store)


def test_a_credentials_line_naming_several_hosts_is_refused_with_its_line(tmp_path):
    path = store_file(tmp_path, "# c\namqp://feeder:pw@node1,node2/\n")
    with pytest.raises(CredentialsError, match="one host per line") as err:
        CredentialStore.load(path)
    assert err.value.line == 2
