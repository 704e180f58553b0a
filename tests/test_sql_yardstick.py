"""The benchmark yardstick (``benchmarks/sql_method.py``: SPEC §3–§7 in DuckDB SQL) computes
the same figures as the engine: both worked books' expected outputs to 1e-6, and a
generated book with deliberately bad rows against ``compute_margin`` itself.

The harness's ratios to it mean something only while this holds."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest

from benchmarks.sql_method import run as run_sql_method
from conftest import EXAMPLE_BOOKS, EXAMPLES
from expected_books import load_expected, quarantine_mismatches, table_mismatches
from flows.loading import load_inputs
from market.generate import generate_day
from transforms.pipeline import compute_margin


#: The result tables of SPEC §4–§7 (the yardstick has no stress step).
CORE_TABLES = ("position_margin", "underlying_risk", "collateral_valuation", "account_margin", "group_margin")


def published(db, table: str) -> pl.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(f"SELECT * FROM {table}").pl()


@pytest.mark.parametrize("book", EXAMPLE_BOOKS)
def test_sql_method_matches_expected_book(book, tmp_path):
    expected = load_expected(book)
    as_of = dt.date.fromisoformat(expected["as_of_date"])
    db = tmp_path / "yardstick.duckdb"
    outcome = run_sql_method(EXAMPLES / book / "inputs", as_of, db)
    problems = []
    for table in CORE_TABLES:
        problems += table_mismatches(table, expected[table], published(db, table))
    problems += quarantine_mismatches(expected["quarantine"], published(db, "quarantine"))
    assert problems == []
    assert outcome["rows"]["position_margin"] == len(expected["position_margin"])


def test_sql_method_agrees_with_the_engine_on_a_generated_book_with_bad_rows(tmp_path):
    as_of = dt.date(2026, 11, 16)
    inputs = tmp_path / "inputs"
    generate_day(inputs, as_of, 400)
    db = tmp_path / "yardstick.duckdb"
    run_sql_method(inputs, as_of, db)
    results = compute_margin(load_inputs(inputs, as_of).margin_inputs)
    problems = []
    for table in CORE_TABLES:
        engine = results.tables[table]
        rows = [{k: v for k, v in row.items()} for row in engine.to_dicts()]
        yardstick = published(db, table)
        assert yardstick.height == engine.height, table
        problems += table_mismatches(table, rows, yardstick, rel=1e-9, abs_tol=1e-6)
    got = published(db, "quarantine").group_by("source_table", "reason").len().sort("source_table", "reason")
    want = results.tables["quarantine"].group_by("source_table", "reason").len().sort("source_table", "reason")
    assert got.to_dicts() == want.to_dicts()
    assert problems == []
