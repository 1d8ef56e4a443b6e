"""L7 proxy: Istio routing, canary splits, resilience, fault injection, L7 authorization."""
