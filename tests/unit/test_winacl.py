"""The Windows credentials-file rule (who may read it), as a pure function of the ACL."""

from __future__ import annotations

from sarra.config.winacl import Ace, fix_command, readers_besides_owner

ME = "S-1-5-21-1-2-3-1001"
READ, FULL, WRITE_ONLY = 0x120089, 0x1F01FF, 0x000116


def test_only_the_user_and_the_system_accounts_is_fine() -> None:
    aces = [Ace(0, ME, FULL), Ace(0, "S-1-5-18", FULL), Ace(0, "S-1-5-32-544", FULL)]
    assert readers_besides_owner(aces, ME) == []


def test_users_everyone_or_another_account_reading_is_reported() -> None:
    aces = [
        Ace(0, ME, FULL),
        Ace(0, "S-1-5-32-545", READ),  # BUILTIN\\Users: the usual inherited entry
        Ace(0, "S-1-1-0", 0x80000000),  # Everyone: GENERIC_READ
        Ace(0, "S-1-5-21-1-2-3-1002", READ),
        Ace(0, "S-1-5-32-545", READ),
    ]
    assert readers_besides_owner(aces, ME) == ["S-1-5-32-545", "S-1-1-0", "S-1-5-21-1-2-3-1002"]


def test_deny_entries_and_entries_without_read_access_do_not_count() -> None:
    aces = [Ace(0, ME, FULL), Ace(1, "S-1-1-0", READ), Ace(0, "S-1-5-32-545", WRITE_ONLY)]
    assert readers_besides_owner(aces, ME) == []


def test_a_null_dacl_is_open_to_everyone() -> None:
    assert readers_besides_owner(None, ME) == ["S-1-1-0"]


def test_the_fix_is_an_icacls_command_for_that_file() -> None:
    cmd = fix_command("C:\\Users\\me\\AppData\\Local\\sarra\\credentials.conf")
    assert cmd.startswith('icacls "C:\\Users\\me\\AppData\\Local\\sarra\\credentials.conf"')
    assert "/inheritance:r" in cmd and "/grant:r" in cmd
