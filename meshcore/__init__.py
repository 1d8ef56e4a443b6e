"""Runtime shared by every mesh component: identity and TLS, HBONE, push client, telemetry, admin."""
