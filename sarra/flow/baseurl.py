"""Which hosts a notice's baseUrl may make a component fetch from (spec 9.4).

A notice names the server its data is fetched from. Fetching whatever it names lets anyone
who can publish a notice make the component request internal services on their behalf
(server-side request forgery): a broker's management port on 127.0.0.1, a cloud metadata
service on 169.254.169.254, a database on the private network. So the host of a baseUrl is
resolved (every address ``getaddrinfo`` gives, once per host for the life of the guard) and
refused when any address falls in a refused class:

- a republisher (sr_sarra) refuses loopback, link-local and unspecified addresses unless the
  host is its own (broker, post_broker, post_base_url) or the baseUrl matches
  ``base_url_accept``;
- a subscriber also refuses private addresses, unless ``base_url_private on`` or the baseUrl
  matches ``base_url_accept``.

Checking the name is not a guarantee against a resolver that answers differently at fetch
time (DNS rebinding); it stops every notice that plainly names an internal address.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from sarra.errors import PolicyRefused

log = logging.getLogger(__name__)

LOOPBACK = "loopback"
LINK_LOCAL = "link-local"
UNSPECIFIED = "unspecified"
PRIVATE = "private"

#: classes a republisher refuses (its sources are often on private networks)
REPUBLISHER_REFUSED = frozenset({LOOPBACK, LINK_LOCAL, UNSPECIFIED})
#: classes a subscriber refuses unless ``base_url_private`` is on
SUBSCRIBER_REFUSED = REPUBLISHER_REFUSED | {PRIVATE}

Resolver = Callable[[str], Iterable[str]]
"""host -> its addresses (tests replace DNS with a table)."""


def resolve_host(host: str) -> list[str]:
    """The addresses ``host`` resolves to (an unresolvable name: none)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [str(info[4][0]) for info in infos]


def address_class(address: str) -> str | None:
    """The class of an IP address that a baseUrl may be refused for, or None (public, or
    not an address). An IPv4-mapped IPv6 address is classed as its IPv4 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return LOOPBACK
    if ip.is_link_local:
        return LINK_LOCAL
    if ip.is_unspecified:
        return UNSPECIFIED
    if ip.is_private:
        return PRIVATE
    return None


def is_internal(address: str) -> bool:
    """True for loopback, link-local and unspecified addresses (what a republisher refuses)."""
    return address_class(address) in REPUBLISHER_REFUSED


class HostGuard:
    """Refuses baseUrls whose host resolves into one of the ``refused`` address classes.

    ``trusted_hosts`` (lower case) are never checked; ``hint`` says in the refusal which
    option would allow the host. Each host is resolved once; the answer is kept for the life
    of the guard (one component run).
    """

    def __init__(
        self,
        refused: frozenset[str],
        *,
        hint: str,
        trusted_hosts: frozenset[str] = frozenset(),
        resolver: Resolver = resolve_host,
    ) -> None:
        self.refused = refused
        self.hint = hint
        self.trusted_hosts = trusted_hosts
        self.resolver = resolver
        self._verdicts: dict[str, str | None] = {}

    def check(self, base_url: str) -> None:
        """Return when ``base_url`` may be fetched from.

        Raises:
            PolicyRefused: its host is, or resolves to, a refused address (the message names
                the address, its class and the option that would allow it).
        """
        host = (urlsplit(base_url).hostname or "").lower()
        if not host or host in self.trusted_hosts:
            return
        if host in self._verdicts:
            reason = self._verdicts[host]
        else:
            reason = self._reason(host)
            self._verdicts[host] = reason
            if reason is not None:
                log.warning("refusing baseUrls naming %s: %s (%s)", host, reason, self.hint)
        if reason is not None:
            raise PolicyRefused(f"baseUrl host {host}: {reason} ({self.hint})")

    def _reason(self, host: str) -> str | None:
        """Why ``host`` is refused, or None. A literal address is classed as it stands; a
        name is refused when any of its addresses is (a name may resolve to several)."""
        literal = address_class(host.strip("[]"))
        if literal is not None:
            return f"{literal} address" if literal in self.refused else None
        for address in self.resolver(host):
            cls = address_class(address)
            if cls in self.refused:
                return f"resolves to {cls} address {address}"
        return None
