"""Prometheus exporter for Meta's Threads API."""

__version__ = "0.2.0"
