"""The throwaway FTP/FTPS server process of the test suite (run by tests/servers/ftpd.py).

A pyftpdlib server on 127.0.0.1 with one user (read/write under ``--root``). ``--cert`` and
``--key`` make it FTPS (explicit TLS required on the control and the data connections);
``--disable REST,MLSD`` makes it answer 500 to those commands (older servers); ``--hostile
NAME`` makes a listing of any directory named NAME answer crafted lines whose names try to
escape (``..``, ``a/b``, absolute paths) beside one good name.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import ClassVar

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer

HOSTILE_MLSD = (
    b"type=cdir;modify=20260101000000; .\r\n"
    b"type=pdir;modify=20260101000000; ..\r\n"
    b"type=file;size=7;modify=20260102030405; ..\r\n"
    b"type=file;size=7;modify=20260102030405; ../../etc/passwd\r\n"
    b"type=file;size=7;modify=20260102030405; a/b\r\n"
    b"type=file;size=7;modify=20260102030405; /etc/shadow\r\n"
    b"type=file;size=5;modify=20260102030405; good.txt\r\n"
)
HOSTILE_LIST = (
    b"-rw-r--r--   1 u g        7 Jan  2  2026 ..\r\n"
    b"-rw-r--r--   1 u g        7 Jan  2  2026 ../../etc/passwd\r\n"
    b"-rw-r--r--   1 u g        7 Jan  2  2026 a/b\r\n"
    b"-rw-r--r--   1 u g        5 Jan  2  2026 good.txt\r\n"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--disable", default="")
    parser.add_argument("--hostile", default="")
    args = parser.parse_args()
    with open(args.password_file) as f:
        password = f.read().strip()
    authorizer = DummyAuthorizer()
    authorizer.add_user(args.user, password, args.root, perm="elradfmwMT")
    base: type[FTPHandler] = TLS_FTPHandler if args.cert else FTPHandler
    disabled = {c.strip().upper() for c in args.disable.split(",") if c.strip()}
    hostile = args.hostile

    class Handler(base):  # type: ignore[valid-type, misc]
        proto_cmds: ClassVar[dict[str, object]] = {
            k: v for k, v in base.proto_cmds.items() if k not in disabled
        }
        auth_failed_timeout = 0

        def ftp_MLSD(self, path: str) -> str | None:
            if hostile and os.path.basename(path.rstrip("/")) == hostile:
                self.push_dtp_data(HOSTILE_MLSD, isproducer=False, cmd="MLSD")
                return path
            return super().ftp_MLSD(path)

        def ftp_LIST(self, path: str) -> str | None:
            if hostile and os.path.basename(path.rstrip("/")) == hostile:
                self.push_dtp_data(HOSTILE_LIST, isproducer=False, cmd="LIST")
                return path
            return super().ftp_LIST(path)

    Handler.authorizer = authorizer
    if args.cert:
        Handler.certfile = args.cert
        Handler.keyfile = args.key
        Handler.tls_control_required = True
        Handler.tls_data_required = True
    logging.basicConfig(level=logging.INFO)
    server = FTPServer(("127.0.0.1", args.port), Handler)
    server.max_cons = 256
    server.serve_forever()


if __name__ == "__main__":
    main()
