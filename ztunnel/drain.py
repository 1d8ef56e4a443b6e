"""Graceful shutdown for a proxy: stop accepting, let open connections finish, then give up.

``/quitquitquit`` and SIGTERM call :meth:`Drain.request`. Every listener accepts inside
:meth:`Drain.accepting`, whose cancel scope the request cancels, so no new connection is taken once a
drain starts (and a listener started later never accepts at all). Every proxied connection runs
inside :meth:`Drain.connection`; the owner waits for :meth:`Drain.wait_idle` with its deadline and
then cancels whatever is still open.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import trio


class Drain:
    def __init__(self) -> None:
        self._requested = trio.Event()
        self._idle = trio.Event()
        self._idle.set()
        self._active = 0
        self._accept_scopes: set[trio.CancelScope] = set()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    @property
    def active(self) -> int:
        """Connections currently being proxied."""
        return self._active

    def request(self) -> None:
        """Start draining (idempotent): every accept loop stops now."""
        self._requested.set()
        for scope in list(self._accept_scopes):
            scope.cancel()

    async def wait_requested(self) -> None:
        await self._requested.wait()

    async def wait_idle(self) -> None:
        """Return once no connection is open (at once if none is)."""
        while self._active:
            await self._idle.wait()

    @contextmanager
    def accepting(self) -> Iterator[trio.CancelScope]:
        """A scope to accept in; cancelled when a drain starts (already cancelled if one has)."""
        scope = trio.CancelScope()
        if self.requested:
            scope.cancel()
        self._accept_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._accept_scopes.discard(scope)

    @contextmanager
    def connection(self) -> Iterator[None]:
        """Count one proxied connection for as long as the block runs."""
        if self._active == 0:
            self._idle = trio.Event()
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
