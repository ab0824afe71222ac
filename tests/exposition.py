"""Reading what an exporter exposes: one parser (prometheus_client's) for every test.

    found = samples(text)                      # {(sample name, labels): value}
    value(found, "threads_up", account="a")   # one series, or None when absent
    series(found, "threads_quota_usage", account="a")   # every series with these labels
    by_label(found, "threads_up", "account")  # {"a": 1.0, "b": 0.0}
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def labels(**pairs: str) -> Labels:
    return frozenset(pairs.items())


def samples(text: str) -> Samples:
    """Exposition text -> {(sample name, labels): value}."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **pairs: str) -> float | None:
    """The value of the series with exactly these labels, or None when there is none."""
    return found.get((name, labels(**pairs)))


def series(found: Samples, name: str, **pairs: str) -> dict[Labels, float]:
    """Every series of `name` whose labels include `pairs`."""
    want = set(pairs.items())
    return {lbl: v for (n, lbl), v in found.items() if n == name and want <= lbl}


def by_label(found: Samples, name: str, label: str, **pairs: str) -> dict[str, float]:
    """{value of `label`: sample value} over the series of `name` that include `pairs`."""
    return {dict(lbl)[label]: v for lbl, v in series(found, name, **pairs).items()}


def label_names(text: str) -> dict[str, set[str]]:
    """{metric: the label names its series carry}; a histogram's series count under the
    family name, without `le`."""
    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name
            if family.type == "histogram":
                for suffix in HISTOGRAM_SUFFIXES:
                    name = name.removesuffix(suffix)
            found.setdefault(name, set()).update(set(s.labels) - {"le"})
    return found


def scrape(url: str, *, timeout_header: float | None = None, timeout: float = 15.0,
           **params: str) -> Samples:
    """GET an exposition (as Prometheus would, with its scrape timeout header) and parse it;
    anything but a 200 fails the test."""
    headers = ({} if timeout_header is None
               else {"X-Prometheus-Scrape-Timeout-Seconds": str(timeout_header)})
    r = httpx.get(url, params=params or None, headers=headers, timeout=timeout)
    assert r.status_code == 200, (url, r.status_code, r.text[:500])
    return samples(r.text)
