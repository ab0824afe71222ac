#!/usr/bin/env python3
"""Write base/prometheusrule.yaml: the bundled prometheus/rules.yml as a Prometheus Operator
PrometheusRule. Run after editing the rules; tests/test_deploy.py fails on drift.

    python deploy/kubernetes/generate_prometheusrule.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "rules.yml"
OUTPUT = Path(__file__).resolve().parent / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from prometheus/rules.yml by deploy/kubernetes/generate_prometheusrule.py.
# Do not edit: change the rules there and re-run the script.
# Adjust the `release` label to what your Prometheus' ruleSelector wants.
"""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line strings (descriptions, long expressions) as readable block scalars.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render(rules_text: str) -> str:
    rules: dict[str, Any] = yaml.safe_load(rules_text)
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
        raise ValueError(f"{RULES}: no `groups` list")
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "threads-exporter",
            "labels": {"app.kubernetes.io/name": "threads-exporter", "release": "prometheus"},
        },
        "spec": {"groups": rules["groups"]},
    }
    return HEADER + yaml.dump(resource, Dumper=_Dumper, sort_keys=False, width=10000,
                              allow_unicode=True)


def main(argv: list[str]) -> int:
    text = render(RULES.read_text())
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
