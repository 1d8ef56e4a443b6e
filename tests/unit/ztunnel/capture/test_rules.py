"""Rendering of the in-pod rules: which line does what, for Istio's defaults and for other settings."""

from __future__ import annotations

import pytest

from ztunnel.capture.rules import CaptureConfig, render_pod_rules

DEFAULT = render_pod_rules()


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            "nat",
            [
                "-A PREROUTING -j ISTIO_PRERT",
                "-A OUTPUT -j ISTIO_OUTPUT",
                "-A ISTIO_PRERT -i lo -j RETURN",
                "-A ISTIO_PRERT -p tcp -m tcp --dport 15008 -j RETURN",
                "-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j RETURN",
                "-A ISTIO_PRERT -p tcp -j REDIRECT --to-ports 15006",
                "-A ISTIO_OUTPUT ! -o lo -p udp -m udp --dport 53 -m mark ! --mark 0x539/0xfff "
                "-j REDIRECT --to-ports 15053",
                "-A ISTIO_OUTPUT -p tcp -m mark --mark 0x111/0xfff -j RETURN",
                "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -j RETURN",
                "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff "
                "-j REDIRECT --to-ports 15001",
            ],
        ),
        (
            "mangle",
            [
                "-A PREROUTING -j ISTIO_PRERT",
                "-A OUTPUT -j ISTIO_OUTPUT",
                "-A ISTIO_PRERT -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff",
                "-A ISTIO_OUTPUT -m connmark --mark 0x111/0xfff "
                "-j CONNMARK --restore-mark --nfmask 0xffffffff --ctmask 0xffffffff",
            ],
        ),
        ("filter", []),
    ],
)
def test_default_rules_per_table(table: str, expected: list[str]) -> None:
    assert DEFAULT.rule_lines(table) == expected


@pytest.mark.parametrize(
    ("config", "present", "absent"),
    [
        (CaptureConfig(redirect_dns=False), [], ["--dport 53"]),
        (
            CaptureConfig(outbound_port=25001, inbound_plaintext_port=25006, hbone_port=25008),
            ["--to-ports 25001", "--to-ports 25006", "--dport 25008 -j RETURN"],
            ["15001", "15006", "15008"],
        ),
        (CaptureConfig(proxy_mark=0x42), ["--mark 0x42/0xfff -j RETURN", "! --mark 0x42/0xfff"], ["0x539"]),
        (
            CaptureConfig(conn_mark=0x222),
            ["--set-xmark 0x222/0xfff", "--mark 0x222/0xfff -j RETURN"],
            ["0x111"],
        ),
        (CaptureConfig(dns_port=5353), ["--to-ports 5353"], ["15053"]),
    ],
)
def test_settings_reach_the_rendered_rules(
    config: CaptureConfig, present: list[str], absent: list[str]
) -> None:
    text = render_pod_rules(config).iptables_install
    for fragment in present:
        assert fragment in text
    for fragment in absent:
        assert fragment not in text


@pytest.mark.parametrize(
    ("config", "rule", "route"),
    [
        (
            CaptureConfig(),
            ("rule", "add", "fwmark", "0x111/0xfff", "pref", "32764", "lookup", "100"),
            ("route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100"),
        ),
        (
            CaptureConfig(conn_mark=0x222, route_table=133, rule_priority=100),
            ("rule", "add", "fwmark", "0x222/0xfff", "pref", "100", "lookup", "133"),
            ("route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "133"),
        ),
    ],
)
def test_policy_routing_for_the_transparent_return_path(
    config: CaptureConfig, rule: tuple[str, ...], route: tuple[str, ...]
) -> None:
    rendered = render_pod_rules(config)
    assert rendered.ip_install == (rule, route)
    assert rendered.ip_remove == (("rule", "del", *rule[2:]), ("route", "flush", "table", route[-1]))


def test_removal_undoes_every_jump_and_chain_the_install_creates() -> None:
    install = DEFAULT.iptables_install.splitlines()
    remove = DEFAULT.iptables_remove.splitlines()
    jumps = [line for line in install if line.startswith(("-A PREROUTING", "-A OUTPUT"))]
    assert sorted(line.replace("-A ", "-D ", 1) for line in jumps) == sorted(
        line for line in remove if line.startswith("-D ")
    )
    chains = {line[1:].split()[0] for line in install if line.startswith(":")}
    assert {line.split()[1] for line in remove if line.startswith("-X ")} == chains
    # each table section is committed, so iptables-restore applies all of it or nothing
    assert install.count("COMMIT") == remove.count("COMMIT") == 2


def test_outbound_capture_excludes_proxy_traffic_before_redirecting() -> None:
    """Order is semantics: ztunnel's own (marked) sockets must never reach the REDIRECT to 15001."""
    nat = DEFAULT.rule_lines("nat")
    redirect = next(i for i, line in enumerate(nat) if "--to-ports 15001" in line)
    reply_bypass = next(i for i, line in enumerate(nat) if "--mark 0x111/0xfff -j RETURN" in line)
    assert reply_bypass < redirect
    assert "! --mark 0x539/0xfff" in nat[redirect]
    hbone_bypass = next(i for i, line in enumerate(nat) if "--dport 15008 -j RETURN" in line)
    inbound = next(i for i, line in enumerate(nat) if "--to-ports 15006" in line)
    assert hbone_bypass < inbound
