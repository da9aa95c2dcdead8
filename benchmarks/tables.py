"""Markdown tables of benchmark results (one table per benchmark, a row per result)."""

from __future__ import annotations

import json
from pathlib import Path
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


def save_tables(results: dict[str, list[dict[str, Any]]], out_dir: Path, stem: str) -> str:
    """Write ``results`` to ``out_dir/stem.json`` and its tables to ``out_dir/stem.md``;
    returns the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    md = to_markdown(results)
    (out_dir / f"{stem}.md").write_text(md + "\n")
    return md
