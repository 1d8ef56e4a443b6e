"""Benchmarks of the mesh side by side with a direct connection and with Envoy (see bench/README.md)."""
