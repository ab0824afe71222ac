"""Values that depend on the config, so the same tree renders to plain JSON/YAML (Python) and
to jsonnet that still reads ``$._config`` (a user's override changes the output).

- ``T("... %(key)s ...")``: a string formatted with the config (``%(key)s`` for strings,
  ``%(key)g`` for numbers: jsonnet's ``%s`` prints 0.95 as 0.94999999999999996).
  A literal percent sign is ``%%``.
- ``Ref("key")`` / ``Ref("alertFor.ThreadsQuotaHigh")``: a config value itself (a number in
  a dashboard threshold, a severity label), optionally scaled (``Ref("k", scale=86400)``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class T:
    text: str

    def render(self, config: dict[str, Any]) -> str:
        flat = {k: v for k, v in config.items() if not isinstance(v, (dict, list))}
        return self.text % flat

    def __add__(self, other: T | str) -> T:
        return T(self.text + (other.text if isinstance(other, T) else _escape(other)))

    def __radd__(self, other: str) -> T:
        return T(_escape(other) + self.text)


@dataclass(frozen=True)
class Ref:
    path: str
    scale: float | None = None

    def render(self, config: dict[str, Any]) -> Any:
        value: Any = config
        for part in self.path.split("."):
            value = value[part]
        return value * self.scale if self.scale is not None else value


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def render(tree: Any, config: dict[str, Any]) -> Any:
    """The tree with every T and Ref replaced by its value under `config`."""
    if isinstance(tree, (T, Ref)):
        return tree.render(config)
    if isinstance(tree, dict):
        return {k: render(v, config) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [render(v, config) for v in tree]
    return tree


def jsonnet(tree: Any, indent: int = 0, hidden: frozenset[str] = frozenset()) -> str:
    """The tree as a jsonnet expression; T and Ref read ``$._config``. Keys in `hidden` are
    written as hidden fields (``key+::``), as mixins expose prometheusAlerts and friends."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(tree, T):
        return f"({json.dumps(tree.text, ensure_ascii=False)} % $._config)"
    if isinstance(tree, Ref):
        path = "$._config" + "".join(f"[{json.dumps(p)}]" for p in tree.path.split("."))
        return f"({path} * {tree.scale!r})" if tree.scale is not None else path
    if isinstance(tree, dict):
        if not tree:
            return "{}"
        fields = []
        for key, value in tree.items():
            sep = "+::" if key in hidden else ":"
            fields.append(f"{inner}{json.dumps(key, ensure_ascii=False)}{sep} "
                          f"{jsonnet(value, indent + 1)},")
        return "{\n" + "\n".join(fields) + f"\n{pad}}}"
    if isinstance(tree, (list, tuple)):
        if not tree:
            return "[]"
        items = [f"{inner}{jsonnet(v, indent + 1)}," for v in tree]
        return "[\n" + "\n".join(items) + f"\n{pad}]"
    return json.dumps(tree, ensure_ascii=False)
