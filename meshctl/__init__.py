"""meshctl: the command line and the local runner."""
