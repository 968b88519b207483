"""Mesos resources, roles and attributes as a real master presents them. Pure functions, no I/O.

Facts (apache/mesos ``include/mesos/v1/mesos.proto``, ``src/common/resources.cpp``,
``src/common/roles.cpp``, ``src/common/attributes.cpp``, ``docs/roles.md``):

* **Reservations.** A framework that declares ``RESERVATION_REFINEMENT`` gets the current
  format: ``Resource.reservations`` is a stack of ``ReservationInfo`` (``type`` STATIC or
  DYNAMIC, ``role``, ``principal``, ``labels``); the last entry is the one the resource is
  reserved to; an empty stack is unreserved. Without it the master sends the older format:
  ``Resource.role`` (``"*"`` = unreserved) and ``Resource.reservation`` (present only for a
  dynamic reservation). Both are read here; the scheduler declares the capability.
* An offer allocated to role R (``allocation_info.role``) holds unreserved resources and
  resources reserved to R (or an ancestor of R). Reserved resources are free only for that role,
  and a task must name them exactly as offered (same reservations), or the master answers
  TASK_ERROR: :func:`take` hands out pieces of the offered resources as they were offered.
* **Persistent volumes** are disk resources with ``disk.persistence.id``; they belong to one
  task at a time and are never free space for other tasks.
* **Roles**: ``*`` or a ``/``-separated path of names; no empty name and no leading, trailing
  or doubled ``/``; no component ``.``, ``..`` or ``*``; no component starting with ``-``; no
  whitespace or DEL.
* **Attributes** (agent ``--attributes=rack:1;zone:dmz``): a value is RANGES when written
  ``[a-b,...]``, SET when ``{a,b}``, SCALAR when it is a number, else TEXT. The same parser reads
  the spec's required values, so ``rack = "1"`` matches an agent whose ``rack`` is SCALAR 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_BAD_ROLE_CHARS = set("\t\n\v\f\r \x7f")
SCALARS = ("cpus", "mem", "disk")


def role_error(role: str) -> str | None:
    """Why the master would refuse ``role``, or None when it is valid."""
    if role == "*":
        return None
    if not role:
        return "an empty role name is invalid"
    if role.startswith("/") or role.endswith("/"):
        return f"role {role!r} cannot start or end with '/'"
    if "//" in role:
        return f"role {role!r} cannot contain two adjacent '/'"
    for part in role.split("/"):
        if part in (".", "..", "*"):
            return f"role {role!r}: {part!r} cannot be a role name component"
        if part.startswith("-"):
            return f"role {role!r}: a component cannot start with '-'"
        if _BAD_ROLE_CHARS & set(part):
            return f"role {role!r} contains whitespace or DEL"
    return None


def reserved_role(resource: dict[str, Any]) -> str | None:
    """The role ``resource`` is reserved to (either format), None when unreserved."""
    stack = resource.get("reservations")
    if isinstance(stack, list) and stack:
        return str((stack[-1] or {}).get("role") or "*")
    role = resource.get("role")
    if isinstance(role, str) and role not in ("", "*"):
        return role
    return None


def within(role: str, reservation: str) -> bool:
    """True when resources reserved to ``reservation`` may be used by ``role`` (or a child)."""
    return role == reservation or role.startswith(reservation + "/")


def persistence_id(resource: dict[str, Any]) -> str | None:
    """The persistent volume id of a disk resource, None for plain disk."""
    pid = ((resource.get("disk") or {}).get("persistence") or {}).get("id")
    return str(pid) if pid else None


@dataclass(frozen=True)
class Piece:
    """One offered scalar resource: what it is and the offer's own dict (echoed back)."""

    name: str
    value: float
    reserved: str | None
    volume: str | None
    raw: dict[str, Any]


