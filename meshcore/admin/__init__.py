"""The HTTP/1.1 server (and a tiny client) behind every component's admin, metrics and readiness ports.

- :mod:`.http` — :class:`~meshcore.admin.http.AdminServer`, a trio + h11 route-table server.
- :mod:`.client` — :func:`~meshcore.admin.client.http_request` and a keep-alive connection.
- :mod:`.messages` — the plain request/response values both share.
- :mod:`.endpoints` — the standard handlers (``/metrics``, ``/healthz/ready``, ``/logging``, ...).
- :mod:`.ports` — a component's admin (15000), metrics (15020) and readiness (15021) servers together.
"""
