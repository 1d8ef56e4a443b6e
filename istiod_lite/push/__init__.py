"""Config push to proxies: per-subscriber delta state (sans-IO), debounce, and the WebSocket server."""
