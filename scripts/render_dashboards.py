#!/usr/bin/env python3
"""Render the bundled Grafana dashboards' panels from a Prometheus server to PNG files.

For a reviewer without Grafana: every panel's queries run against Prometheus (the
template variables set to All) and are drawn with matplotlib in the dashboard's grid
layout: time series as lines, stat/bar-gauge/table panels as bars of their latest value,
with the panel thresholds (the alert thresholds) as dashed lines.

    python scripts/render_dashboards.py --prometheus http://127.0.0.1:9090 --out docs/

needs matplotlib and httpx (both in the project's ``test`` extra).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*$", re.S)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dash: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels, including those nested in rows."""
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])


def substitute(expr: str, values: dict[str, str], rate_interval: str = "1m",
               interval: str = "15s", range_: str = "1h") -> str:
    """Replace Grafana's template and built-in variables the way Grafana would."""
    builtins = {"__rate_interval": rate_interval, "__interval": interval,
                "__range": range_}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in builtins:
            return builtins[name]
        if name in values:
            return values[name]
        raise KeyError(f"unknown variable ${name} in {expr!r}")

    return _VAR.sub(repl, expr)


def label_values_query(query: str) -> tuple[str | None, str]:
    """Split ``label_values(selector, label)`` into (selector or None, label)."""
    m = _LABEL_VALUES.match(query)
    if not m:
        raise ValueError(f"not a label_values() query: {query!r}")
    return m.group(1), m.group(2)


def all_values(dash: dict[str, Any]) -> dict[str, str]:
    """Template variables set to All (their allValue), the data source left as is."""
    out = {}
    for v in dash["templating"]["list"]:
        if v["type"] == "datasource":
            out[v["name"]] = "prometheus"
        else:
            out[v["name"]] = v.get("allValue") or ".*"
    return out


class Prometheus:
    def __init__(self, url: str, timeout: float = 10.0):
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout)

    def _get(self, path: str, **params: Any) -> Any:
        r = self.http.get(path, params=params)
        body = r.json()
        if body.get("status") != "success":
            raise RuntimeError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def instant(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", **params)
        if data["resultType"] != "vector":
            raise RuntimeError(f"{expr!r} returned a {data['resultType']}, not a vector")
        return data["result"]

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query_range", query=expr, start=f"{start:.3f}",
                         end=f"{end:.3f}", step=f"{step:g}")
        return data["result"]

    def label_values(self, label: str, selector: str | None) -> list[str]:
        params: dict[str, Any] = {}
        if selector:
            params["match[]"] = selector
        return self._get(f"/api/v1/label/{label}/values", **params)


def legend(fmt: str, labels: dict[str, str]) -> str:
    if not fmt or fmt == "__auto":
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return f"{labels.get('__name__', '')}{{{inner}}}"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


def _scale(unit: str, values: list[float]) -> tuple[float, str]:
    if unit == "percentunit":
        return 100.0, "%"
    if unit == "s":
        finite = [abs(v) for v in values if math.isfinite(v)]
        biggest = max(finite, default=0.0)
        if biggest >= 2 * 86400:
            return 1 / 86400, "days"
        if biggest >= 2 * 3600:
            return 1 / 3600, "hours"
        return 1.0, "seconds"
    return 1.0, {"reqps": "requests/s", "ops": "per second"}.get(unit, "")


def _threshold_values(p: dict[str, Any]) -> list[float]:
    steps = p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    return [s["value"] for s in steps if s.get("value") is not None]


