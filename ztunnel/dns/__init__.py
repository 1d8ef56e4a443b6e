"""The ztunnel DNS proxy (port 15053): mesh names answered locally, the rest forwarded."""
