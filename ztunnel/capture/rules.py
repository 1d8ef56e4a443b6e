"""The in-pod capture rules (istio-cni's in-pod mode), rendered as data and applied inside a pod.

What the rules do, in the pod's own namespace (nothing is installed on the host):

- **outbound** — nat OUTPUT: TCP leaving the pod is REDIRECTed to ztunnel's 15001, except traffic
  marked 0x539 (ztunnel's own sockets), loopback traffic, and packets of connections carrying the
  0x111 connmark (replies of ztunnel's transparent inbound connections). DNS (UDP 53) goes to 15053.
- **inbound** — nat PREROUTING: TCP arriving on the pod's interface is REDIRECTed to 15006 (plaintext
  capture), except HBONE on 15008, which reaches ztunnel's in-pod 15008 listener unchanged.
- **return path** — ztunnel connects to the app from an IP_TRANSPARENT socket bound to the client's
  address and marked 0x539. mangle PREROUTING turns that mark into connmark 0x111; mangle OUTPUT
  copies it back onto the app's replies, and ``ip rule fwmark 0x111 lookup 100`` with ``local
  default dev lo table 100`` delivers those replies (addressed to a foreign IP) to ztunnel's socket.

Istio steers inbound with mangle TPROXY instead of nat REDIRECT. Both work with iptables-nft here;
we use REDIRECT (as DESIGN §4 states) because a TPROXY target *drops* packets unless the listener has
IP_TRANSPARENT, while REDIRECT works with any listener and still yields the original destination
through ``SO_ORIGINAL_DST`` on 15001 and 15006 alike. Istio's host-probe (169.254.7.127) exemption is
left out: no kubelet probes pods here. IPv4 only — pod addresses come from 198.18.0.0/15.

Listener addresses that follow from this: 15001 must accept on 127.0.0.1 (REDIRECT from OUTPUT sends
to loopback), 15006 on the pod IP, and the UDP DNS proxy must be bound to ``127.0.0.1:15053`` — a UDP
reply only has its NAT undone when it leaves from the very address the query was redirected to; a
``0.0.0.0`` bind answers from the pod IP and the app drops the answer. Binding ``0.0.0.0`` for the TCP
ports covers both.

Rendering is pure (:func:`render_pod_rules`); :func:`install_pod_rules` / :func:`remove_pod_rules`
feed the result to ``iptables-restore --noflush`` and ``ip`` inside the pod's namespace.
"""

from __future__ import annotations

import shutil

import attrs

from ztunnel.capture.commands import run_command

PRERT_CHAIN = "ISTIO_PRERT"
OUTPUT_CHAIN = "ISTIO_OUTPUT"


@attrs.frozen
class CaptureConfig:
    """Ports and marks of DESIGN §3/§4 (Istio's values by default)."""

    outbound_port: int = 15001
    inbound_plaintext_port: int = 15006
    hbone_port: int = 15008
    dns_port: int = 15053
    proxy_mark: int = 0x539
    conn_mark: int = 0x111
    mark_mask: int = 0xFFF
    route_table: int = 100
    rule_priority: int = 32764
    redirect_dns: bool = True


@attrs.frozen
class PodRules:
    """Everything one pod's capture needs: restore scripts plus ``ip`` arguments to add and remove."""

    iptables_install: str
    iptables_remove: str
    ip_install: tuple[tuple[str, ...], ...]
    ip_remove: tuple[tuple[str, ...], ...]

    def rule_lines(self, table: str) -> list[str]:
        """The ``-A`` lines of one table, for inspection and tests."""
        lines, current = [], ""
        for line in self.iptables_install.splitlines():
            if line.startswith("*"):
                current = line[1:]
            elif current == table and line.startswith("-A "):
                lines.append(line)
        return lines


def _mangle_rules(cfg: CaptureConfig) -> list[str]:
    mark, conn, mask = f"{cfg.proxy_mark:#x}/{cfg.mark_mask:#x}", f"{cfg.conn_mark:#x}", f"{cfg.mark_mask:#x}"
    return [
        f"-A PREROUTING -j {PRERT_CHAIN}",
        f"-A OUTPUT -j {OUTPUT_CHAIN}",
        # ztunnel's transparent connections to the app: remember them on the conntrack entry
        f"-A {PRERT_CHAIN} -m mark --mark {mark} -j CONNMARK --set-xmark {conn}/{mask}",
        # the app's replies on those connections get the mark back, which reroutes them to lo
        f"-A {OUTPUT_CHAIN} -m connmark --mark {conn}/{mask} "
        "-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
    ]