def render(dash: dict[str, Any], prom: Prometheus, out: Path, range_seconds: float) -> Path:
    """Draw the dashboard as Grafana shows it on opening: open rows with their panels,
    collapsed rows as a title bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = all_values(dash)
    for v in dash["templating"]["list"]:
        if v["type"] == "query" and not v.get("includeAll"):
            # A single-value variable without All: Grafana starts on its first value.
            selector, label = label_values_query(v["query"])
            found = prom.label_values(label, substitute(selector, values) if selector else None)
            values[v["name"]] = re.escape(sorted(found)[0]) if found else ".+"
    end = time.time()
    start = end - range_seconds
    step = max(range_seconds / 240, 1.0)
    rate_interval = f"{max(int(step * 4), 60)}s"
    items = list(dash["panels"])  # top level: what shows before a row is opened
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in items)
    width, row, head = 22.0, 0.5, 0.6  # inches: figure width, one grid row, title band
    height = rows * row + head
    fig = plt.figure(figsize=(width, height), dpi=80)
    span = (f"{range_seconds / 3600:g} h" if range_seconds >= 7200
            else f"{range_seconds / 60:g} min")
    chosen = ", ".join(f"{k} = {v}" for k, v in values.items()
                       if k != "datasource" and v != ".+") or "variables = All"
    fig.suptitle(f"{dash['title']} (last {span}, {chosen})",
                 fontsize=16, y=1 - 0.15 / height)
    for p in items:
        g = p["gridPos"]
        if p["type"] == "row":
            y = 1 - (head + g["y"] * row + 0.35) / height
            mark = "▸ " if p.get("collapsed") else "▾ "
            fig.text(0.005, y, mark + p["title"], fontsize=12, weight="bold",
                     color="#444444")
            continue
        bars = p["type"] in ("stat", "bargauge") and not _single_stat(p)
        left = 2.2 if bars else 0.7  # room for bar names or the y axis
        x0 = g["x"] * width / 24 + left
        y0 = height - head - (g["y"] + g["h"]) * row + 0.45
        w = g["w"] * width / 24 - left - 0.2
        h = g["h"] * row - 0.45 - 0.4
        ax = fig.add_axes((x0 / width, y0 / height, w / width, h / height))
        unit = p["fieldConfig"]["defaults"].get("unit", "")
        ax.set_title(p["title"], fontsize=10, loc="left", x=-left / w if w else 0)
        ax.tick_params(labelsize=7)
        try:
            _draw(ax, p, prom, values, unit, start, end, step, rate_interval, range_seconds)
        except Exception as e:  # draw the error into the panel, like Grafana would
            ax.text(0.5, 0.5, f"error: {e}", ha="center", va="center", fontsize=7, wrap=True,
                    transform=ax.transAxes, color="red")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{dash['uid'].removeprefix('threads-exporter-')}.png"
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(text[:-1]) * units[text[-1]]


def _single_stat(p: dict[str, Any]) -> bool:
    """A stat of one number (the headline counts): drawn as Grafana does, a big value."""
    return p["type"] == "stat" and p["options"].get("textMode") == "value"


def format_value(value: float, unit: str, decimals: int | None = None) -> str:
    if not math.isfinite(value):
        return str(value)
    if unit == "percentunit":
        return f"{value * 100:.{0 if decimals is None else decimals}f}%"
    if unit == "s":
        sign, v = ("-" if value < 0 else ""), abs(value)
        for size, name in ((86400, "d"), (3600, "h"), (60, "min")):
            if v >= size:
                return f"{sign}{v / size:.1f} {name}"
        return f"{sign}{v:.0f} s"
    if decimals == 0 or (unit in ("none", "short") and value == int(value)):
        return f"{value:.0f}"
    return f"{value:.3g}"


def _draw(ax: Any, p: dict[str, Any], prom: Prometheus, values: dict[str, str], unit: str,
          start: float, end: float, step: float, rate_interval: str,
          range_seconds: float) -> None:
    import matplotlib.dates as mdates

    thresholds = _threshold_values(p)
    range_ = f"{int(range_seconds)}s"
    if p["type"] == "timeseries":
        series = []
        # $__interval is the step, never below the panel's minimum interval.
        step = max(step, _seconds(p["interval"])) if p.get("interval") else step
        for t in p["targets"]:
            expr = substitute(t["expr"], values, rate_interval=rate_interval,
                              interval=f"{int(step)}s", range_=range_)
            for s in prom.range(expr, start, end, step):
                xs = [datetime.fromtimestamp(float(ts), UTC) for ts, _ in s["values"]]
                ys = [float(v) for _, v in s["values"]]
                series.append((legend(t.get("legendFormat", ""), s["metric"]), xs, ys))
        factor, label = _scale(unit, [y for _, _, ys in series for y in ys])
        if p["fieldConfig"]["defaults"].get("custom", {}).get("drawStyle") == "bars":
            # Stacked bars, one per interval, as Grafana draws them; all-zero series left out.
            bottom: dict[datetime, float] = {}
            for name, xs, ys in series:
                if not any(ys):
                    continue
                base = [bottom.get(x, 0.0) for x in xs]
                ax.bar(xs, [y * factor for y in ys], width=step / 86400 * 0.9, bottom=base,
                       label=name, align="edge")
                for x, b, y in zip(xs, base, ys, strict=True):
                    bottom[x] = b + y * factor
            ax.set_xlim(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
        else:
            for name, xs, ys in series[:16]:
                ax.plot(xs, [y * factor for y in ys], linewidth=1, label=name)
        for th in thresholds:
            ax.axhline(th * factor, linestyle="--", color="grey", linewidth=0.8)
        fmt = "%H:%M:%S" if end - start < 3 * 3600 else "%H:%M"
        ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt))
        ax.set_ylabel(label, fontsize=8)
        if series:
            ax.legend(fontsize=6, loc="upper left", ncol=2)
        else:
            _no_data(ax, p)
        return
    if p["type"] == "table" and p.get("transformations", [{}])[0].get("id") == "merge":
        _ranked_table(ax, p, prom, values, end, range_)
        return
    rows = []
    for t in p["targets"]:
        expr = substitute(t["expr"], values, rate_interval=rate_interval, range_=range_)
        for s in prom.instant(expr, at=end):
            name = legend(t.get("legendFormat", ""), s["metric"])
            if p["type"] == "table":
                name = ", ".join(f"{k}={v}" for k, v in sorted(s["metric"].items())
                                 if k not in ("__name__",))
            rows.append((name, float(s["value"][1])))
    if not rows:
        _no_data(ax, p)
        return
    if p["type"] == "table":
        ax.axis("off")
        lines = "\n".join(name for name, _ in rows[:8])
        ax.text(0.0, 1.0, lines, va="top", fontsize=8, family="monospace",
                transform=ax.transAxes)
        return
    mappings = {}
    for m in p["fieldConfig"]["defaults"].get("mappings", []):
        for k, v in m.get("options", {}).items():
            mappings[float(k)] = v.get("text", k)
    if _single_stat(p) and len(rows) == 1:
        value = rows[0][1]
        ax.set_facecolor(_color(value, p))
        ax.set_xticks([])
        ax.set_yticks([])
        text = mappings.get(value) or format_value(
            value, unit, p["fieldConfig"]["defaults"].get("decimals"))
        ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=26, weight="bold",
                color="white", transform=ax.transAxes)
        return
    factor, label = _scale(unit, [v for _, v in rows])
    names = [n for n, _ in rows][::-1]
    raws = [v for _, v in rows][::-1]
    vals = [v * factor if math.isfinite(v) else 0.0 for v in raws]
    ax.barh(names, vals, color=[_color(v, p) for v in raws])
    for i, (v, raw) in enumerate(zip(vals, raws, strict=True)):
        text = mappings.get(raw, f"{v:.3g}")
        ax.text(v, i, f" {text}", va="center", fontsize=7)
    for th in thresholds:
        ax.axvline(th * factor, linestyle="--", color="grey", linewidth=0.8)
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)


def _color(value: float, p: dict[str, Any], steps: list[dict[str, Any]] | None = None) -> str:
    colors = {"green": "#56a64b", "orange": "#ff9830", "red": "#e02f44", "blue": "#5794f2"}
    color = "#5794f2"
    if steps is None:
        steps = p["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    for s in steps:
        if s.get("value") is None or value >= s["value"]:
            color = colors.get(s["color"], color)
    return color


def _ranked_table(ax: Any, p: dict[str, Any], prom: Prometheus, values: dict[str, str],
                  end: float, range_: str) -> None:
    """A table of one row per account merged from one query per column (Grafana's merge
    transformation), sorted on the hidden rank, values formatted and coloured per column."""
    organize = p["transformations"][-1]["options"]
    rename, hidden = organize["renameByName"], organize["excludeByName"]
    style = {o["matcher"]["options"]: {x["id"]: x["value"] for x in o["properties"]}
             for o in p["fieldConfig"]["overrides"]}
    table: dict[str, dict[str, Any]] = {}
    labels: list[str] = []
    for t in p["targets"]:
        field = f"Value #{t['refId']}"
        for s in prom.instant(substitute(t["expr"], values, range_=range_), at=end):
            row = table.setdefault(s["metric"].get("account", ""), {})
            row[field] = float(s["value"][1])
            for k, v in s["metric"].items():
                if k not in ("account", "__name__"):
                    row[k] = v
                    if k not in labels:
                        labels.append(k)
    ax.axis("off")
    if not table:
        _no_data(ax, p)
        return
    columns = ["account", *[f"Value #{t['refId']}" for t in p["targets"]
                            if not hidden.get(f"Value #{t['refId']}")], *labels]
    ordered = sorted(table.items(), key=lambda kv: -kv[1].get("Value #A", -math.inf))
    cells, colours = [], []
    for account, row in ordered:
        line, tint = [account], ["white"]
        for field in columns[1:]:
            raw = row.get(field)
            name = rename.get(field, field)
            props = style.get(name, {})
            if raw is None or isinstance(raw, str):
                line.append(raw or "")
                tint.append("white")
                continue
            mapping = {float(k): v["text"] for m in props.get("mappings", [])
                       for k, v in m["options"].items()}
            line.append(mapping.get(raw) or format_value(raw, props.get("unit", "none"),
                                                         props.get("decimals")))
            steps = props.get("thresholds", {}).get("steps")
            tint.append(_color(raw, p, steps) if steps else "white")
        cells.append(line)
        colours.append(tint)
    header = [rename.get(c, c) for c in columns]
    t = ax.table(cellText=cells, colLabels=header, cellColours=colours, loc="upper left",
                 cellLoc="center", colLoc="center")
    t.auto_set_font_size(False)
    t.set_fontsize(8)
    t.scale(1, 1.05)


def _no_data(ax: Any, p: dict[str, Any]) -> None:
    text = p["fieldConfig"]["defaults"].get("noValue", "No data")
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render the dashboards' panels to PNG")
    parser.add_argument("--prometheus", required=True, help="Prometheus base URL")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--range", type=float, default=3600.0, dest="range_seconds",
                        help="seconds of history to draw (default 3600)")
    parser.add_argument("dashboards", nargs="*", type=Path, default=DASHBOARDS,
                        help="dashboard JSON files (default: dashboards/*.json)")
    args = parser.parse_args(argv)
    prom = Prometheus(args.prometheus)
    for path in args.dashboards:
        print(render(load(path), prom, args.out, args.range_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
