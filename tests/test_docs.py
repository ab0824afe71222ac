"""The README and the package's layout keep the promises the README makes about them."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

from contract import CONTRACT, SERIES
from procs import REPO

PACKAGE = REPO / "exporter" / "threads_exporter"
# Words of that shape that are no metric: the package, an endpoint, Meta's permission scopes.
NOT_METRICS = {"threads_exporter", "threads_publishing_limit", "threads_basic",
               "threads_content_publish", "threads_delete", "threads_manage_replies",
               "threads_location_tagging",
               # Old names, named only in the README's upgrade notes.
               "threads_config_last_reload_successful", "threads_container_store_up"}


def test_readme_metric_table_is_generated_from_the_metric_table() -> None:
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "readme_tables.py"), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_every_metric_the_docs_name_exists() -> None:
    """A renamed metric must not live on in prose, a dashboard description or a runbook."""
    docs = [REPO / "README.md", REPO / "dashboards" / "README.md", REPO / "deploy" / "README.md",
            REPO / "docs" / "runbook.md"]
    for doc in docs:
        # Not inside a path (a secret file's name), not a bare prefix.
        for name in set(re.findall(r"(?<![/\w])threads_[a-z_]*[a-z]\b", doc.read_text())):
            assert name in CONTRACT or name in SERIES or name in NOT_METRICS, \
                f"{doc.name}: {name} is not in threads_exporter.metrics"


def test_every_module_says_its_job_and_stays_small() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree)
        where = path.relative_to(PACKAGE)
        if path.name != "__main__.py":
            assert doc, f"{where}: no module docstring saying its one job"
        lines = len(path.read_text().splitlines())
        assert lines <= 420, f"{where}: {lines} lines; split it along its seams"
