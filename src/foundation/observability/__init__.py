"""Observability: the live dashboard (with its Prometheus endpoint) and ``foundation status``."""
