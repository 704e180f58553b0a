"""Comparison of computed tables with a worked example's ``expected.json`` (SPEC §8).

Numbers match to 1e-6 relative (or 1e-6 absolute near zero), as the examples' README asks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl

from transforms.pipeline import SORT_KEYS

EXAMPLES_DIR = Path(__file__).parent / "data" / "examples"
TABLE_KEYS = {table: key for table, key in SORT_KEYS.items() if table != "quarantine"}


def load_expected(book: str) -> dict:
    return json.loads((EXAMPLES_DIR / book / "expected.json").read_text())


def _close(expected, actual, rel: float, abs_tol: float) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, bool) or isinstance(expected, str):
        return expected == actual
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(_close(e, a, rel, abs_tol) for e, a in zip(expected, actual))
    if isinstance(actual, float) and math.isnan(actual):
        return False
    return math.isclose(float(expected), float(actual), rel_tol=rel, abs_tol=abs_tol)


def table_mismatches(table: str, expected_rows: list[dict], actual: pl.DataFrame, rel=1e-6, abs_tol=1e-6) -> list[str]:
    """Every (key, column) where ``actual`` differs from ``expected_rows``; empty when they agree."""
    keys = TABLE_KEYS[table]
    problems: list[str] = []
    actual_rows = {tuple(row[k] for k in keys): row for row in actual.to_dicts()}
    expected_by_key = {tuple(row[k] for k in keys): row for row in expected_rows}
    for missing in sorted(set(expected_by_key) - set(actual_rows), key=str):
        problems.append(f"{table}: missing row {missing}")
    for extra in sorted(set(actual_rows) - set(expected_by_key), key=str):
        problems.append(f"{table}: unexpected row {extra}")
    for key, expected in expected_by_key.items():
        row = actual_rows.get(key)
        if row is None:
            continue
        for column, value in expected.items():
            if column not in row:
                problems.append(f"{table}: column {column} absent")
            elif not _close(value, row[column], rel, abs_tol):
                problems.append(f"{table} {key} {column}: expected {value!r}, got {row[column]!r}")
    return problems


def quarantine_mismatches(expected_rows: list[dict], actual: pl.DataFrame) -> list[str]:
    """Quarantine rows compared as (source_table, reason, parsed row) multisets."""
    def canon(source_table, reason, row):
        return (source_table, reason, json.dumps(row, sort_keys=True))

    expected = sorted(canon(r["source_table"], r["reason"], r["row"]) for r in expected_rows)
    got = sorted(canon(r["source_table"], r["reason"], json.loads(r["row_json"])) for r in actual.to_dicts())
    return [] if expected == got else [f"quarantine: expected {expected}, got {got}"]


def count_mismatches(expected_counts: dict, counts: pl.DataFrame) -> list[str]:
    got = {r["table"]: {"read": r["read"], "used": r["used"], "quarantined": r["quarantined"]} for r in counts.to_dicts()}
    return [
        f"counts {table}: expected {value}, got {got.get(table)}"
        for table, value in expected_counts.items()
        if got.get(table) != value
    ]
