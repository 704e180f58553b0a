"""The data contract (transforms/contract.py) is the one definition: sql/schema.sql and the
computed result tables must agree with it column for column and type for type."""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest

from conftest import EXAMPLES
from flows.loading import load_inputs
from flows.settings import SQL_DIR
from transforms.pipeline import compute_margin
from transforms.contract import RESULT_KEYS, RESULT_SCHEMAS, RESULT_TABLES

#: The DuckDB type each result dtype is stored as.
DUCKDB_TYPES = {
    pl.Float64: "DOUBLE", pl.String: "VARCHAR", pl.Int64: "BIGINT", pl.Int32: "INTEGER", pl.Boolean: "BOOLEAN",
    pl.List(pl.Float64): "DOUBLE[]",
}
#: Warehouse tables that are not result tables of a run.
NOT_RESULTS = {"runs"}


@pytest.fixture(scope="module")
def schema_sql() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute((SQL_DIR / "schema.sql").read_text())
    yield con
    con.close()


def described(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    return [(name, kind) for name, kind, *_ in con.sql(f"DESCRIBE {table}").fetchall()]


@pytest.mark.parametrize("table", RESULT_TABLES)
def test_schema_sql_has_the_contract_columns_and_types(schema_sql, table):
    expect = [("as_of_date", "DATE"), ("run_id", "VARCHAR")] + [
        (column, DUCKDB_TYPES[dtype]) for column, dtype in RESULT_SCHEMAS[table].items()
    ]
    assert described(schema_sql, table) == expect


def test_schema_sql_has_no_result_table_outside_the_contract(schema_sql):
    tables = {name for (name,) in schema_sql.sql("SELECT table_name FROM information_schema.tables").fetchall()}
    assert tables - NOT_RESULTS == set(RESULT_TABLES)


def test_keys_are_columns_of_their_table():
    assert set(RESULT_KEYS) == set(RESULT_TABLES)
    for table, key in RESULT_KEYS.items():
        assert set(key) <= set(RESULT_SCHEMAS[table]), table


def test_computed_tables_have_the_contract_schema():
    results = compute_margin(load_inputs(EXAMPLES / "book_a_12_accounts" / "inputs", dt.date(2025, 3, 14)).margin_inputs)
    for table in RESULT_TABLES:
        assert dict(results.tables[table].schema) == RESULT_SCHEMAS[table], table
