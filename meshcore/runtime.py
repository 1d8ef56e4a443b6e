"""Process-wide settings of the Python runtime for the proxies' hot paths.

CPython's cyclic garbage collector runs a generation-0 pass every 700 net allocations of container
objects, and a proxy allocates several per request (events, header lists, frames), so under load it
collects thousands of times a second and every tenth pass walks generation 1, every hundredth the whole
heap — pauses that land in the tail latency. Almost nothing a proxy allocates per request forms a
cycle (reference counting frees it), so collecting less often costs little memory. After start-up,
:func:`tune_gc` also freezes everything allocated so far (modules, configuration, certificates) into
the permanent generation, so full collections no longer walk it.
"""

from __future__ import annotations

import gc

#: Generation-0 allocations between collections (CPython's default is 700); older generations as default.
GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Collect less often, and stop scanning what start-up allocated (call once the process is ready)."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
