"""Where a webhook may go: the public internet only.

An MSP chooses its webhook URL, and our workers POST to it from inside the deployment, so an
unchecked URL turns them into a scanner of our own network (loopback services, the cloud
metadata endpoint, private ranges) that reports what it found in the deliveries list. So:

- at creation, a URL naming a non-public address or ``localhost`` is refused with a 422, and
  in production only https is accepted;
- at send time the host is resolved once, every address it resolves to must be public, and the
  connection goes to the address that was checked (no second resolution that DNS could answer
  differently), with the original ``Host`` header and TLS server name;
- redirects are never followed (the receiver could point us anywhere).

Address classes come from the stdlib's ``ipaddress`` properties. IPv6 forms that carry an IPv4
address (mapped, compatible, 6to4, NAT64) are judged by the IPv4 address they carry.
``webhook_allow_private_targets`` lifts the address rule (development and tests with a local
receiver); it is off by default in every environment.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

from safekeep.errors import UnprocessableEntity
from safekeep.settings import Environment, Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# NAT64 prefixes (RFC 6052 well-known, RFC 8215 local use): the last 32 bits are an IPv4
# address a NAT64 gateway would connect to. The stdlib has no property for these.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


class WebhookTargetRefused(UnprocessableEntity):
    slug = "webhook-target-refused"
    title = "Webhooks can only be sent to the public internet"


class TargetRefused(Exception):
    """This delivery must not leave the process; ``reason`` is recorded on it (and shown to
    the MSP), ``detail`` only logged."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        self.reason = reason
        self.detail = detail or reason
        super().__init__(reason)


class TargetUnresolved(Exception):
    """The host did not resolve: an attempt that failed, retried like a refused connection.
    Its message is recorded on the delivery; ``detail`` (the resolver's error) only logged."""

    def __init__(self, reason: str, detail: str) -> None:
        self.detail = detail
        super().__init__(reason)


def _not_public(host: str) -> str:
    """What a delivery records when a host name does not lead to the public internet, the
    same whether it resolves to a private address or not at all: the MSP chooses the name,
    and the deliveries list must not tell it how our network's DNS answers (which names
    exist inside, and at which addresses)."""
    return f"{host} does not resolve to a public internet address"


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when it carries one."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in prefix for prefix in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    value = int(address)
    if value >> 32 == 0 and value > 1:  # IPv4-compatible ::a.b.c.d (not :: or ::1)
        return ipaddress.IPv4Address(value)
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Why a webhook may not be sent to this address, or None when it is public."""
    inner = embedded_ipv4(address)
    if inner is not None:
        why = address_refusal(inner)
        if why is not None:
            return f"{why} (carried in {address})"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if not address.is_global:
        return "an address that is not globally reachable (e.g. carrier-grade NAT)"
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def host_of(url: httpx.URL) -> str:
    """The URL's host as it goes on the wire (an internationalised name in its ``xn--``
    form): httpx's ``host`` decodes that form under IDNA 2008, which refuses names that
    resolve and are registered, such as emoji domains (``idna.InvalidCodepoint``)."""
    return url.raw_host.decode("ascii")


def origin_of(url: str) -> str:
    """What the audit log records of a webhook URL: its scheme, host and port. The audit log
    is read with a ``read`` key and kept for good, while the rest of a URL (user and password,
    path, query) is often the receiver's credential (chat incoming webhooks, signed URLs) that
    only an admin may see, on the webhook itself."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host_of(parsed)}{port}"


def _is_localhost(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def check_url(settings: Settings, url: str) -> None:
    """Refuse, when the endpoint is created, what can be known without DNS (whose answers
    change; the send-time check is the one that counts)."""
    parsed = httpx.URL(url)
    if settings.env is Environment.production and parsed.scheme != "https":
        raise WebhookTargetRefused("Webhook URLs must use https in production")
    if settings.webhook_allow_private_targets:
        return
    host = host_of(parsed)
    if _is_localhost(host):
        raise WebhookTargetRefused(f"{host} is this machine, not the public internet")
    address = _literal(host)
    if address is not None and (why := address_refusal(address)) is not None:
        raise WebhookTargetRefused(f"{address} is {why}, not the public internet")


@dataclass(frozen=True)
class Target:
    """A URL with the one address it will be sent to."""

    url: httpx.URL
    address: IPAddress

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with its host replaced by the checked address: httpx then connects there
        and resolves nothing."""
        return self.url.copy_with(host=str(self.address))

    @property
    def headers(self) -> dict[str, str]:
        return {"Host": self.url.netloc.decode("ascii")}

    @property
    def extensions(self) -> dict[str, str]:
        """TLS: send the original host name as SNI and verify the certificate against it."""
        return {"sni_hostname": host_of(self.url)} if self.url.scheme == "https" else {}


async def resolve_target(settings: Settings, url: str) -> Target:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise TargetRefused(f"refused: not a valid URL ({exc})") from exc
    host = host_of(parsed)
    if not host:
        raise TargetRefused("refused: the URL names no host")
    if parsed.scheme not in ("http", "https"):
        raise TargetRefused(f"refused: the scheme {parsed.scheme!r} is not http(s)")
    if settings.env is Environment.production and parsed.scheme != "https":
        raise TargetRefused("refused: webhook URLs must use https in production")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    literal = _literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
        except (OSError, UnicodeError) as exc:
            raise TargetUnresolved(_not_public(host), f"{host}: {exc}") from exc
        addresses = []
        for *_, sockaddr in infos:
            found = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if found not in addresses:
                addresses.append(found)
        if not addresses:
            raise TargetUnresolved(_not_public(host), f"{host}: no addresses")
    if not settings.webhook_allow_private_targets:
        for address in addresses:
            if (why := address_refusal(address)) is not None:
                # An address the MSP wrote itself is named; one our DNS answered is not.
                shown = f"{address} is {why}" if literal is not None else _not_public(host)
                raise TargetRefused(
                    f"refused: {shown}; webhooks are sent to the public internet only",
                    f"{host} resolves to {address}, {why}",
                )
    return Target(parsed, addresses[0])
