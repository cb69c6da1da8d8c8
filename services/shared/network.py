"""Where Portico may connect on behalf of a tenant: a host is resolved once, every address it
resolves to is vetted, and the connection goes to a vetted address (never to the name again,
which a second DNS answer could point elsewhere: DNS rebinding).

Unless private hosts are allowed (Settings.private_mail_hosts_allowed: development, or an
on-premises mail server), only globally routable unicast addresses pass: no loopback,
private, link-local, CGNAT, multicast, reserved or unspecified address, and an IPv6 address
that carries an IPv4 one (mapped, 6to4) is judged by both. One refused address refuses the
host: a name that resolves to a public and a private address would reach the private one
whenever the public one does not answer.

TLS (SNI and the certificate) is checked against `Destination.host`, the name as given.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostNotAllowed(Exception):
    """The host resolves to an address that is not on the public internet."""


@dataclass(frozen=True)
class Destination:
    host: str  # as given: the name TLS checks
    port: int
    # (family, socket address) of each vetted address, in the resolver's order
    addresses: tuple[tuple[int, tuple[object, ...]], ...]


async def resolve(host: str, port: int, *, allow_private: bool) -> Destination:
    """The host's addresses, vetted: HostNotAllowed when any is not public (unless allowed),
    OSError (socket.gaierror) when the name does not resolve."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:  # a label over 63 characters, or none: no name to look up
        raise socket.gaierror(socket.EAI_NONAME, f"{host} is not a valid host name") from exc
    addresses: list[tuple[int, tuple[object, ...]]] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        if not allow_private and not is_public(ipaddress.ip_address(str(sockaddr[0]))):
            raise HostNotAllowed(
                f"{host} is not on the public internet (a loopback, private, link-local or "
                "reserved address), and private mail hosts are not allowed here "
                "(PORTICO_ALLOW_PRIVATE_MAIL_HOSTS)"
            )
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no IP address")
    return Destination(host, port, tuple(addresses))


def has_ascii_form(host: str) -> bool:
    """An IP address, or a name the resolver can take: IDNA, labels of 1 to 63 characters."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def is_public(address: IPAddress) -> bool:
    """Whether `address` is a globally routable unicast address (and so is any IPv4 address
    it carries)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and not is_public(embedded):
            return False
        if address.ipv4_mapped is not None:
            return True  # judged as the IPv4 address it is
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_private
    )


async def connect(destination: Destination) -> socket.socket:
    """A connected, non-blocking socket to the first vetted address that accepts (as
    asyncio's create_connection tries a name's addresses); the last OSError when none does.
    The caller bounds the wait."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, sockaddr in destination.addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last or OSError(f"{destination.host} has no address to connect to")
