"""Regenerate the README's metric table from the package's metric table (metrics.py).

    python scripts/readme_tables.py          # rewrite README.md in place
    python scripts/readme_tables.py --check  # exit 1 if README.md is stale (the tests run this)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from threads_exporter.metrics import markdown

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN = "<!-- metrics:begin (generated from exporter/threads_exporter/metrics.py by " \
        "scripts/readme_tables.py; edit there) -->"
END = "<!-- metrics:end -->"


def render(text: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise SystemExit(f"{README}: no {BEGIN!r} ... {END!r} block")
    return pattern.sub(lambda _: f"{BEGIN}\n{markdown()}{END}", text)


def main(argv: list[str]) -> int:
    current = README.read_text()
    wanted = render(current)
    if "--check" in argv:
        if current != wanted:
            print(f"{README} is stale: run python scripts/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
