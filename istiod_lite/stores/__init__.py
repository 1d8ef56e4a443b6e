"""Where istiod_lite's user resources come from: one watchable interface over directory and applied stores."""
