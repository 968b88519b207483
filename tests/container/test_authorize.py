"""The private-data authorizer as the package ships it: sarra-authorize.service, run by systemd
in a booted Debian 12 container, answering the requests nginx would send it (docs/admin.md,
section 10, the steps ``authorize`` and ``authorize-stop``)."""

from __future__ import annotations

import contextlib
import json
import socket
import time

from tests.container.nspawn import Container
from tests.container.test_service import guide_steps, wait_for

UNIT = "sarra-authorize"
#: the shipped unit's address, which nginx's sarra.conf proxies to
PORT = 8091
PASSWORDS = {
    "boss": "boss-pw",
    "feed": "feed-pw",
    "alice": "alice-pw",
    "bob": "bob-pw",
    "carol": "carol-pw",
}
ADMIN = (
    "admin amqp://boss@127.0.0.1/\nfeeder amqp://feed@127.0.0.1/\n"
    "declare source alice\ndeclare subscriber bob carol\n"
)

#: run inside the container: the authorizer's answer to each (user, password) of argv[2:]
ASK = """
import base64, json, sys, urllib.error, urllib.request
port, answers = sys.argv[1], {}
for pair in sys.argv[2:]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_sarra_authorize")
    request.add_header("X-Original-URI", "/private/alice/obs/f.txt")
    if pair != "-":
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answers[pair] = response.status
    except urllib.error.HTTPError as e:
        answers[pair] = e.code
print(json.dumps(answers))
"""


def host_port_free(port: int) -> bool:
    """The container shares the host's loopback: is ``port`` free there?"""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        return True
    return False


class Authorize:
    def __init__(self, box: Container, port: int) -> None:
        self.box = box
        self.port = port
        box.path("/root/ask.py").write_text(ASK)

    def ask(self, *pairs: str) -> dict[str, int]:
        out = self.box.sh(f"python3 /root/ask.py {self.port} {' '.join(pairs)}").stdout
        answers: dict[str, int] = json.loads(out)
        return answers

    def show(self, prop: str) -> str:
        return self.box.sh(f"systemctl show -p {prop} --value {UNIT}").stdout.strip()

    def journal(self) -> str:
        return self.box.sh(f"journalctl -u {UNIT} --no-pager").stdout

    def admin(self, private: str) -> None:
        self.box.sh(
            f"printf '%s' '{ADMIN}declare private {private}\n' > /tmp/admin.conf\n"
            "install -m 0640 -o sarra -g sarra /tmp/admin.conf /etc/sarra/admin.conf"
        )


def test_the_authorizer_service_answers_readers_and_others_and_stops_cleanly(
    container: Container,
) -> None:
    box = container
    steps = guide_steps()
    box.sh(steps["install"])
    box.sh(f"systemd-analyze verify --man=no /lib/systemd/system/{UNIT}.service")
    # installed, neither enabled nor started; without admin.conf it does not even start
    assert box.sh(f"systemctl is-enabled {UNIT}", check=False).stdout.strip() == "disabled"
    assert box.sh(f"systemctl is-active {UNIT}", check=False).stdout.strip() == "inactive"
    box.sh(f"systemctl start {UNIT}")
    auth = Authorize(box, PORT)
    assert auth.show("ConditionResult") == "no"
    assert auth.show("ActiveState") == "inactive"
    box.sh(f"systemctl reset-failed {UNIT} || true")

    # the pump: alice's private files for bob; every user's broker password
    auth.admin("alice:bob")
    lines = "".join(f"amqp://{u}:{pw}@127.0.0.1/\\n" for u, pw in PASSWORDS.items())
    box.sh(f"printf '{lines}' >> /etc/sarra/credentials.conf")
    if not host_port_free(PORT):  # another test holds it on the shared loopback: move, as the
        # guide tells (an override, and proxy_pass to match)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            auth.port = s.getsockname()[1]
        box.sh(
            f"mkdir -p /etc/systemd/system/{UNIT}.service.d\n"
            f"printf '[Service]\\nExecStart=\\nExecStart=/usr/bin/sr_police --loglevel info "
            f"--listen 127.0.0.1:{auth.port} authorize\\n' "
            f"> /etc/systemd/system/{UNIT}.service.d/port.conf\n"
            "systemctl daemon-reload"
        )

    box.sh(steps["authorize"])
    wait_for(lambda: listening(auth.port), 30, f"{UNIT} listening", auth.journal)
    assert box.sh(f"systemctl is-enabled {UNIT}").stdout.strip() == "enabled"
    pid = auth.show("MainPID")
    uid = box.sh("id -u sarra").stdout.strip()
    process_uid = box.sh(f"grep ^Uid: /proc/{pid}/status").stdout.split()[1]
    assert process_uid == uid  # the sarra account, not root

    bob, carol = "bob:bob-pw", "carol:carol-pw"
    answers = auth.ask(bob, carol, "bob:guess", "mallory:x", "-")
    assert answers == {bob: 200, carol: 403, "bob:guess": 401, "mallory:x": 401, "-": 401}
    journal = auth.journal()
    assert "authorizer: listening on 127.0.0.1:" in journal
    assert "200 'bob' reads 'alice'" in journal
    assert "403 'carol' is not a reader of 'alice'" in journal
    assert not any(pw in journal for pw in PASSWORDS.values())
    # carol's refusal is a security event, in the state directory it may write
    events = box.sh("cat /var/lib/sarra/police/events.jsonl").stdout
    assert '"private_refused"' in events and '"carol"' in events
    owner = box.sh("stat -c %U /var/lib/sarra/police/events.jsonl").stdout.strip()
    assert owner == "sarra"

    # carol becomes a reader; systemctl reload re-reads at once, in the same process
    auth.admin("alice:bob,carol")
    box.sh(f"systemctl reload {UNIT}")
    wait_for(lambda: "authorizer: reloaded" in auth.journal(), 30, "reloaded", auth.journal)
    assert auth.ask(carol) == {carol: 200}
    assert auth.show("MainPID") == pid

    # stop: SIGTERM, a clean exit
    box.sh(steps["authorize-stop"])
    assert auth.show("ActiveState") == "inactive"
    assert auth.show("Result") == "success"
    assert auth.show("ExecMainStatus") == "0"
    assert "authorizer: stopped" in auth.journal()
    assert box.processes("sr_police") == []
    assert not listening(auth.port)

    # a broken admin.conf: exit 2, and systemd does not retry what a restart cannot fix
    auth.admin("alice:nobody")
    box.sh(f"systemctl start {UNIT}", check=False)
    wait_for(lambda: auth.show("ActiveState") in ("failed", "inactive"), 30, "failed", auth.journal)
    time.sleep(3)  # longer than RestartSec: a restart would have happened by now
    assert auth.show("ExecMainStatus") == "2"
    assert auth.show("NRestarts") == "0"
    assert "nobody" in auth.journal()
    box.sh(f"systemctl disable {UNIT}")