def pieces(offer: dict[str, Any]) -> list[Piece]:
    """The scalar cpus/mem/disk pieces of an offer usable by its allocation role."""
    role = str((offer.get("allocation_info") or {}).get("role") or "*")
    out = []
    for r in offer.get("resources", []):
        if not isinstance(r, dict) or r.get("type") != "SCALAR" or r.get("name") not in SCALARS:
            continue
        if r.get("revocable") is not None or r.get("shared") is not None:
            continue  # may be taken back / shared: not for a pump worker
        res = reserved_role(r)
        if res is not None and not within(role, res):
            continue  # reserved for another role: never free for this framework's role
        value = float((r.get("scalar") or {}).get("value", 0.0))
        out.append(Piece(str(r["name"]), value, res, persistence_id(r), r))
    return out


def take(
    available: list[Piece], name: str, amount: float, role: str
) -> tuple[list[dict[str, Any]], list[Piece]]:
    """Resource dicts totalling ``amount`` of ``name`` cut from ``available`` (reserved first).

    Returns the dicts for a TaskInfo (each a copy of an offered resource, value cut down) and
    what is left. Volumes are never taken here. Raises ValueError when there is not enough.
    """
    out: list[dict[str, Any]] = []
    left: list[Piece] = []
    need = round(amount, 3)
    # reserved pieces first: that is what the reservation is for
    order = sorted(available, key=lambda p: (p.reserved is None, p.name))
    for p in order:
        if need <= 1e-9 or p.name != name or p.volume is not None:
            left.append(p)
            continue
        used = min(p.value, need)
        d = dict(p.raw)
        d["scalar"] = {"value": round(used, 3)}
        d["allocation_info"] = {"role": role}
        out.append(d)
        need = round(need - used, 3)
        if p.value - used > 1e-9:
            left.append(Piece(p.name, p.value - used, p.reserved, None, {**p.raw}))
    if need > 1e-9:
        raise ValueError(f"not enough {name} in the offers ({amount} wanted)")
    return out, left


# -- attributes -------------------------------------------------------------------------------
def parse_value(text: str) -> tuple[str, Any]:
    """An attribute value written as on an agent's command line: (type, value)."""
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        ranges = []
        for part in t[1:-1].split(","):
            if not part.strip():
                continue
            lo, _, hi = part.strip().partition("-")
            if not lo.strip().isdigit() or not hi.strip().isdigit():
                return "TEXT", text
            ranges.append((int(lo), int(hi)))
        return "RANGES", tuple(sorted(ranges))
    if t.startswith("{") and t.endswith("}"):
        return "SET", frozenset(p.strip() for p in t[1:-1].split(",") if p.strip())
    if _NUMBER.match(t):
        return "SCALAR", round(float(t), 3)  # Mesos keeps scalars to three decimals
    return "TEXT", text


def offered_attribute(attr: dict[str, Any]) -> tuple[str, Any] | None:
    """An offer's attribute (JSON ``Attribute``) as (type, value); None when unreadable."""
    kind = attr.get("type")
    if kind == "TEXT":
        return "TEXT", str((attr.get("text") or {}).get("value", ""))
    if kind == "SCALAR":
        return "SCALAR", round(float((attr.get("scalar") or {}).get("value", 0.0)), 3)
    if kind == "RANGES":
        rs = (attr.get("ranges") or {}).get("range") or []
        return "RANGES", tuple(sorted((int(r["begin"]), int(r["end"])) for r in rs))
    if kind == "SET":
        return "SET", frozenset(str(i) for i in (attr.get("set") or {}).get("item") or [])
    return None


def attribute_matches(wanted: str, offered: tuple[str, Any]) -> bool:
    """Does an agent's attribute satisfy the spec's required value ``wanted``?

    Same type: equal values (TEXT exact, SCALAR to three decimals, RANGES and SET as sets).
    A SCALAR wanted against RANGES offered: the number lies in one of the ranges; against SET or
    TEXT: its text form equals an item / the text. Otherwise no match.
    """
    wkind, wval = parse_value(wanted)
    okind, oval = offered
    if wkind == okind:
        return bool(wval == oval)
    if wkind == "SCALAR" and okind == "RANGES":
        return any(lo <= wval <= hi for lo, hi in oval)
    if okind == "SET":
        return bool(wanted.strip() in oval)
    if okind == "TEXT":
        return bool(wanted.strip() == oval)
    return False
