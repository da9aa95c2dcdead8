"""Markdown tables of benchmark results (one table per benchmark, a row per result)."""

from __future__ import annotations

from typing import Any


def fmt(v: Any) -> str:
    """A cell: floats to 4 significant digits, None as '-'."""
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def to_markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    """One table per benchmark; columns are every key of its rows, in first-seen order."""
    out: list[str] = []
    for name, rows in results.items():
        if not rows:
            continue
        keys = list(dict.fromkeys(k for r in rows for k in r))
        out += [f"### {name}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        out += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows]
        out.append("")
    return "\n".join(out)
