"""istiod_lite on Kubernetes: the API client seam, the watching store, TokenReview authentication, the waypoint
controller and the install manifests (rendered by ``meshctl install`` and written to ``deploy/``)."""
