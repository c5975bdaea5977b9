"""Webhook signatures (for senders and receivers) and the guard that keeps webhook requests off private networks.

A delivery carries ``Jobyard-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``, like Stripe's.
Receivers check it with :func:`verify_signature`::

    from jobyard.webhooks import verify_signature, WebhookSignatureError

    seen: set[str] = ...   # ids of events already handled, kept at least `tolerance` seconds
    try:
        event = verify_signature(request_body, request.headers["Jobyard-Signature"], SECRET, seen=seen)
    except WebhookSignatureError:
        return 400
    seen.add(event["id"])
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from collections.abc import Container
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jobyard import jsonutil
from jobyard.errors import ConfigurationError, JobyardError, ValidationError

SIGNATURE_HEADER = "Jobyard-Signature"
DEFAULT_TOLERANCE = 300

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class WebhookSignatureError(JobyardError):
    """The signature is missing, malformed, does not match, is too old, or the event was seen before."""


class WebhookTargetRefused(ValidationError):
    """The webhook URL is not allowed (bad scheme, unresolvable, or a private address)."""


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Jobyard-Signature`` header value for ``body`` sent at ``timestamp`` (now by default)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(
    payload: bytes | str,
    header: str | None,
    secret: str,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    seen: Container[str] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery and return its event (the parsed body).

    Raises ``WebhookSignatureError`` when the header is missing or malformed, no ``v1`` signature matches
    (the body or the timestamp was tampered with, or the secret is wrong), the timestamp is more than
    ``tolerance`` seconds away from ``now`` (a stale or replayed delivery), or the event's id is in ``seen``
    (a replay inside the tolerance window: keep the ids you handled for at least ``tolerance`` seconds).
    Several ``v1`` entries are accepted, so a secret can be rotated.
    """
    body = payload.encode() if isinstance(payload, str) else bytes(payload)
    if not header:
        raise WebhookSignatureError(f"no {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookSignatureError(f"malformed {SIGNATURE_HEADER} header: expected t=<unix time>,v1=<hex>")
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookSignatureError("signature does not match the body (tampered, or signed with another secret)")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance:
        raise WebhookSignatureError(f"signature timestamp is {age:.0f}s old, outside the {tolerance:g}s tolerance")
    try:
        event = jsonutil.loads(body)
    except ValueError as exc:
        raise WebhookSignatureError("the body is not JSON") from exc
    if not isinstance(event, dict):
        raise WebhookSignatureError("the body is not a JSON object")
    if seen is not None and str(event.get("id")) in seen:
        raise WebhookSignatureError(f"event {event.get('id')} was already received (replay)")
    return event


# --- the SSRF guard ---------------------------------------------------------------------------------
def parse_allow_list(spec: str) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """``"hooks.internal, 10.1.0.0/16"`` → (host names, networks) allowed even though they are private."""
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        if any(ch.isdigit() for ch in item.split("/")[0][:1]) or ":" in item:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError as exc:
                raise ConfigurationError(f"JOBYARD_WEBHOOK_ALLOW_HOSTS: {item!r} is not a network ({exc})") from exc
        else:
            hosts.add(item.lower().rstrip("."))
    return frozenset(hosts), tuple(networks)


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


@dataclass(frozen=True)
class TargetGuard:
    """Decides which webhook targets may be called: public addresses only, unless allowed by configuration."""

    allow_private: bool = False
    allow_hosts: frozenset[str] = frozenset()
    allow_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, allow_private: bool, allow_hosts: str) -> TargetGuard:
        hosts, networks = parse_allow_list(allow_hosts)
        return cls(allow_private, hosts, networks)

    def check_url(self, url: str) -> tuple[str, int]:
        """The URL's host and port; refuses other schemes, user info and missing hosts."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise WebhookTargetRefused(f"webhook URL must be http:// or https://, not {parts.scheme or 'none'}")
        if not parts.hostname:
            raise WebhookTargetRefused("webhook URL has no host")
        if parts.username or parts.password:
            raise WebhookTargetRefused("webhook URL must not carry credentials; webhooks are signed instead")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise WebhookTargetRefused(f"webhook URL has an invalid port: {exc}") from exc
        return parts.hostname.lower().rstrip("."), port

    def _allowed(self, host: str, address: IPAddress) -> bool:
        return (
            self.allow_private
            or host in self.allow_hosts
            or is_public(address)
            or any(address in network for network in self.allow_networks)
        )

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses to connect to for ``host``; refuses the host if any of them is not allowed.

        Every address must pass, so a name that resolves to both a public and a private address is refused.
        """
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise WebhookTargetRefused(f"webhook host {host!r} does not resolve ({exc})") from exc
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
        refused = [str(a) for a in addresses if not self._allowed(host, a)]
        if refused or not addresses:
            raise WebhookTargetRefused(
                f"webhook host {host!r} resolves to a private, loopback, link-local or multicast address "
                f"({', '.join(refused) or 'none'}); set JOBYARD_WEBHOOK_ALLOW_PRIVATE or JOBYARD_WEBHOOK_ALLOW_HOSTS "
                "to allow it"
            )
        return [str(a) for a in addresses]

    async def check(self, url: str) -> None:
        """Refuse a URL now (at registration or submission) rather than at its first delivery."""
        host, port = self.check_url(url)
        await self.resolve(host, port)
