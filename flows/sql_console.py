"""``margin sql``: one read-only statement, rendered as a table, CSV or JSON."""

from __future__ import annotations

import io
from pathlib import Path

import duckdb
import polars as pl

from flows.warehouse import CONNECTION_CONFIG, connect

READ_ONLY_CONFIG = {**CONNECTION_CONFIG, "enable_external_access": False, "lock_configuration": True}


def run_read_only_query(db: Path, query: str, output_format: str = "table", limit: int = 100) -> str:
    """Run ``query`` on a read-only connection without file or network access."""
    if output_format not in ("table", "csv", "json"):
        raise ValueError(f"--format must be table, csv or json, not {output_format!r}")
    db = Path(db)
    if not db.exists():
        raise FileNotFoundError(f"warehouse {db} does not exist yet (run `margin demo` or `margin run` first)")
    statements = [s for s in duckdb.extract_statements(query)]
    if len(statements) != 1:
        raise ValueError(f"give exactly one SQL statement ({len(statements)} found)")
    con = connect(db, read_only=True)
    try:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        relation = con.sql(query)
        frame = relation.pl() if relation is not None else pl.DataFrame()
    finally:
        con.close()
    if output_format == "csv":
        return frame.write_csv()
    if output_format == "json":
        return frame.write_json() + "\n"
    if frame.height == 0:
        return f"(no rows; columns: {', '.join(frame.columns) or 'none'})\n"
    buffer = io.StringIO()
    with pl.Config(tbl_rows=limit, tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=60,
                   tbl_hide_dataframe_shape=True, tbl_formatting="ASCII_MARKDOWN", float_precision=None):
        buffer.write(str(frame.head(limit)))
    more = f"\n({frame.height:,} rows; first {limit} shown)" if frame.height > limit else f"\n({frame.height:,} rows)"
    return buffer.getvalue() + more + "\n"
