"""The two worked books of ../shared/examples, end to end.

1. The methodology alone (``compute_margin``) matches every figure of ``expected.json``.
2. The real ``margin run`` command, through the Prefect flow, into a real DuckDB file,
   publishes tables that match too, with counts that reconcile and a run record.
"""

from __future__ import annotations

import datetime as dt
import json

import duckdb
import pytest

from expected_books import (
    TABLE_KEYS, count_mismatches, load_expected, quarantine_mismatches, table_mismatches,
)
from conftest import EXAMPLE_BOOKS, EXAMPLES, margin_cli
from flows.loading import load_inputs
from transforms.pipeline import compute_margin


@pytest.mark.parametrize("book", EXAMPLE_BOOKS)
def test_methodology_matches_expected_book(book):
    expected = load_expected(book)
    as_of = dt.date.fromisoformat(expected["as_of_date"])
    results = compute_margin(load_inputs(EXAMPLES / book / "inputs", as_of).margin_inputs)
    problems = []
    for table in TABLE_KEYS:
        problems += table_mismatches(table, expected.get(table, []), results.tables[table])
    problems += quarantine_mismatches(expected["quarantine"], results.tables["quarantine"])
    problems += count_mismatches(expected["counts"], results.counts)
    assert results.scenario_ids == expected["scenario_ids"]
    assert problems == []


@pytest.mark.parametrize("book", EXAMPLE_BOOKS)
def test_margin_run_publishes_expected_book(book, prefect_api, example_inputs, tmp_path):
    expected = load_expected(book)
    inputs = example_inputs(book)
    db = tmp_path / "warehouse.duckdb"
    result = margin_cli("run", "--date", expected["as_of_date"], "--inputs", str(inputs), "--db", str(db))
    assert result.returncode == 0, result.stderr
    con = duckdb.connect(str(db), read_only=True)
    try:
        problems = []
        for table in TABLE_KEYS:
            frame = con.sql(f"SELECT * FROM {table} WHERE as_of_date = ?", params=[expected["as_of_date"]]).pl()
            problems += table_mismatches(table, expected.get(table, []), frame)
        problems += quarantine_mismatches(expected["quarantine"], con.sql("SELECT * FROM quarantine").pl())
        runs = con.sql("SELECT * FROM runs").pl()
    finally:
        con.close()
    assert problems == []
    assert runs.height == 1 and runs["status"][0] == "succeeded"
    row_counts = json.loads(runs["row_counts"][0])
    assert row_counts == expected["counts"]
    # 11 files, and book A's optional stress table (SPEC §11)
    has_stresses = (inputs / "reference" / "stress_scenarios.parquet").exists()
    assert len(json.loads(runs["input_checksums"][0])) == 11 + has_stresses


def test_margin_run_in_margin_group_partitions_publishes_the_same_book(prefect_api, example_inputs, tmp_path):
    """`--partitions 3`: the compute split by margin group gives the expected tables."""
    book = "book_b_40_accounts_custom_grid"
    expected = load_expected(book)
    db = tmp_path / "warehouse.duckdb"
    result = margin_cli("run", "--date", expected["as_of_date"], "--inputs", str(example_inputs(book)),
                        "--db", str(db), "--partitions", "3", "--no-summary")
    assert result.returncode == 0, result.stderr
    # Saved as one Parquet file per partition (and the shared tables' quarantine), no leftovers.
    results_dir = db.with_name(db.name + ".results")
    assert [p.name for p in results_dir.iterdir()] == [f"date={expected['as_of_date']}"]
    saved = results_dir / f"date={expected['as_of_date']}"
    assert sorted(p.name for p in (saved / "position_margin").iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    assert (saved / "quarantine" / "part-shared.parquet").exists()
    # `margin publish` re-publishes the partitioned files as they are.
    republished = margin_cli("publish", "--date", expected["as_of_date"], "--db", str(db))
    assert republished.returncode == 0, republished.stderr
    con = duckdb.connect(str(db), read_only=True)
    try:
        problems = []
        for table in TABLE_KEYS:
            problems += table_mismatches(table, expected.get(table, []), con.sql(f"SELECT * FROM {table}").pl())
        problems += quarantine_mismatches(expected["quarantine"], con.sql("SELECT * FROM quarantine").pl())
        runs = con.sql("SELECT parameters FROM runs").pl()
    finally:
        con.close()
    assert problems == []
    assert runs.height == 1 and '"partitions": 3' in runs["parameters"][0]
