"""Grafana building blocks for the dashboards: panels, rows, variables, tables (no content)."""

from __future__ import annotations

from typing import Any

from monitoring.template import Ref, T

DS = {"type": "prometheus", "uid": "${datasource}"}
# Every panel query: the config's selector, then the dashboard's variables.
SEL = '%(threadsSelector)s, job=~"$job", instance=~"$instance", account=~"$account"'
SEL_TARGET = '%(threadsSelector)s, job=~"$job", instance=~"$instance"'

Grid = tuple[int, int, int, int]


def steps(*pairs: tuple[str, float | Ref | None]) -> dict[str, Any]:
    return {"mode": "absolute",
            "steps": [{"color": color, "value": value} for color, value in pairs]}


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
           fmt: str = "time_series") -> dict[str, Any]:
    return {
        "datasource": DS,
        "editorMode": "code",
        "expr": T(expr),
        "format": fmt,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "refId": ref,
    }


def panel(kind: str, title: str, description: str | T, unit: str,
          targets: list[dict[str, Any]], grid: Grid, *,
          thresholds: dict[str, Any] | None = None, options: dict[str, Any] | None = None,
          defaults: dict[str, Any] | None = None, custom: dict[str, Any] | None = None,
          transformations: list[dict[str, Any]] | None = None,
          overrides: list[dict[str, Any]] | None = None,
          interval: str | None = None) -> dict[str, Any]:
    x, y, w, h = grid
    field_defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds" if kind in ("stat", "bargauge", "table")
                  else "palette-classic"},
        "thresholds": thresholds or steps(("green", None)),
        "mappings": [],
    }
    if custom is not None:
        field_defaults["custom"] = custom
    field_defaults.update(defaults or {})
    result: dict[str, Any] = {
        "datasource": DS,
        "description": description,
        "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "options": options or {},
        "targets": targets,
        "title": title,
        "type": kind,
    }
    if transformations:
        result["transformations"] = transformations
    if interval:
        result["interval"] = interval
    return result


