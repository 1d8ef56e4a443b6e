"""Linux network helpers shared by the proxies: entering network namespaces, socket options for capture."""
