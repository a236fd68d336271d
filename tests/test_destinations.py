"""The address check every production delivery passes (docs/notifications.md, "Where notices may
go"): an IPv6 form of an internal IPv4 address is as internal as the address itself."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity.destinations import is_public


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 (RFC 6052) of 169.254.169.254, the metadata service
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64 (RFC 8215)
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "::127.0.0.1",  # IPv4-compatible (deprecated) loopback
        "::ffff:0:a00:1",  # IPv4-translated (SIIT) 10.0.0.1
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fec0::1",  # site-local (deprecated, private by intent)
        "::1",
        "fe80::1",
        "fd00::1",
        "ff02::1",
    ],
)
def test_an_ipv6_form_of_an_internal_address_is_refused(address: str) -> None:
    """On an IPv6-only network with DNS64/NAT64 (common for IPv6-only Kubernetes nodes), a
    webhook host whose AAAA record is 64:ff9b::<internal IPv4> reaches that internal IPv4
    address through the NAT64 gateway."""
    assert not is_public(address)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8"],
)
def test_a_public_address_in_any_form_is_allowed(address: str) -> None:
    assert is_public(address)


ipv4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)


def forms(v4: ipaddress.IPv4Address) -> list[str]:
    """Every IPv6 address that stands for `v4`."""
    n = int(v4)
    return [
        str(ipaddress.IPv6Address((0xFFFF << 32) | n)),  # mapped
        str(ipaddress.IPv6Address((0x64FF9B << 96) | n)),  # NAT64 well-known prefix
        str(ipaddress.IPv6Address((0xFFFF << 32 << 16) | n)),  # translated ::ffff:0:a.b.c.d
        str(ipaddress.IPv6Address(n)),  # compatible ::a.b.c.d
        str(ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | 1)),  # 6to4
        # Teredo: the client's address is stored inverted in the last 32 bits.
        str(ipaddress.IPv6Address((0x20010000 << 96) | (0x08080808 << 64) | (n ^ 0xFFFFFFFF))),
    ]


@given(ipv4)
def test_no_ipv6_form_of_an_address_is_more_public_than_the_address(
    v4: ipaddress.IPv4Address,
) -> None:
    if not is_public(str(v4)):
        assert not any(is_public(form) for form in forms(v4)), v4
