"""Media containers: the stateful half of the exporter (registration API, SQLite, polling)."""
