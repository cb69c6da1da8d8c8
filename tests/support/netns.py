"""Hosts on a private network, made of Linux network namespaces (root only).

`network(["db", "api"])` builds, for this run only:
- a switch namespace `ptx-<pid>-net` holding a bridge (so the root namespace's firewall
  rules never see the traffic between hosts);
- per role a host namespace `ptx-<pid>-<role>` with its own loopback and one veth into the
  bridge, addressed 10.77.<n>.2, .3, ... in the order given;
- a veth from the root namespace into the bridge, 10.77.<n>.1, so the test process (and only
  it) reaches every host, as a client on the same network would.

`<n>` is a /24 no interface of the root namespace uses. Everything is named after the test
process's pid, so a run killed before its cleanup never collides with the next one, and the
next one removes what it left (`remove_stale`). `Host.command` prefixes a command line with
`ip netns exec`, which execs it: the Popen's pid is the process itself. `unplug` and `plug`
pull and reinsert a host's cable at the switch.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

PREFIX = "ptx"
NAMESPACE = re.compile(rf"^{PREFIX}-(\d+)-[a-z]+$")
ROOT_LINK = re.compile(rf"^{PREFIX}(\d+)[a-z]\d*$")
SUBNETS = "10.77.{}.0/24"
KILL_GRACE_SECONDS = 5.0


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def unavailable() -> str | None:
    """Why namespaces cannot be built here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "`ip` not found (apt-get install iproute2)"
    # Made and removed at once: listing works where adding does not (a container without
    # CAP_SYS_ADMIN, no /run/netns).
    probe = f"{PREFIX}-{os.getpid()}-probe"
    added = ip("netns", "add", probe, check=False)
    ip("netns", "del", probe, check=False)
    if added.returncode != 0:
        return f"`ip netns add` does not work here: {added.stderr.strip()}"
    return None


@dataclass
class Host:
    role: str
    namespace: str
    address: str
    cable: str  # the veth end plugged into the switch, in the switch namespace

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host (`ip netns exec` execs it: same pid)."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def pids(self) -> list[int]:
        listed = ip("netns", "pids", self.namespace, check=False).stdout.split()
        return [int(pid) for pid in listed if pid.isdigit()]


@dataclass
class Network:
    run: str  # the pid the names carry
    subnet: ipaddress.IPv4Network
    switch: str  # the switch namespace
    client_address: str  # the root namespace's address on the network
    client_link: str
    hosts: dict[str, Host] = field(default_factory=dict)

    def __getitem__(self, role: str) -> Host:
        return self.hosts[role]

    def unplug(self, role: str) -> None:
        """Pulls the host's cable: its packets are lost, as when a switch port dies."""
        ip("-n", self.switch, "link", "set", self.hosts[role].cable, "down")

    def plug(self, role: str) -> None:
        ip("-n", self.switch, "link", "set", self.hosts[role].cable, "up")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_processes(namespace: str) -> None:
    """Ends what still runs in a namespace of ours: SIGTERM, then SIGKILL after a grace."""
    host = Host("", namespace, "", "")
    pids = host.pids()
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        time.sleep(0.05)
    for pid in host.pids():
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _delete_namespace(namespace: str) -> None:
    _end_processes(namespace)
    ip("netns", "del", namespace, check=False)


def _namespaces() -> list[str]:
    # `ip netns list` prints "name (id: 3)" for namespaces with an id.
    return [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]


def _root_links() -> list[str]:
    listed = ip("-o", "link", "show").stdout.splitlines()
    # "7: ptx123c@if6: <...>": the name, without the peer after "@".
    return [line.split(":")[1].strip().split("@")[0] for line in listed if ":" in line]


def remove_stale() -> list[str]:
    """Removes namespaces and root links of earlier runs whose process is gone; their names."""
    removed = []
    for namespace in _namespaces():
        match = NAMESPACE.match(namespace)
        if match and not _alive(int(match.group(1))):
            _delete_namespace(namespace)
            removed.append(namespace)
    for link in _root_links():
        match = ROOT_LINK.match(link)
        if match and not _alive(int(match.group(1))):
            ip("link", "del", link, check=False)
            removed.append(link)
    return removed


def _free_subnet(run: int) -> ipaddress.IPv4Network:
    """A 10.77.n.0/24 that no address of the root namespace is in (tried from the pid on)."""
    used = [
        ipaddress.ip_interface(word)
        for line in ip("-o", "-4", "addr", "show").stdout.splitlines()
        for word in line.split()[3:4]
    ]
    for step in range(254):
        subnet = ipaddress.ip_network(SUBNETS.format((run + step) % 254 + 1))
        if not any(iface.network.overlaps(subnet) for iface in used):
            return subnet
    raise RuntimeError("no free 10.77.n.0/24 for the test network")


def _plug_in(switch: str, bridge: str, cable: str, end: str, namespace: str | None) -> None:
    """A veth pair: `cable` into the switch's bridge, `end` into `namespace` (None: root)."""
    ip("link", "add", cable, "type", "veth", "peer", "name", end)
    ip("link", "set", cable, "netns", switch)
    ip("-n", switch, "link", "set", cable, "master", bridge)
    ip("-n", switch, "link", "set", cable, "up")
    if namespace is not None:
        ip("link", "set", end, "netns", namespace)


@contextmanager
def network(roles: Sequence[str]) -> Iterator[Network]:
    """The hosts of `roles` on one switch, reachable from here; all gone after the block,
    whatever happened in it (processes still running in them are ended)."""
    remove_stale()
    run = str(os.getpid())
    subnet = _free_subnet(os.getpid())
    addresses = list(subnet.hosts())
    switch = f"{PREFIX}-{run}-net"
    bridge = "switch"
    client_link = f"{PREFIX}{run}c"
    made: list[str] = []
    try:
        ip("netns", "add", switch)
        made.append(switch)
        ip("-n", switch, "link", "add", bridge, "type", "bridge")
        ip("-n", switch, "link", "set", bridge, "up")

        _plug_in(switch, bridge, f"{PREFIX}{run}s0", client_link, None)
        client_address = str(addresses[0])
        ip("addr", "add", f"{client_address}/{subnet.prefixlen}", "dev", client_link)
        ip("link", "set", client_link, "up")
        net = Network(run, subnet, switch, client_address, client_link)

        for index, role in enumerate(roles, start=1):
            namespace = f"{PREFIX}-{run}-{role}"
            ip("netns", "add", namespace)
            made.append(namespace)
            cable, end = f"{PREFIX}{run}s{index}", f"{PREFIX}{run}h{index}"
            _plug_in(switch, bridge, cable, end, namespace)
            host = Host(role, namespace, str(addresses[index]), cable)
            ip("-n", namespace, "link", "set", "lo", "up")
            ip("-n", namespace, "addr", "add", f"{host.address}/{subnet.prefixlen}", "dev", end)
            ip("-n", namespace, "link", "set", end, "up")
            net.hosts[role] = host
        yield net
    finally:
        for namespace in reversed(made):
            _delete_namespace(namespace)
        ip("link", "del", client_link, check=False)  # gone with its peer, normally
