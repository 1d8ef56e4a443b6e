"""The push-latency core: from a version's publication (or the proxy's arrival) to each proxy's ACK."""

from __future__ import annotations

import pytest

from istiod_lite.convergence import AckRow, ConvergenceTracker

CASES = [
    # (name, steps, expected samples of the last step) — a step is (catalog, rows, now)
    (
        "an ACK of the published version is measured from its publication",
        [
            ({"service": "v1"}, [AckRow("a", "service", None)], 10.0),
            ({"service": "v1"}, [AckRow("a", "service", "v1")], 10.25),
        ],
        [("service", 0.25)],
    ),
    (
        "the same ACK is counted once",
        [
            ({"service": "v1"}, [], 0.0),
            ({"service": "v1"}, [AckRow("a", "service", "v1")], 1.0),
            ({"service": "v1"}, [AckRow("a", "service", "v1")], 2.0),
        ],
        [],
    ),
    (
        "an ACK of an older version is no sample for the newer one",
        [
            ({"service": "v1"}, [AckRow("a", "service", None)], 0.0),
            ({"service": "v2"}, [AckRow("a", "service", "v1")], 1.0),
        ],
        [],
    ),
    (
        "a proxy that arrives later is measured from its arrival, not the version's age",
        [
            ({"service": "v1"}, [], 0.0),
            ({"service": "v1"}, [AckRow("b", "service", None)], 100.0),
            ({"service": "v1"}, [AckRow("b", "service", "v1")], 100.5),
        ],
        [("service", 0.5)],
    ),
    (
        "a new version is measured again for a proxy that ACKed the previous one",
        [
            ({"service": "v1"}, [AckRow("a", "service", "v1")], 0.0),
            ({"service": "v2"}, [AckRow("a", "service", "v1")], 5.0),
            ({"service": "v2"}, [AckRow("a", "service", "v2")], 5.1),
        ],
        [("service", pytest.approx(0.1))],
    ),
    (
        "types are independent",
        [
            ({"service": "v1", "workload": "w1"}, [AckRow("a", "service", None)], 0.0),
            ({"service": "v1", "workload": "w1"}, [AckRow("a", "workload", "w1"), AckRow("a", "service", None)], 2.0),
        ],
        [("workload", 2.0)],
    ),
]


@pytest.mark.parametrize(("name", "steps", "expected"), CASES, ids=[c[0] for c in CASES])
def test_convergence(
    name: str, steps: list[tuple[dict[str, str], list[AckRow], float]], expected: list[object]
) -> None:
    tracker = ConvergenceTracker()
    samples: list[tuple[str, float]] = []
    for catalog, rows, now in steps:
        tracker.on_catalog(catalog, now)
        samples = tracker.on_status(rows, now)
    assert samples == expected


def test_a_reconnected_proxy_is_measured_afresh_after_being_forgotten() -> None:
    tracker = ConvergenceTracker()
    tracker.on_catalog({"service": "v1"}, 0.0)
    assert tracker.on_status([AckRow("a", "service", None)], 0.0) == []
    assert tracker.on_status([AckRow("a", "service", "v1")], 1.0) == [("service", 1.0)]
    tracker.forget([])  # "a" disconnected
    assert tracker.on_status([AckRow("a", "service", None)], 50.0) == []
    [(type_name, seconds)] = tracker.on_status([AckRow("a", "service", "v1")], 50.2)
    assert type_name == "service" and seconds == pytest.approx(0.2)
