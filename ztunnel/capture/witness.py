"""A traffic witness on a pod's interface: packet counters by kind, to prove what crossed between pods.

The mesh's promise in netns mode is that between pods only HBONE (TCP 15008) is seen. The witness
installs counting-only rules (every rule RETURNs; nothing is dropped or changed) in the pod's mangle
table for packets leaving and entering its ``eth0``, and reads their counters back:

    hbone      TCP to or from port 15008 (the tunnel, in either role)
    other_tcp  any other TCP (plaintext that escaped capture)
    udp        UDP (DNS forwarded by ztunnel, or escaped queries)
    other      anything else that is IP (ICMP …)

Why mangle POSTROUTING/PREROUTING and not filter OUTPUT/INPUT: the LOCAL_OUT hooks all see the
output device chosen *before* nat OUTPUT redirected the packet to loopback, so ``filter OUTPUT -o
eth0`` counts captured packets that never left the pod. POSTROUTING runs after rerouting and sees the
real device; PREROUTING sees every packet that arrives on ``eth0`` before anything rewrites it.

Rendering and parsing are pure; install/read/remove run ``iptables-restore``/``-save`` in the pod.
"""

from __future__ import annotations

import re

import attrs

from ztunnel.capture.commands import run_command
from ztunnel.capture.rules import iptables_restore_binary, iptables_save_binary

OUT_CHAIN = "AM_WITNESS_OUT"
IN_CHAIN = "AM_WITNESS_IN"
KINDS = ("hbone", "other_tcp", "udp", "other")
_COUNTED = re.compile(r'^\[(\d+):(\d+)\] -A (AM_WITNESS_(?:OUT|IN)) .*--comment "?am:(\w+)"?')


@attrs.frozen
class Count:
    """Packets and bytes of one kind in one direction."""

    packets: int = 0
    bytes: int = 0


@attrs.frozen
class WitnessCounts:
    """What crossed the pod's interface since the witness was installed."""

    sent: dict[str, Count]
    received: dict[str, Count]

    def packets(self, kind: str) -> int:
        """Packets of ``kind`` in both directions."""
        return self.sent[kind].packets + self.received[kind].packets


def _kind_rules(chain: str, hbone_port: int) -> list[str]:
    def counted(match: str, kind: str) -> str:
        return f'-A {chain} {match}-m comment --comment "am:{kind}" -j RETURN'

    return [
        counted(f"-p tcp -m tcp --dport {hbone_port} ", "hbone"),
        counted(f"-p tcp -m tcp --sport {hbone_port} ", "hbone"),
        counted("-p tcp ", "other_tcp"),
        counted("-p udp ", "udp"),
        counted("", "other"),
    ]


def render_witness(interface: str = "eth0", hbone_port: int = 15008) -> tuple[str, str]:
    """``(install, remove)`` scripts for ``iptables-restore --noflush`` (pure)."""
    install = [
        "*mangle",
        f":{OUT_CHAIN} - [0:0]",
        f":{IN_CHAIN} - [0:0]",
        f"-A POSTROUTING -o {interface} -j {OUT_CHAIN}",
        f"-A PREROUTING -i {interface} -j {IN_CHAIN}",
        *_kind_rules(OUT_CHAIN, hbone_port),
        *_kind_rules(IN_CHAIN, hbone_port),
        "COMMIT",
    ]
    remove = [
        "*mangle",
        f"-D POSTROUTING -o {interface} -j {OUT_CHAIN}",
        f"-D PREROUTING -i {interface} -j {IN_CHAIN}",
        f"-F {OUT_CHAIN}",
        f"-F {IN_CHAIN}",
        f"-X {OUT_CHAIN}",
        f"-X {IN_CHAIN}",
        "COMMIT",
    ]
    return "\n".join(install) + "\n", "\n".join(remove) + "\n"


def parse_counts(saved: str) -> WitnessCounts:
    """Sum the witness counters out of ``iptables-save -c`` output (pure)."""
    totals: dict[str, dict[str, list[int]]] = {
        OUT_CHAIN: {kind: [0, 0] for kind in KINDS},
        IN_CHAIN: {kind: [0, 0] for kind in KINDS},
    }
    for line in saved.splitlines():
        match = _COUNTED.match(line)
        if match is None or match.group(4) not in KINDS:
            continue
        slot = totals[match.group(3)][match.group(4)]
        slot[0] += int(match.group(1))
        slot[1] += int(match.group(2))

    def counts(chain: str) -> dict[str, Count]:
        return {kind: Count(packets, size) for kind, (packets, size) in totals[chain].items()}

    return WitnessCounts(sent=counts(OUT_CHAIN), received=counts(IN_CHAIN))


async def install_witness(netns: str, interface: str = "eth0", hbone_port: int = 15008) -> None:
    """Start counting on the pod's interface (counters start at zero)."""
    install, _ = render_witness(interface, hbone_port)
    restore = ["ip", "netns", "exec", netns, iptables_restore_binary(), "--noflush"]
    await run_command(restore, stdin=install.encode())


async def read_witness(netns: str) -> WitnessCounts:
    """The counters so far."""
    saved = await run_command(["ip", "netns", "exec", netns, iptables_save_binary(), "-c", "-t", "mangle"])
    return parse_counts(saved)


async def remove_witness(netns: str, interface: str = "eth0", hbone_port: int = 15008) -> None:
    """Stop counting and remove the witness rules."""
    _, remove = render_witness(interface, hbone_port)
    restore = ["ip", "netns", "exec", netns, iptables_restore_binary(), "--noflush"]
    await run_command(restore, stdin=remove.encode())
