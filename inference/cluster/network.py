"""Hosts on one machine: each a Linux network namespace with its own address on a shared bridge.

A process run through `Host.command` sees only its namespace's interfaces: it reaches the
others' addresses over the bridge as it would over a LAN, and `Host.cut()` takes its link down
the way a pulled cable or a lost machine would (connections hang, nothing is closed). This
machine itself has the bridge's first address, so a browser or a test here reaches every host.
Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "ic"  # of every bridge, namespace and interface made here: "ic<pid>..."
SUBNETS = ipaddress.IPv4Network("10.78.0.0/16")  # one /24 per network


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10).stdout


def can_make_namespaces() -> str | None:
    """None where namespaces can be made here; else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        ip("netns", "list")
    except (OSError, subprocess.SubprocessError) as exc:
        return f"iproute2 does not work here ({exc})"
    return None


@dataclass
class Host:
    name: str
    namespace: str
    address: str

    def command(self, cmd: list[str]) -> list[str]:
        """`cmd` run on this host."""
        return ["ip", "netns", "exec", self.namespace, *cmd]

    def cut(self) -> None:
        """Take its link down: every connection to it hangs, as if its cable were pulled."""
        ip("-n", self.namespace, "link", "set", "eth0", "down")

    def restore(self) -> None:
        ip("-n", self.namespace, "link", "set", "eth0", "up")


@dataclass
class Network:
    """A bridge and the hosts on it, named after this process (`remove_stale` clears a dead one's)."""

    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")
    hosts: dict[str, Host] = field(default_factory=dict)
    subnet: ipaddress.IPv4Network | None = None

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    @property
    def gateway(self) -> str:
        """This machine's address on the bridge."""
        assert self.subnet
        return str(self.subnet[1])

    def open(self) -> Network:
        remove_stale()
        self.subnet = free_subnet(os.getpid())
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        return self

    def add_host(self, name: str, number: int) -> Host:
        """A namespace with address .<number> on the bridge (2-254; 1 is this machine's)."""
        assert self.subnet and 2 <= number <= 254 and name not in self.hosts
        host = Host(name, f"{self.tag}-{name}", str(self.subnet[number]))
        veth = f"{self.tag}v{number}"
        ip("netns", "add", host.namespace)
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.namespace)
        ip("link", "set", veth, "master", self.bridge)
        ip("link", "set", veth, "up")
        ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        ip("-n", host.namespace, "link", "set", "eth0", "up")
        ip("-n", host.namespace, "link", "set", "lo", "up")
        self.hosts[name] = host
        return host

    def close(self) -> None:
        remove(self.tag)
        self.hosts.clear()

    def __enter__(self) -> Network:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()


def free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /24 of SUBNETS that no interface here uses, tried from one the seed picks."""
    used = ip("-4", "-o", "addr", "show")
    candidates = list(SUBNETS.subnets(new_prefix=24))[1:]
    for offset in range(len(candidates)):
        subnet = candidates[(seed + offset) % len(candidates)]
        if f"inet {str(subnet.network_address).rsplit('.', 1)[0]}." not in used:
            return subnet
    raise RuntimeError(f"no free /24 left in {SUBNETS}")


def remove(tag: str) -> None:
    """Delete a network's links, namespaces and bridge. (A namespace's veth pair would go with it,
    but later: the kernel frees a namespace in the background, and a network started next could
    not reuse the names.)"""
    for link in ip("-br", "link", "show").splitlines():
        name = link.split()[0].split("@")[0] if link.strip() else ""
        if name.startswith(f"{tag}v"):
            subprocess.run(["ip", "link", "del", name], capture_output=True)
    for namespace in namespaces():
        if namespace.startswith(f"{tag}-"):
            # What still runs there (a run killed before it could stop its processes) goes too.
            for pid in subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
    subprocess.run(["ip", "link", "del", f"{tag}br"], capture_output=True)


def remove_stale() -> None:
    """Remove what networks of processes that are gone left behind (a run killed with SIGKILL)."""
    bridges = [line.split()[0] for line in ip("-br", "link", "show", "type", "bridge").splitlines() if line.strip()]
    tags = {name.split("-", 1)[0] for name in namespaces() if name.startswith(PREFIX)}
    tags |= {name[:-2] for name in bridges if name.startswith(PREFIX) and name.endswith("br")}
    for tag in tags:
        pid = tag[len(PREFIX):]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            remove(tag)


def namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
