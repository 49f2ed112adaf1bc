"""Image sources from the API: base64 `data:` URLs and SSRF-safe http(s) fetching.

A fetch resolves the host, refuses loopback, private, link-local, reserved, multicast and other non-global
addresses (IPv4, IPv6 and IPv4-mapped or embedded forms), connects to the address it checked (so DNS cannot
change its answer in between), follows redirects by hand with the same checks on every hop, and caps time
and size. Hosts, IPs or CIDRs in an explicit allow-list may be internal (tests reach a 127.0.0.1 server).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import socket
from collections.abc import Iterable

import httpx

from serving.errors import InvalidRequest

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
REDIRECTS = (301, 302, 303, 307, 308)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public_address(ip: IPAddress) -> bool:
    """True only for globally routable unicast addresses; embedded IPv4 forms are judged by the IPv4 inside."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public_address(embedded)
    if (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    ):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return False
    return ip.is_global


class AllowList:
    """Exceptions to the public-address rule: exact host names, IP addresses or CIDR networks."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.hosts: set[str] = set()
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                self.hosts.add(entry.lower().rstrip("."))

    def allows(self, host: str, ip: IPAddress) -> bool:
        return host.lower().rstrip(".") in self.hosts or any(ip in net for net in self.networks)


def decode_data_url(url: str, max_bytes: int) -> bytes:
    """The bytes of a `data:[mime];base64,...` URL, with the size checked before decoding."""
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise InvalidRequest(
            "an image data URL must look like data:image/png;base64,<data>; encode the image in base64",
            param="messages",
        )
    payload = "".join(payload.split())
    if len(payload) * 3 // 4 > max_bytes + 2:
        raise InvalidRequest(
            f"an image is over the {max_bytes}-byte limit; send a smaller or more compressed image",
            param="messages",
        )
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            "an image data URL is not valid base64; encode the image again", param="messages"
        ) from exc


class ImageFetcher:
    """Fetches image URLs under the rules above; one shared httpx client per app."""

    def __init__(
        self, *, timeout_s: float, max_bytes: int, max_redirects: int, allow: Iterable[str] = ()
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.allow = AllowList(allow)
        self.client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=False)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(self, url: str) -> bytes:
        try:
            return await asyncio.wait_for(self._fetch(url), self.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
            raise InvalidRequest(
                f"fetching an image URL took over {self.timeout_s:g} s; host the image elsewhere or send it as base64",
                param="messages",
            ) from exc
        except httpx.HTTPError as exc:
            log.info("image fetch failed: %s", type(exc).__name__)
            raise InvalidRequest(
                "an image URL could not be fetched; check that it is reachable or send the image as base64",
                param="messages",
            ) from exc

    async def _fetch(self, url: str) -> bytes:
        for _ in range(self.max_redirects + 1):
            target = self._parse(url)
            host = target.host
            ip = await self._resolve(host, target.port or (443 if target.scheme == "https" else 80))
            pinned = target.copy_with(host=str(ip))
            netloc = host if target.port is None else f"{host}:{target.port}"
            extensions = {"sni_hostname": host} if target.scheme == "https" else {}
            request = self.client.build_request(
                "GET", pinned, headers={"Host": netloc}, extensions=extensions
            )
            response = await self.client.send(request, stream=True)
            try:
                if response.status_code in REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        break
                    url = str(target.join(location))
                    continue
                if response.status_code != 200:
                    raise InvalidRequest(
                        f"an image URL answered HTTP {response.status_code}; check the URL", param="messages"
                    )
                return await self._read_capped(response)
            finally:
                await response.aclose()
        raise InvalidRequest(
            f"an image URL redirected more than {self.max_redirects} times; give the final URL",
            param="messages",
        )

    def _parse(self, url: str) -> httpx.URL:
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidRequest("an image URL is malformed; check it", param="messages") from exc
        if target.scheme not in ("http", "https") or not target.host:
            raise InvalidRequest(
                "image URLs must be http(s) or data: URLs; send the image as base64 instead", param="messages"
            )
        return target

    async def _resolve(self, host: str, port: int) -> IPAddress:
        """One address of `host` that may be contacted; refuses if any of its addresses may not."""
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
            addresses = [literal]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as exc:
                raise InvalidRequest(
                    f"the image host {host!r} does not resolve; check the URL", param="messages"
                ) from exc
            addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        if not addresses:
            raise InvalidRequest(f"the image host {host!r} does not resolve; check the URL", param="messages")
        for ip in addresses:
            if not (is_public_address(ip) or self.allow.allows(host, ip)):
                raise InvalidRequest(
                    "image URLs may not point to internal addresses; use a public URL or send the image as base64",
                    param="messages",
                )
        return addresses[0]

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise InvalidRequest(
                f"an image URL serves {declared} bytes, over the {self.max_bytes}-byte limit",
                param="messages",
            )
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data.extend(chunk)
            if len(data) > self.max_bytes:
                raise InvalidRequest(
                    f"an image URL serves more than the {self.max_bytes}-byte limit; send a smaller image",
                    param="messages",
                )
        return bytes(data)
