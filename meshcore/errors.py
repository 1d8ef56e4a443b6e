"""One error taxonomy for the mesh.

Every error a user or operator can meet carries a *hint*: what to check next. Subsystems subclass
:class:`MeshError` and fill in ``hint`` (a format string over the keyword arguments given at raise
time) and, where the error ends a proxied connection or request, the Envoy/Istio ``response_flag``
that telemetry reports for it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MeshError(Exception):
    """Base of every error the mesh raises on purpose."""

    hint: ClassVar[str] = ""
    response_flag: ClassVar[str] = "-"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        if not self.hint:
            return self.message
        try:
            hint = self.hint.format(**self.context)
        except (KeyError, IndexError):
            hint = self.hint
        return f"{self.message} (hint: {hint})"
