"""The HTTP front: server, routes, and the exporter-toolkit web config (TLS, basic auth)."""