def _nat_rules(cfg: CaptureConfig) -> list[str]:
    proxy = f"{cfg.proxy_mark:#x}/{cfg.mark_mask:#x}"
    conn = f"{cfg.conn_mark:#x}/{cfg.mark_mask:#x}"
    rules = [
        f"-A PREROUTING -j {PRERT_CHAIN}",
        f"-A OUTPUT -j {OUTPUT_CHAIN}",
        f"-A {PRERT_CHAIN} -i lo -j RETURN",
        f"-A {PRERT_CHAIN} -p tcp -m tcp --dport {cfg.hbone_port} -j RETURN",
        f"-A {PRERT_CHAIN} -m mark --mark {proxy} -j RETURN",
        f"-A {PRERT_CHAIN} -p tcp -j REDIRECT --to-ports {cfg.inbound_plaintext_port}",
    ]
    if cfg.redirect_dns:
        rules.append(
            f"-A {OUTPUT_CHAIN} ! -o lo -p udp -m udp --dport 53 -m mark ! --mark {proxy} "
            f"-j REDIRECT --to-ports {cfg.dns_port}"
        )
    rules += [
        f"-A {OUTPUT_CHAIN} -p tcp -m mark --mark {conn} -j RETURN",
        f"-A {OUTPUT_CHAIN} ! -d 127.0.0.1/32 -o lo -j RETURN",
        f"-A {OUTPUT_CHAIN} ! -d 127.0.0.1/32 -p tcp -m mark ! --mark {proxy} "
        f"-j REDIRECT --to-ports {cfg.outbound_port}",
    ]
    return rules


def _table(name: str, lines: list[str]) -> list[str]:
    return [f"*{name}", f":{PRERT_CHAIN} - [0:0]", f":{OUTPUT_CHAIN} - [0:0]", *lines, "COMMIT"]


def _removal(name: str) -> list[str]:
    return [
        f"*{name}",
        f"-D PREROUTING -j {PRERT_CHAIN}",
        f"-D OUTPUT -j {OUTPUT_CHAIN}",
        f"-F {PRERT_CHAIN}",
        f"-F {OUTPUT_CHAIN}",
        f"-X {PRERT_CHAIN}",
        f"-X {OUTPUT_CHAIN}",
        "COMMIT",
    ]


def render_pod_rules(cfg: CaptureConfig | None = None) -> PodRules:
    """The in-pod rule set for ``cfg`` (Istio's defaults when None; pure: same input, same text)."""
    cfg = cfg if cfg is not None else CaptureConfig()
    install = _table("mangle", _mangle_rules(cfg)) + _table("nat", _nat_rules(cfg))
    remove = _removal("mangle") + _removal("nat")
    rule = (
        "rule",
        "add",
        "fwmark",
        f"{cfg.conn_mark:#x}/{cfg.mark_mask:#x}",
        "pref",
        str(cfg.rule_priority),
        "lookup",
        str(cfg.route_table),
    )
    route = ("route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", str(cfg.route_table))
    return PodRules(
        iptables_install="\n".join(install) + "\n",
        iptables_remove="\n".join(remove) + "\n",
        ip_install=(rule, route),
        ip_remove=(
            ("rule", "del", *rule[2:]),
            ("route", "flush", "table", str(cfg.route_table)),
        ),
    )


def iptables_restore_binary() -> str:
    """``iptables-nft-restore`` where installed (DESIGN §7: the nft backend), else ``iptables-restore``."""
    return "iptables-nft-restore" if shutil.which("iptables-nft-restore") else "iptables-restore"


def iptables_save_binary() -> str:
    """The ``-save`` twin of :func:`iptables_restore_binary`."""
    return "iptables-nft-save" if shutil.which("iptables-nft-save") else "iptables-save"


async def rules_present(netns: str) -> bool:
    """True when our chains exist in the pod namespace ``netns``."""
    saved = await run_command(["ip", "netns", "exec", netns, iptables_save_binary()])
    return f":{PRERT_CHAIN} " in saved


async def install_pod_rules(netns: str, rules: PodRules) -> None:
    """Install ``rules`` in the named pod namespace; replaces an earlier install instead of doubling it."""
    if await rules_present(netns):
        await remove_pod_rules(netns, rules)
    restore = ["ip", "netns", "exec", netns, iptables_restore_binary(), "--noflush"]
    await run_command(restore, stdin=rules.iptables_install.encode())
    for args in rules.ip_install:
        await run_command(["ip", "-n", netns, *args])


async def remove_pod_rules(netns: str, rules: PodRules) -> None:
    """Remove what :func:`install_pod_rules` added; tolerant of parts already gone."""
    if await rules_present(netns):
        restore = ["ip", "netns", "exec", netns, iptables_restore_binary(), "--noflush"]
        await run_command(restore, stdin=rules.iptables_remove.encode())
    for args in rules.ip_remove:
        await run_command(["ip", "-n", netns, *args], check=False)
