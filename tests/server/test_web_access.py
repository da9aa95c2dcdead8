"""Host/Origin rules of the viewer (DNS rebinding, cross-origin pages) and the token check."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from websockets.datastructures import Headers

from server.web_access import AccessPolicy, auth_value, parse_authority, parse_origin
from slam.errors import ConfigError

PORT = 8080


def status(policy: AccessPolicy, *headers: tuple[str, str]) -> int:
    """200 when ``policy`` lets a request with ``headers`` through, else the refusal's status."""
    refusal = policy.check(Headers(list(headers)))
    return 200 if refusal is None else int(refusal.status)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("LocalHost.:80", ("localhost", 80)),
    ("[0:0::1]:8080", ("[::1]", 8080)),
    ("[::1]", ("[::1]", None)),
    ("robot.example", ("robot.example", None)),
])
def test_parse_authority(text: str, expected: tuple[str, int | None]) -> None:
    assert parse_authority(text) == expected


@pytest.mark.parametrize("text", ["", ":8080", "a:b", "a:0", "a:70000", "::1", "[::1",
                                  "[::1]x", "user@host:1", "a b", "a/b", "[nothost]:1"])
def test_parse_authority_refuses_junk(text: str) -> None:
    with pytest.raises(ValueError):
        parse_authority(text)


def test_parse_origin() -> None:
    assert parse_origin("HTTP://Example.org") == ("http", "example.org", 80)
    assert parse_origin("https://example.org") == ("https", "example.org", 443)
    assert parse_origin("http://[::1]:9") == ("http", "[::1]", 9)
    for junk in ("null", "file://", "ftp://x", "http://x/path", "x"):
        with pytest.raises(ValueError):
            parse_origin(junk)


def test_loopback_bind_accepts_loopback_names_with_the_port_only() -> None:
    policy = AccessPolicy.build("127.0.0.1", PORT)
    assert policy.loopback_only
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST.:8080"):
        assert status(policy, ("Host", host)) == 200, host
    for host in ("evil.example:8080", "127.0.0.1:8081", "127.0.0.1", "10.0.0.1:8080",
                 "localhost.evil.example:8080"):
        assert status(policy, ("Host", host)) == HTTPStatus.FORBIDDEN, host


def test_missing_duplicated_or_malformed_host_is_400() -> None:
    policy = AccessPolicy.build("127.0.0.1", PORT)
    assert status(policy) == HTTPStatus.BAD_REQUEST
    assert status(policy, ("Host", "127.0.0.1:8080"), ("Host", "127.0.0.1:8080")) == 400
    assert status(policy, ("Host", "127.0.0.1:8080"), ("Host", "evil.example")) == 400
    assert status(policy, ("Host", "a:b")) == HTTPStatus.BAD_REQUEST
    assert status(policy, ("Host", "127.0.0.1:8080"), ("Origin", "http://127.0.0.1:8080"),
                  ("Origin", "http://127.0.0.1:8080")) == HTTPStatus.BAD_REQUEST


def test_origin_must_be_the_page_itself_or_allow_listed() -> None:
    policy = AccessPolicy.build("127.0.0.1", PORT, allow_origins=["https://ops.example"])
    host = ("Host", "127.0.0.1:8080")
    assert status(policy, host, ("Origin", "http://127.0.0.1:8080")) == 200
    assert status(policy, host, ("Origin", "https://ops.example")) == 200
    for origin in ("http://evil.example", "http://localhost:8080", "http://127.0.0.1:9999",
                   "https://127.0.0.1:8080", "null", "http://ops.example"):
        assert status(policy, host, ("Origin", origin)) == HTTPStatus.FORBIDDEN, origin


def test_wildcard_bind_accepts_ip_literals_and_allow_listed_names() -> None:
    policy = AccessPolicy.build("0.0.0.0", PORT, allow_hosts=["robot.lan", "proxy.example:443"])
    assert not policy.loopback_only
    for host in ("192.168.1.20:8080", "[fe80::1]:8080", "localhost:8080", "robot.lan:8080",
                 "proxy.example:443"):
        assert status(policy, ("Host", host)) == 200, host
    for host in ("evil.example:8080", "robot.lan:9", "proxy.example:8080", "10.1.2.3:80"):
        assert status(policy, ("Host", host)) == HTTPStatus.FORBIDDEN, host
    # a page of another machine on the same port is another origin
    assert status(policy, ("Host", "10.0.0.5:8080"), ("Origin", "http://10.0.0.6:8080")) == 403


def test_specific_address_bind_accepts_that_address_only() -> None:
    policy = AccessPolicy.build("192.168.1.20", PORT)
    assert not policy.loopback_only
    assert status(policy, ("Host", "192.168.1.20:8080")) == 200
    assert status(policy, ("Host", "localhost:8080")) == HTTPStatus.FORBIDDEN
    assert status(policy, ("Host", "192.168.1.21:8080")) == HTTPStatus.FORBIDDEN


@pytest.mark.parametrize(("hosts", "origins"), [(["a b"], []), (["x:0"], []), ([], ["evil"]),
                                                ([], ["http://x/y"])])
def test_bad_allow_list_entries_are_config_errors(hosts: list[str], origins: list[str]) -> None:
    with pytest.raises(ConfigError):
        AccessPolicy.build("127.0.0.1", PORT, allow_hosts=hosts, allow_origins=origins)


def test_auth_value() -> None:
    assert auth_value('{"auth": "ab"}') == "ab"
    for message in ('{"auth": null}', '{"auth": 1}', '{"cmd": "pause"}', "[1]", "{", b"\xff"):
        assert auth_value(message) is None
