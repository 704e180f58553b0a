"""``margin sql``: one read-only statement, rendered as an aligned table, CSV or JSON.

Three guards keep the warehouse unchanged, whatever is typed:

1. the statement is parsed first and only a query kind is accepted (SELECT, WITH, FROM,
   VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PRAGMA, CALL); INSERT, UPDATE, DELETE,
   CREATE, DROP, ALTER, ATTACH, DETACH, COPY, EXPORT, INSTALL/LOAD, SET and several
   statements at once are refused with one line before anything is opened;
2. the connection is read-only (DuckDB refuses any write);
3. file and network access is disabled and the configuration locked, so ``read_csv``,
   ``COPY … TO`` or an extension cannot reach outside the warehouse.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import duckdb

from flows.connection import connect

if TYPE_CHECKING:
    import polars as pl

OUTPUT_FORMATS = ("table", "csv", "json")
QUERY_STATEMENTS = {
    duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA,
    duckdb.StatementType.CALL,
}


class QueryRefused(ValueError):
    """The text is not exactly one read-only statement."""


def check_read_only(query: str) -> None:
    """Raise ``QueryRefused`` unless ``query`` is exactly one query statement."""
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as error:
        raise QueryRefused(f"SQL syntax error: {_first_line(error)}") from error  # hints: error_hints
    if len(statements) != 1:
        raise QueryRefused(f"give exactly one SQL statement ({len(statements)} found)")
    kind = statements[0].type
    if kind not in QUERY_STATEMENTS:
        name = str(kind).rsplit(".", 1)[-1]
        raise QueryRefused(
            f"margin sql is read-only: {name} statements are not allowed "
            "(use SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)"
        )


HINT_PREFIXES = ("Candidate bindings", "Did you mean", "LINE ")


def error_hints(error: BaseException) -> list[str]:
    """DuckDB's hint lines under the first line of its message ("Candidate bindings: …",
    "Did you mean …", and the ``LINE n:`` excerpt with its caret), for the console to keep."""
    lines = str(error.__cause__ or error).strip().splitlines()[1:]
    hints = []
    for number, line in enumerate(lines):
        if line.startswith(HINT_PREFIXES):
            hints.append(line.rstrip())
            if line.startswith("LINE ") and number + 1 < len(lines) and lines[number + 1].strip().startswith("^"):
                hints.append(lines[number + 1].rstrip())
    return hints


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def read_only_relation(db: Path, query: str) -> Iterator[duckdb.DuckDBPyRelation | None]:
    """One checked read-only statement as a relation on a connection without file access."""
    check_read_only(query)
    db = Path(db)
    if not db.exists():
        raise FileNotFoundError(f"warehouse {db} does not exist yet (run `margin demo` or `margin run` first)")
    con = connect(db, read_only=True)
    try:
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        yield con.sql(query)
    finally:
        con.close()


def run_query(db: Path, query: str) -> pl.DataFrame:
    """Run one checked read-only statement and return all its rows (CSV and JSON output)."""
    import polars as pl  # only the CSV/JSON output needs it: the table answers without Polars

    with read_only_relation(db, query) as relation:
        return relation.pl() if relation is not None else pl.DataFrame()


#: DuckDB column types shown right-aligned (Polars' numeric dtypes: integers, floats, decimals).
NUMERIC_TYPES = frozenset({
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
    "UHUGEINT", "FLOAT", "DOUBLE",
})


class QueryRows(NamedTuple):
    """The first rows of a result, what the aligned table shows, and how many there are in all."""

    columns: list[str]
    numeric: list[bool]
    rows: list[tuple]
    total: int


def first_rows(db: Path, query: str, limit: int) -> QueryRows:
    """The statement's column names, which are numeric, its first ``limit`` rows and its row count,
    straight from DuckDB (the count is asked only when the first rows fill ``limit``)."""
    with read_only_relation(db, query) as relation:
        if relation is None:
            return QueryRows([], [], [], 0)
        types = [str(kind) for kind in relation.types]
        numeric = [kind in NUMERIC_TYPES or kind.startswith("DECIMAL") for kind in types]
        rows = relation.limit(limit).fetchall() if limit > 0 else []
        total = len(rows) if 0 < len(rows) < limit else relation.aggregate("count(*)").fetchall()[0][0]
        return QueryRows(list(relation.columns), numeric, rows, total)


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and abs(value) < 1e-4:
            return f"{value:.6g}"
        if abs(value) >= 1000:
            return f"{value:,.2f}"
        return f"{value:.6f}".rstrip("0").rstrip(".")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str)
    return str(value).replace("\n", " ")


def frame_rows(frame: pl.DataFrame) -> QueryRows:
    """A Polars frame (what-if's figures) as rows for ``render_table``."""
    return QueryRows(frame.columns, [dtype.is_numeric() for dtype in frame.dtypes], frame.rows(), frame.height)


def render_table(result: QueryRows, limit: int = 100, max_width: int = 100) -> str:
    """Aligned plain-text table: numbers right-aligned, text left-aligned, NULL shown."""
    if not result.columns:
        return "(statement returned no columns)\n"
    if result.total == 0:
        return f"(no rows; columns: {', '.join(result.columns)})\n"
    shown = result.rows[:limit]
    cells = [[_cell(row[index])[:max_width] for row in shown] for index in range(len(result.columns))]
    widths = [max(len(name), *(len(c) for c in column)) for name, column in zip(result.columns, cells)]
    lines = [
        " | ".join(name.ljust(w) for name, w in zip(result.columns, widths)),
        "-+-".join("-" * w for w in widths),
    ]
    for row in range(len(shown)):
        lines.append(" | ".join(
            (column[row].rjust(w) if is_num else column[row].ljust(w))
            for column, w, is_num in zip(cells, widths, result.numeric)
        ).rstrip())
    total = result.total
    footer = f"({total:,} rows; first {limit} shown)" if total > limit else f"({total:,} rows)"
    return "\n".join(lines) + "\n" + footer + "\n"


def _json_value(value):
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def render(frame: pl.DataFrame, output_format: str) -> str:
    """CSV or JSON of every row."""
    if output_format == "csv":
        return frame.write_csv() if frame.width else ""
    rows = [{k: _json_value(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
    return json.dumps(rows, indent=1, default=str) + "\n"


def run_read_only_query(db: Path, query: str, output_format: str = "table", limit: int = 100) -> str:
    """Run ``query`` on a read-only connection without file or network access and render it."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"--format must be table, csv or json, not {output_format!r}")
    if output_format == "table":
        return render_table(first_rows(db, query, limit), limit)
    return render(run_query(db, query), output_format)
