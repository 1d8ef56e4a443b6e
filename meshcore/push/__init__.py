"""The proxy side of config push: the wire protocol (sans-IO) and the reconnecting client."""
