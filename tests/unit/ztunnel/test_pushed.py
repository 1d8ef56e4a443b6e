"""The push applier: a good push changes state and notifies; a bad one raises (the NACK) and changes
nothing; a full push replaces the type. Plus the control-plane settings checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.discovery import Workload, to_json
from ztunnel.config import ZtunnelConfig
from ztunnel.pushed import ControlPlaneSettingsError, PushedState, connect_control_plane
from ztunnel.state import ProxyState, RejectedUpdate

A = Workload(uid="a", name="a", namespace="ns", addresses=("10.0.0.1",), node="n")
B = Workload(uid="b", name="b", namespace="ns", addresses=("10.0.0.2",), node="n")


def test_apply_notifies_and_full_replaces() -> None:
    state = ProxyState()
    changes: list[int] = []
    applier = PushedState(state, lambda: changes.append(state.generation))
    applier.apply("workload", {"a": to_json(A), "b": to_json(B)}, [], False)
    assert [w.uid for w in state.workloads()] == ["a", "b"] and changes == [1]
    applier.apply("workload", {"b": to_json(B)}, [], True)
    assert [w.uid for w in state.workloads()] == ["b"] and changes == [1, 2]
    applier.apply("workload", {}, ["b"], False)
    assert state.workloads() == [] and changes == [1, 2, 3]


def test_a_rejected_push_changes_nothing_and_does_not_notify() -> None:
    state = ProxyState()
    changes: list[int] = []
    applier = PushedState(state, lambda: changes.append(1))
    applier.apply("workload", {"a": to_json(A)}, [], False)
    clash = to_json(Workload(uid="c", name="c", namespace="ns", addresses=("10.0.0.1",)))
    with pytest.raises(RejectedUpdate, match=r"both claim address 10\.0\.0\.1"):
        applier.apply("workload", {"c": clash}, [], False)
    assert [w.uid for w in state.workloads()] == ["a"] and changes == [1]


def test_missing_token_file_is_named(tmp_path: Path) -> None:
    config = ZtunnelConfig(node="n", node_address="127.0.0.1", istiod="wss://127.0.0.1:15012/v1/xds",
                           token_file=tmp_path / "absent.token", root_cert=tmp_path / "root.pem")
    with pytest.raises(ControlPlaneSettingsError, match=r"absent\.token"):
        connect_control_plane(config, ProxyState(), lambda: None)