def row(title: str, y: int, children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A row; with children it is collapsed and holds them (their queries run only once it
    is opened), without it is open and the panels below it belong to it."""
    return {
        "collapsed": children is not None,
        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
        "panels": children or [],
        "title": title,
        "type": "row",
    }


def timeseries(title: str, description: str | T, unit: str, targets: list[dict[str, Any]],
               grid: Grid, *, thresholds: dict[str, Any] | None = None, stack: bool = False,
               bars: bool = False, defaults: dict[str, Any] | None = None,
               interval: str | None = None, calcs: tuple[str, ...] = ("lastNotNull", "max"),
               ) -> dict[str, Any]:
    custom = {
        "drawStyle": "bars" if bars else "line",
        "fillOpacity": 60 if (stack or bars) else 10,
        "lineWidth": 1,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stack else "none"},
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    options = {
        "legend": {"calcs": list(calcs), "displayMode": "table",
                   "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, unit, targets, grid, thresholds=thresholds,
                 options=options, defaults=defaults, custom=custom, interval=interval)


def stat(title: str, description: str | T, unit: str, targets: list[dict[str, Any]],
         grid: Grid, *, thresholds: dict[str, Any] | None = None,
         mappings: list[dict[str, Any]] | None = None, no_value: str | None = None,
         text_mode: str = "value_and_name", color_mode: str = "background",
         links: list[dict[str, Any]] | None = None, decimals: int | None = None,
         ) -> dict[str, Any]:
    defaults: dict[str, Any] = {"mappings": mappings or []}
    if no_value is not None:
        defaults["noValue"] = no_value
    if links:
        defaults["links"] = links
    if decimals is not None:
        defaults["decimals"] = decimals
    options = {
        "colorMode": color_mode,
        "graphMode": "none",
        "justifyMode": "center",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": text_mode,
    }
    return panel("stat", title, description, unit, targets, grid, thresholds=thresholds,
                 options=options, defaults=defaults)


def bargauge(title: str, description: str | T, unit: str, targets: list[dict[str, Any]],
             grid: Grid, *, thresholds: dict[str, Any] | None = None,
             defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    options = {
        "displayMode": "gradient",
        "minVizHeight": 16,
        "orientation": "horizontal",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "showUnfilled": True,
        "valueMode": "color",
    }
    return panel("bargauge", title, description, unit, targets, grid, thresholds=thresholds,
                 options=options, defaults=defaults)


def label_table(title: str, description: str | T, targets: list[dict[str, Any]], grid: Grid,
                *, columns: list[str], no_value: str | None = None) -> dict[str, Any]:
    """An instant-query table of label columns (the value is always 1 and hidden)."""
    defaults: dict[str, Any] = {}
    if no_value is not None:
        defaults["noValue"] = no_value
    organize = {
        "id": "organize",
        "options": {
            "excludeByName": {"Time": True, "Value": True, "__name__": True},
            "includeByName": {},
            "indexByName": {name: i for i, name in enumerate(columns)},
            "renameByName": {},
        },
    }
    options = {"cellHeight": "sm", "footer": {"show": False}, "showHeader": True}
    return panel("table", title, description, "none", targets, grid, options=options,
                 defaults=defaults, transformations=[organize])


def account_link(title: str = "Open the account's dashboard") -> dict[str, Any]:
    """A data link from a table's account cell to the per-account dashboard."""
    return {
        "targetBlank": False,
        "title": title,
        "url": T("/d/%(accountUid)s?var-account=${__value.raw}&var-datasource=${datasource}"
                 "&${__url_time_range}"),
    }


def column(name: str, unit: str, *, thresholds: dict[str, Any] | None = None,
           mappings: list[dict[str, Any]] | None = None, cell: str | None = None,
           links: list[dict[str, Any]] | None = None, decimals: int | None = None,
           width: int | None = None) -> dict[str, Any]:
    """A field override of one table column."""
    props: list[dict[str, Any]] = [{"id": "unit", "value": unit}]
    if thresholds is not None:
        props.append({"id": "thresholds", "value": thresholds})
    if mappings is not None:
        props.append({"id": "mappings", "value": mappings})
    if cell is not None:
        props.append({"id": "custom.cellOptions", "value": {"type": cell}})
    if links is not None:
        props.append({"id": "links", "value": links})
    if decimals is not None:
        props.append({"id": "decimals", "value": decimals})
    if width is not None:
        props.append({"id": "custom.width", "value": width})
    return {"matcher": {"id": "byName", "options": name}, "properties": props}


def ranked_table(title: str, description: str | T, grid: Grid, *, rank: str,
                 columns: list[tuple[str, str, dict[str, Any]]],
                 labels: list[str], no_value: str) -> dict[str, Any]:
    """A table of the worst accounts: query A ranks them (topk; the rank column is sorted
    on, then hidden), every other query is one column restricted to the same accounts.
    `columns` are (title, expr, column() keyword arguments); `labels` are label columns
    that some column query carries (reason)."""
    refs = "BCDEFGHIJKLMNOP"
    top = f"topk(%(worstAccounts)g, {rank})"
    targets = [target(top, ref="A", instant=True, fmt="table")]
    rename = {"Value #A": "Rank"}
    overrides = [column("account", "none", links=[account_link()], width=160)]
    hidden = {"Time": True, "Value #A": True, "__name__": True}
    for ref, (name, expr, style) in zip(refs, columns, strict=False):
        targets.append(target(f"({expr})\nand on (account) {top}", ref=ref, instant=True,
                              fmt="table"))
        if style.get("hide"):  # a query for its labels only
            hidden[f"Value #{ref}"] = True
            continue
        rename[f"Value #{ref}"] = name
        overrides.append(column(name, **style))
    order = ["account", *[c[0] for c in columns if not c[2].get("hide")], *labels]
    transformations = [
        {"id": "merge", "options": {}},
        {"id": "sortBy", "options": {"fields": {}, "sort": [{"desc": True, "field": "Value #A"}]}},
        {"id": "organize", "options": {
            "excludeByName": hidden, "includeByName": {},
            "indexByName": {name: i for i, name in enumerate(order)},
            "renameByName": rename}},
    ]
    options = {"cellHeight": "sm", "footer": {"show": False}, "showHeader": True,
               "sortBy": []}
    defaults = {"noValue": no_value, "custom": {"align": "auto", "filterable": False}}
    return panel("table", title, description, "none", targets, grid, options=options,
                 defaults=defaults, transformations=transformations, overrides=overrides)


def query_var(name: str, label: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    var = {
        "allValue": ".+",
        "current": {},
        "datasource": DS,
        "definition": T(query),
        "hide": 0,
        "includeAll": multi,
        "label": label,
        "multi": multi,
        "name": name,
        "options": [],
        "query": T(query),
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "type": "query",
    }
    if not multi:
        del var["allValue"]
    return var


def variables(*, single_account: bool = False) -> list[dict[str, Any]]:
    up = "threads_up{%(threadsSelector)s"
    return [
        {
            "current": {},
            "hide": 0,
            "includeAll": False,
            "label": "Data source",
            "multi": False,
            "name": "datasource",
            "options": [],
            "query": "prometheus",
            "refresh": 1,
            "regex": "",
            "skipUrlSync": False,
            "type": "datasource",
        },
        query_var("job", "Job", f"label_values({up}}}, job)"),
        query_var("instance", "Instance", f'label_values({up}, job=~"$job"}}, instance)'),
        query_var("account", "Account",
                  f'label_values({up}, job=~"$job", instance=~"$instance"}}, account)',
                  multi=not single_account),
    ]


def dashboard(uid: str, title: str, description: str, panels: list[dict[str, Any]], *,
              single_account: bool = False) -> dict[str, Any]:
    n = 0
    for p in panels:
        n += 1
        p["id"] = n
        for child in p.get("panels", []):
            n += 1
            child["id"] = n
    return {
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "description": description,
        "editable": False,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "links": [{
            "asDropdown": False,
            "icon": "external link",
            "includeVars": True,
            "keepTime": True,
            "tags": ["threads-exporter"],
            "targetBlank": False,
            "title": "Threads dashboards",
            "type": "dashboards",
        }],
        "panels": panels,
        "refresh": Ref("dashboardRefresh"),
        "schemaVersion": 39,
        "tags": Ref("dashboardTags"),
        "templating": {"list": variables(single_account=single_account)},
        "time": {"from": Ref("dashboardTimeFrom"), "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": title,
        "uid": Ref(uid),
        "version": 1,
        "weekStart": "",
    }


UP_MAPPINGS = [{
    "options": {
        "0": {"color": "red", "index": 0, "text": "FAILING"},
        "1": {"color": "green", "index": 1, "text": "OK"},
    },
    "type": "value",
}]
