"""Address rules, allow-list and data URLs of the image fetcher (the HTTP side is tested in test_bad_input)."""

from __future__ import annotations

import ipaddress

import pytest

from serving.errors import InvalidRequest
from serving.fetch import AllowList, decode_data_url, is_public_address


@pytest.mark.parametrize(
    "address, public",
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 around 127.0.0.1
        ("64:ff9b::a00:1", False),  # NAT64 around 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # Teredo around a private client
    ],
)
def test_public_addresses(address, public):
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_allow_list_by_host_ip_and_network():
    allow = AllowList(["127.0.0.1", "images.internal", "10.8.0.0/16", "[::1]"])
    assert allow.allows("localhost", ipaddress.ip_address("127.0.0.1"))
    assert allow.allows("images.internal.", ipaddress.ip_address("10.0.0.9"))
    assert allow.allows("x", ipaddress.ip_address("10.8.3.4"))
    assert allow.allows("x", ipaddress.ip_address("::1"))
    assert not allow.allows("x", ipaddress.ip_address("127.0.0.2"))
    assert not allow.allows("x", ipaddress.ip_address("10.9.0.1"))


def test_data_urls():
    assert decode_data_url("data:image/png;base64,aGVs\nbG8=", 100) == b"hello"
    for bad in ("data:image/png;base64,***", "data:image/png,hello", "data:image/png;base64"):
        with pytest.raises(InvalidRequest):
            decode_data_url(bad, 100)
    with pytest.raises(InvalidRequest, match="byte limit"):
        decode_data_url("data:image/png;base64," + "A" * 400, 100)
