"""Markdown tables of benchmark results."""

from __future__ import annotations

from benchmarks.tables import fmt, to_markdown


def test_cells() -> None:
    assert fmt(1.234567) == "1.235" and fmt(None) == "-" and fmt(3) == "3" and fmt("x") == "x"


def test_one_table_per_benchmark_with_every_key_as_a_column() -> None:
    md = to_markdown({"a": [{"x": 0.5, "y": None}, {"x": 2, "z": "q"}], "empty": []})
    assert md.splitlines() == [
        "### a", "", "| x | y | z |", "|---|---|---|", "| 0.5 | - | - |", "| 2 | - | q |",
    ]
