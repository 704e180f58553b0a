"""``margin sql``: read-only whatever is typed, aligned table / CSV / JSON, one-line errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import sys

import pytest

from conftest import PROJECT_ROOT, margin_cli
from outputs.sql_console import QueryRefused, run_read_only_query
from published_books import DAY, shared_warehouse


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    db, _ = shared_warehouse(tmp_path_factory)
    return db


def file_digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("statement", [
    "INSERT INTO runs (run_id) VALUES ('intruder')",
    "DROP TABLE account_margin",
    "DELETE FROM account_margin",
    "UPDATE account_margin SET im = 0",
    "CREATE TABLE notes AS SELECT 1",
    "ATTACH 'elsewhere.duckdb' AS other",
    "COPY account_margin TO 'leak.csv'",
    "EXPORT DATABASE 'leak'",
    "SET enable_external_access = true",
    "INSTALL httpfs",
    "SELECT 1; DROP TABLE runs",
])
def test_write_statements_are_refused_and_the_warehouse_is_unchanged(warehouse, statement, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = file_digest(warehouse)
    with pytest.raises(QueryRefused) as refused:
        run_read_only_query(warehouse, statement)
    assert "\n" not in str(refused.value)
    assert file_digest(warehouse) == before
    assert list(tmp_path.iterdir()) == []  # nothing written beside it either


def test_file_access_inside_a_select_is_refused(warehouse):
    with pytest.raises(Exception, match="disabled by configuration"):
        run_read_only_query(warehouse, "SELECT * FROM read_csv('/etc/hostname')")


def test_table_is_aligned_with_readable_numbers(warehouse):
    out = run_read_only_query(
        warehouse,
        f"SELECT account_id, status, im FROM account_margin WHERE as_of_date = DATE '{DAY}' ORDER BY im DESC LIMIT 3",
    )
    lines = out.splitlines()
    assert lines[0].split(" | ")[0].strip() == "account_id"
    assert len({line.index("|") for line in lines[:5] if "|" in line}) == 1  # columns line up
    assert "2,104,557.72" in out  # ACC0004's im, thousands separated, 2 decimals
    assert lines[-1] == "(3 rows)"


def test_empty_result_says_so_with_its_columns(warehouse):
    out = run_read_only_query(warehouse, "SELECT account_id, im FROM account_margin WHERE false")
    assert out == "(no rows; columns: account_id, im)\n"
    assert run_read_only_query(warehouse, "SELECT account_id FROM account_margin WHERE false", "csv") == "account_id\n"
    assert json.loads(run_read_only_query(warehouse, "SELECT 1 AS x WHERE false", "json")) == []


def test_csv_and_json_carry_every_row(warehouse):
    query = f"SELECT account_id, as_of_date, im, 1.5 AS literal FROM account_margin WHERE as_of_date = DATE '{DAY}'"
    rows = list(csv.DictReader(io.StringIO(run_read_only_query(warehouse, query, "csv", limit=2))))
    assert len(rows) == 12 and rows[0]["as_of_date"] == "2025-03-14"
    records = json.loads(run_read_only_query(warehouse, query, "json"))
    assert len(records) == 12 and records[0]["literal"] == 1.5 and records[0]["as_of_date"] == "2025-03-14"


def test_errors_name_the_problem(warehouse):
    with pytest.raises(Exception, match="no_such_table"):
        run_read_only_query(warehouse, "SELECT * FROM no_such_table")
    with pytest.raises(FileNotFoundError, match="does not exist yet"):
        run_read_only_query(warehouse.with_name("absent.duckdb"), "SELECT 1")
    with pytest.raises(QueryRefused, match="syntax error"):
        run_read_only_query(warehouse, "SELEC 1")
    with pytest.raises(QueryRefused, match=r"exactly one SQL statement \(0 found\)"):
        run_read_only_query(warehouse, "  ")


def test_views_are_queryable(warehouse):
    out = run_read_only_query(warehouse, "SELECT account_id, why FROM v_margin_calls ORDER BY ALL", "json")
    assert {r["account_id"] for r in json.loads(out)} == {"ACC0004", "ACC0009"}


def test_cli_prints_one_line_errors_and_exits_non_zero(warehouse):
    refused = margin_cli("sql", "DROP TABLE runs", "--db", str(warehouse))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "margin: error: margin sql is read-only: DROP statements are not allowed "
        "(use SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)"
    ]
    ok = margin_cli("sql", "SELECT count(*) AS accounts FROM v_account_latest", "--db", str(warehouse), "-f", "csv")
    assert ok.returncode == 0 and ok.stdout == "accounts\n12\n"


def test_the_table_answers_without_importing_polars(warehouse):
    """The aligned table (margin sql's default) reads DuckDB's rows directly: Polars and
    pyarrow cost most of a second to import, so the first line would come after 1 s."""
    probe = (
        "import sys\n"
        "from outputs.sql_console import run_read_only_query\n"
        f"out = run_read_only_query({str(warehouse)!r}, 'SELECT account_id, im FROM account_margin ORDER BY im DESC', limit=2)\n"
        "assert out.splitlines()[-1].endswith(' rows; first 2 shown)'), out\n"
        "assert 'polars' not in sys.modules and 'pyarrow' not in sys.modules, sorted(m for m in sys.modules if 'polars' in m)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr


def test_table_shows_intervals_decimals_lists_and_nulls(warehouse):
    out = run_read_only_query(warehouse, "SELECT INTERVAL 1 DAY AS i, 1.5::DECIMAL(10,2) AS d, NULL AS n, [1, 2] AS l")
    header, _, row, footer = out.splitlines()
    assert [c.strip() for c in header.split("|")] == ["i", "d", "n", "l"]
    assert [c.strip() for c in row.split("|")] == ["1 day, 0:00:00", "1.50", "NULL", "[1, 2]"]
    assert footer == "(1 rows)"
