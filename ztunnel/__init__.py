"""Node proxy (L4): HBONE tunnels, capture, L4 authorization, Istio TCP telemetry."""
