"""The monitoring bundle of threads-exporter, as a monitoring mixin.

One config (``config.py``, the mixin's ``_config``) drives everything: the alert and
recording rules (``alerts.py``), the Grafana dashboards (``dashboards.py``) and the jsonnet
mixin that carries both (``jsonnet.py``). ``python monitoring/generate.py`` writes every
output file; ``--check`` fails when a committed one is stale.
"""
