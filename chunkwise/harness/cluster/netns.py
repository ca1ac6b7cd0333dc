"""One host of the loopback cluster on a network of its own, and a partition that cuts it off (the
fault matrix's network-partition row, bench/faults/partition.py).

A network namespace joined to this machine's by a veth pair on a /30 of 10.231.0.0/16: the outside end
(`outer_ip`, in this machine's namespace) is where the cluster's Prefect API listens for that row; the
inside end (`inner_ip`) is the island host's simulator. Processes enter the island with `nsenter
--net=...` (`prefix`): only the network namespace changes, the files (the shared run storage) are the
same, as a second machine mounting one shared filesystem sees them.

The cut drops every frame both ways in silence, established connections included: no reset, no ICMP
error, as a pulled cable or a dead switch port does (the hardest partition for a client: it only ever
sees timeouts). Without netfilter or traffic-control modules (this kernel has neither nftables,
iptables nor netem), it is done with the neighbour tables: each end's entry for the other is replaced
by a permanent one naming a MAC address nobody has, so the frames leave but the peer drops them as not
addressed to it. Healing deletes those entries; ARP learns the real ones again.

Root only (namespaces, links). `create` raises `NetnsUnavailable` naming the command and its error
where the kernel or the user cannot do this.
"""

from __future__ import annotations

import os
import random
import subprocess
from dataclasses import dataclass

#: A MAC address no interface has (locally administered, unicast): frames sent to it are dropped by the peer.
NOWHERE_MAC = "02:00:00:00:0c:0c"


class NetnsUnavailable(RuntimeError):
    """This machine cannot give a host a network of its own (not root, no namespaces, no veth)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and r.returncode:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {(r.stderr or r.stdout).strip() or r.returncode}")
    return r


@dataclass(frozen=True)
class Island:
    name: str
    outer: str
    inner: str
    outer_ip: str
    inner_ip: str

    @property
    def prefix(self) -> list[str]:
        """Command prefix that runs a process inside the island (network namespace only)."""
        return ["nsenter", f"--net=/run/netns/{self.name}", "--"]

    def cut(self) -> None:
        """Drop every frame between the island and the outside, both ways."""
        _ip("-n", self.name, "neigh", "replace", self.outer_ip, "lladdr", NOWHERE_MAC, "dev", self.inner,
            "nud", "permanent")
        _ip("neigh", "replace", self.inner_ip, "lladdr", NOWHERE_MAC, "dev", self.outer, "nud", "permanent")

    def heal(self) -> None:
        """Undo `cut` (idempotent)."""
        _ip("-n", self.name, "neigh", "del", self.outer_ip, "dev", self.inner, check=False)
        _ip("neigh", "del", self.inner_ip, "dev", self.outer, check=False)

    def close(self) -> None:
        """Remove the namespace and the pair (deleting one end deletes both)."""
        _ip("link", "del", self.outer, check=False)
        _ip("netns", "del", self.name, check=False)


def _free_subnet() -> int:
    """A third octet K whose 10.231.K.0/30 no interface here uses."""
    used = _ip("-4", "-o", "addr", "show").stdout
    for _ in range(100):
        k = random.randrange(256)
        if f"10.231.{k}." not in used:
            return k
    raise NetnsUnavailable("no free 10.231.K.0/30 for the island's veth pair")


def create() -> Island:
    """A namespace with loopback up and a veth pair to this machine's namespace, both ends addressed."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root (ip netns add); run the fault matrix as root")
    tag = f"{os.getpid() % 100000}{random.randrange(100):02d}"
    k = _free_subnet()
    island = Island(name=f"cwpart{tag}", outer=f"cwp{tag}o", inner=f"cwp{tag}i", outer_ip=f"10.231.{k}.1",
                    inner_ip=f"10.231.{k}.2")
    _ip("netns", "add", island.name)
    try:
        _ip("link", "add", island.outer, "type", "veth", "peer", "name", island.inner)
        _ip("link", "set", island.inner, "netns", island.name)
        _ip("addr", "add", f"{island.outer_ip}/30", "dev", island.outer)
        _ip("link", "set", island.outer, "up")
        _ip("-n", island.name, "addr", "add", f"{island.inner_ip}/30", "dev", island.inner)
        _ip("-n", island.name, "link", "set", island.inner, "up")
        _ip("-n", island.name, "link", "set", "lo", "up")
    except BaseException:
        island.close()
        raise
    return island
