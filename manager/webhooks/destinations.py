"""Where the daemon may send a webhook or ask a gate: the destination policy.

A hook's URL is given by whoever writes a policy, so a call must not become a way to reach what the
daemon can reach and they cannot (server-side request forgery):

- http and https only, and never a redirect (a 3xx is the receiver's answer, not a new target);
- the host name is resolved once and the call goes to the address that was checked (a second
  lookup could answer otherwise: DNS rebinding);
- by default every public address is allowed and none of these: link-local (169.254.0.0/16, which
  holds the cloud metadata service, and fe80::/10), unspecified, multicast and reserved addresses,
  loopback and the private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7);
- `VARIANTCTL_WEBHOOK_ALLOW` (comma-separated: `loopback`, `private`, or CIDR blocks such as
  `10.1.0.0/16`) allows what the operator names, loopback or private receivers inside their own
  network. Link-local and metadata addresses are never allowed.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from manager.errors import UserError

ENV_ALLOW = "VARIANTCTL_WEBHOOK_ALLOW"
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
NEVER = (
    ipaddress.ip_network("169.254.0.0/16"),  # link-local, and the cloud metadata service
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),  # EC2's IPv6 metadata service
    ipaddress.ip_network("0.0.0.0/8"),
    ipaddress.ip_network("::/128"),
)


class Refused(Exception):
    """The destination is not one the daemon may call; the message says why."""


@dataclass(frozen=True)
class Allowed:
    """What `VARIANTCTL_WEBHOOK_ALLOW` opens beyond public addresses."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> Allowed:
        networks: list[Network] = []
        for word in (w.strip() for w in (text or "").split(",")):
            if not word:
                continue
            if word == "loopback":
                networks += LOOPBACK
            elif word == "private":
                networks += PRIVATE
            else:
                try:
                    networks.append(ipaddress.ip_network(word, strict=False))
                except ValueError:
                    raise UserError(
                        f"{ENV_ALLOW}: {word!r} is not `loopback`, `private` or a CIDR block"
                    ) from None
        return cls(tuple(networks))

    @classmethod
    def from_env(cls) -> Allowed:
        return cls.parse(os.environ.get(ENV_ALLOW))

    def why_not(self, address: Address) -> str | None:
        """None if the daemon may call `address`, else why not."""
        if any(address in n for n in NEVER) or address.is_link_local:
            return "a link-local or metadata address, never called"
        if address.is_multicast:
            return "not a unicast address"
        if any(address in n for n in self.networks):
            return None
        if address.is_loopback:
            return f"a loopback address (allow it with {ENV_ALLOW}=loopback)"
        if address.is_private or any(address in n for n in PRIVATE):
            return f"a private address (allow it with {ENV_ALLOW}=private or its CIDR block)"
        if address.is_reserved or not address.is_global:
            return f"not a public address (allow it with {ENV_ALLOW} and its CIDR block)"
        return None


@dataclass(frozen=True)
class Destination:
    """A URL checked against the policy: where to connect (the checked address) and what to ask for."""

    scheme: str
    host: str
    port: int
    address: str
    target: str  # path and query


def check(url: str, allowed: Allowed | None = None) -> Destination:
    """Resolve `url`'s host once and check every address it has; Refused names the first problem."""
    allowed = allowed if allowed is not None else Allowed.from_env()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Refused(f"{parts.scheme or 'no'} scheme: only http and https are called")
    if not parts.hostname:
        raise Refused("the URL names no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused("the URL's port is not a number from 0 to 65535") from None
    addresses = _resolve(parts.hostname, port)
    for address in addresses:
        problem = allowed.why_not(address)
        if problem is not None:
            raise Refused(f"{parts.hostname} is {address}: {problem}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Destination(parts.scheme, parts.hostname, port, str(addresses[0]), target)


def _resolve(host: str, port: int) -> list[Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos: Iterable[tuple[object, ...]] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"{host} does not resolve: {exc}") from None
    found: list[Address] = []
    for info in infos:
        sockaddr = info[4]
        assert isinstance(sockaddr, tuple)
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in found:
            found.append(address)
    if not found:
        raise Refused(f"{host} does not resolve")
    return found


def redacted(url: str) -> str:
    """A hook URL as the history and the pages show it: scheme, host and port, and a hash of the
    whole URL to tell two apart, never its path, query or credentials (a Slack URL is a secret)."""
    from manager.policy.webhooks import shown

    return shown(url)
