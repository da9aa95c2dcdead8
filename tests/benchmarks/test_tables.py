"""Markdown tables of benchmark results."""

from __future__ import annotations

import json

from benchmarks.tables import fmt, save_tables, to_markdown


def test_cells() -> None:
    assert fmt(1.234567) == "1.235" and fmt(None) == "-" and fmt(3) == "3" and fmt("x") == "x"


def test_one_table_per_benchmark_with_every_key_as_a_column() -> None:
    md = to_markdown({"a": [{"x": 0.5, "y": None}, {"x": 2, "z": "q"}], "empty": []})
    assert md.splitlines() == [
        "### a", "", "| x | y | z |", "|---|---|---|", "| 0.5 | - | - |", "| 2 | - | q |",
    ]


def test_save_tables_writes_the_json_and_the_markdown(tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = {"a": [{"x": 0.5}]}
    md = save_tables(results, tmp_path / "out", "bench")
    assert json.loads((tmp_path / "out" / "bench.json").read_text()) == results
    assert (tmp_path / "out" / "bench.md").read_text() == md + "\n"
    assert md == to_markdown(results)
