#!/usr/bin/env bash
# Re-resolve requirements.lock from pyproject.toml in a fresh venv (runtime + test and bench
# extras; the bench extra is bench/engines.py's alone, never installed by CI or the image).
# Commit the result: CI, the Dockerfile and bench/ install exactly these versions, so a
# number measured once reproduces from a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[test,bench]'
{
  echo "# The exact dependency set CI, the Dockerfile and the benchmark install with (pip -c)."
  echo "# Regenerate with scripts/lock.sh after changing pyproject.toml's dependencies."
  "$venv/bin/python" -m pip freeze --exclude-editable
} > requirements.lock
echo "requirements.lock: $(grep -vc '^#' requirements.lock) packages"
