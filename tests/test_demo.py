"""Issue 2's acceptance: `margin demo` on a small generated book, through the real
Prefect flow into a real DuckDB file; row counts and reconciliations per date."""

from __future__ import annotations

import json

import duckdb
import polars as pl

from conftest import margin_cli


def test_demo_generates_runs_and_reconciles(prefect_api, tmp_path):
    inputs, db = tmp_path / "inputs", tmp_path / "warehouse.duckdb"
    result = margin_cli("demo", "--accounts", "60", "--days", "2", "--start", "2026-11-16",
                        "--inputs", str(inputs), "--db", str(db), timeout=600)
    assert result.returncode == 0, result.stderr
    assert "accounts by binding status" in result.stdout and "quarantined rows by reason" in result.stdout

    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = con.sql("SELECT * FROM runs ORDER BY as_of_date").pl()
        assert runs["status"].to_list() == ["succeeded", "succeeded"]
        assert [d.isoformat() for d in runs["as_of_date"]] == ["2026-11-16", "2026-11-17"]
        for run in runs.iter_rows(named=True):
            day, folder = run["as_of_date"], inputs / f"date={run['as_of_date'].isoformat()}"
            counts = json.loads(run["row_counts"])
            for table, count in counts.items():
                assert count["read"] == count["used"] + count["quarantined"], table
            positions = pl.read_parquet(folder / "positions.parquet")
            collateral = pl.read_parquet(folder / "collateral.parquet")
            accounts = pl.read_parquet(inputs / "reference" / "accounts.parquet")
            assert counts["positions"]["read"] == positions.height
            assert counts["collateral"]["read"] == collateral.height

            def scalar(sql: str):
                return con.execute(sql, [day]).fetchone()[0]

            # Every quarantined row is in quarantine, and only those.
            assert scalar("SELECT count(*) FROM quarantine WHERE as_of_date = ?") == sum(
                c["quarantined"] for c in counts.values()
            )
            assert scalar("SELECT count(*) FROM quarantine WHERE as_of_date = ?") > 0  # the planted bad rows
            # Every used position row is in exactly one netted row.
            assert scalar("SELECT sum(source_count) FROM position_margin WHERE as_of_date = ?") == counts["positions"]["used"]
            # One account_margin row per account seen anywhere.
            seen = pl.concat([accounts["account_id"], positions["account_id"], collateral["account_id"]]).drop_nulls()
            assert scalar("SELECT count(*) FROM account_margin WHERE as_of_date = ?") == seen.n_unique()
            # Collateral and margin identities hold in the warehouse.
            assert scalar(
                """SELECT count(*) FROM account_margin a LEFT JOIN (
                       SELECT account_id, sum(value_after_haircut_usd) v FROM collateral_valuation
                       WHERE as_of_date = $1 GROUP BY 1) c USING (account_id)
                   WHERE a.as_of_date = $1 AND abs(a.collateral_value_usd - coalesce(c.v, 0)) > 1e-6 * greatest(1, abs(c.v))"""
            ) == 0
            assert scalar(
                "SELECT count(*) FROM account_margin WHERE as_of_date = ? AND abs(excess - (equity - im)) > 1e-6"
            ) == 0
            # Every margin mode and a margin group are present in the synthetic book.
            modes = {r[0] for r in con.execute(
                "SELECT DISTINCT margin_mode FROM account_margin WHERE as_of_date = ?", [day]).fetchall()}
            assert {"isolated", "cross", "portfolio"} <= modes
            assert scalar("SELECT count(*) FROM group_margin WHERE as_of_date = ?") > 0
    finally:
        con.close()

    answer = margin_cli("sql", "select status, count(*) from account_margin group by 1", "--db", str(db))
    assert answer.returncode == 0, answer.stderr
    assert "ok" in answer.stdout
