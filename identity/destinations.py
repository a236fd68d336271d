"""Where notices go (docs/notifications.md): the web app's back-channel logout URIs and the
webhook endpoints, read from the environment, and the address check every delivery passes.

    IDENTITY_BACKCHANNEL_LOGOUT_URIS=web=https://app.example/api/logout,admin=https://…
    IDENTITY_WEBHOOKS_FILE=/etc/identity/webhooks.toml

        [[endpoints]]
        url = "https://hooks.example/identity"
        secret = "whsec_…"          # Standard Webhooks: base64 after the prefix, 24-64 bytes
        events = ["user.created", "session.ended"]

In production every URL is https:// and, when a delivery connects, its host must resolve only to
public addresses (`public_addresses`): no loopback, private, link-local or otherwise reserved
target, so a configured name cannot be pointed at the service's own network.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from identity.environment import ConfigError, Invalid, check_url, entries

EVENTS = (
    "user.created",
    "user.updated",
    "user.disabled",
    "user.enabled",
    "user.deleted",
    "session.ended",
    "account.linked",
    "account.unlinked",
)
_CLIENT = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_KEYS = frozenset({"url", "secret", "events"})
SECRET_PREFIX = "whsec_"  # noqa: S105 - the form's prefix, no secret


@dataclass(frozen=True)
class WebhookEndpoint:
    url: str
    secret: bytes  # the key itself, decoded from its whsec_ form
    events: frozenset[str]

    @property
    def destination(self) -> str:
        return f"webhook:{self.url}"


def backchannel_logout_uris(raw: str) -> dict[str, str]:
    """`client_id=https://app/api/logout,…` (IDENTITY_BACKCHANNEL_LOGOUT_URIS)."""
    found: dict[str, str] = {}
    for item in entries(raw):
        client_id, sep, uri = item.partition("=")
        if not sep or not _CLIENT.fullmatch(client_id):
            raise Invalid("each entry must be client_id=URL")
        check_url(uri)
        if client_id in found:
            raise Invalid(f"client {client_id!r} is listed twice")
        found[client_id] = uri
    return found


def load_webhooks(path: Path) -> tuple[WebhookEndpoint, ...]:
    where = f"IDENTITY_WEBHOOKS_FILE: {path}"
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{where}: cannot be read ({type(error).__name__})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{where}: not valid TOML ({error})") from None
    if set(document) - {"endpoints"}:
        raise ConfigError(f"{where}: only [[endpoints]] tables are allowed")
    tables = document.get("endpoints", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{where}: endpoints: must be [[endpoints]] tables")
    endpoints = tuple(_endpoint(f"{where}: endpoints[{n}]", t) for n, t in enumerate(tables))
    urls = [e.url for e in endpoints]
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{where}: an endpoint URL is listed twice")
    return endpoints


def _endpoint(key: str, table: Any) -> WebhookEndpoint:
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown key (url, secret, events)")
    url = table.get("url")
    try:
        if not isinstance(url, str):
            raise Invalid("required")
        check_url(url)
    except Invalid:
        raise ConfigError(f"{key}.url: required, an http(s) URL without query") from None
    events = table.get("events")
    if not isinstance(events, list) or not events or not all(e in EVENTS for e in events):
        raise ConfigError(f"{key}.events: a non-empty list of {', '.join(EVENTS)}")
    return WebhookEndpoint(url, _secret(f"{key}.secret", table.get("secret")), frozenset(events))


def _secret(key: str, value: Any) -> bytes:
    # The message never quotes the value: it is a secret.
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        raise ConfigError(f"{key}: required, whsec_ followed by base64")
    try:
        secret = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{key}: not base64 after whsec_") from None
    if not 24 <= len(secret) <= 64:  # Standard Webhooks: 24 to 64 bytes of key
        raise ConfigError(f"{key}: the key must be 24 to 64 bytes")
    return secret


def production_problems(
    backchannel: Mapping[str, str], webhooks: tuple[WebhookEndpoint, ...]
) -> list[str]:
    """Plain-http delivery would carry signed logout tokens and user ids in the clear."""
    problems = [
        f"IDENTITY_BACKCHANNEL_LOGOUT_URIS: {client!r} must use an https:// URL in production"
        for client, uri in backchannel.items()
        if not uri.startswith("https://")
    ]
    problems += [
        f"IDENTITY_WEBHOOKS_FILE: endpoints[{n}].url must be https:// in production"
        for n, e in enumerate(webhooks)
        if not e.url.startswith("https://")
    ]
    return problems


class RefusedTarget(Exception):
    """A delivery's host resolves to an address production may not connect to."""


# IPv6 ranges that carry an IPv4 address in their last 32 bits: NAT64 (RFC 6052), IPv4-translated
# (SIIT, RFC 2765) and the deprecated IPv4-compatible form. A gateway or stack turns them into
# that IPv4 address, so it must pass the IPv4 rule too.
_LAST_32_BITS = tuple(
    ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "::ffff:0:0:0/96", "::/96")
)
# Never a public destination: local-use NAT64 (RFC 8215; where its IPv4 sits is the operator's
# choice) and site-local (deprecated, private by intent).
_REFUSED_V6 = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b:1::/48", "fec0::/10"))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for (mapped, NAT64, translated, compatible,
    6to4, Teredo's server and client), none for a native one."""
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if any(ip in net for net in _LAST_32_BITS):
        found.append(ipaddress.IPv4Address(ip.packed[-4:]))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def is_public(address: str) -> bool:
    """Whether a delivery may connect to `address`: a global, non-multicast address, and for an
    IPv6 form of an IPv4 address, that IPv4 address too (NAT64 of 169.254.169.254 reaches the
    metadata service on an IPv6-only node)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return ip.is_global and not ip.is_multicast
    if any(ip in net for net in _REFUSED_V6):
        return False
    inner = embedded_ipv4(ip)
    if ip.ipv4_mapped is not None:  # Python calls ::ffff:0:0/96 private: judge the IPv4 alone
        return all(is_public(str(v4)) for v4 in inner)
    return ip.is_global and not ip.is_multicast and all(is_public(str(v4)) for v4 in inner)


async def public_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, all of them public, or RefusedTarget. The caller
    connects to one of these very addresses, so a second lookup (DNS rebinding) cannot swap in
    an internal one between the check and the connection."""
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError) as error:
        raise RefusedTarget(f"cannot resolve ({type(error).__name__})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
    if not addresses or not all(is_public(a) for a in addresses):
        # One internal answer refuses the name: a mixed answer is how rebinding starts.
        raise RefusedTarget("resolves to a loopback, private or link-local address")
    return addresses
