"""Mesh identity: SPIFFE IDs, workload certificates, the CA client and the HBONE TLS contexts.

Split by responsibility: :mod:`spiffe` (the identity value), :mod:`certs` (reading certificates),
:mod:`tls` (HBONE contexts and the post-handshake identity checks), :mod:`ca_wire` (the ``/v1/ca``
message shapes), :mod:`ca_client` (talking to istiod_lite), :mod:`schedule` (the I/O-free refresh and
backoff core) and :mod:`manager` (the trio shell that keeps one certificate per local identity).
"""
