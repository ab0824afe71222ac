"""The metric contract, as the tests read it: derived from the package's metric table
(threads_exporter.metrics), never restated here."""

from threads_exporter.metrics import LABEL_VALUES, SPECS

# Family name -> labels (job and instance come from Prometheus); `up` is Prometheus' own.
CONTRACT: dict[str, set[str]] = {s.name: set(s.labels) for s in SPECS} | {"up": set()}
KINDS: dict[str, str] = {s.name: s.kind for s in SPECS}
HELP: dict[str, str] = {s.name: s.help for s in SPECS}
HISTOGRAMS = {s.name for s in SPECS if s.kind == "histogram"}
# Every series name a query may select: histograms expand to _bucket/_sum/_count.
SERIES = {f"{name}{suffix}" for name in CONTRACT
          for suffix in (("_bucket", "_sum", "_count") if name in HISTOGRAMS else ("",))}
# Present only when Meta sends call-volume headers, which the demo's simulator does not.
OPTIONAL = {"threads_api_usage_ratio"}
BOUNDED = LABEL_VALUES
