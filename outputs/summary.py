"""Headline figures of a published date, for the console and the Prefect artifact."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from flows import warehouse


def day_summary(db: Path, as_of: dt.date) -> pl.DataFrame:
    """``section``, ``label``, ``value`` rows from ``sql/report_day_summary.sql``."""
    return warehouse.query(db, warehouse.sql_file("report_day_summary.sql"), [as_of]).drop("ord")


def top_deficits(db: Path, as_of: dt.date, limit: int = 5) -> pl.DataFrame:
    """The largest shortfalls to initial margin of the binding book (as the report's top deficits), whole USD."""
    return warehouse.query(
        db,
        "SELECT account_id, binding_status, margin_mode, coalesce(margin_group, '') AS margin_group, "
        "round(im, 0) AS im, round(equity, 0) AS equity, round(binding_deficit, 0) AS binding_deficit "
        "FROM v_margin_calls WHERE as_of_date = $1 AND binding_deficit > 0 "
        "ORDER BY binding_deficit DESC, account_id LIMIT $2",
        [as_of, limit],
    )


# Columns the console may leave out when the terminal is narrow, first dropped first.
OPTIONAL_COLUMNS = ("margin_group", "margin_mode", "im")


def _fmt(value: float | None, section: str = "") -> str:
    """Every console and artifact figure in whole units with thousands separators."""
    return "—" if value is None else f"{value:,.0f}"


def _cell(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _fmt(value)
    return "" if value is None else str(value)


def fitting_table(frame: pl.DataFrame, title: str, console: Console, optional: tuple[str, ...] = ()) -> Table:
    """``frame`` as a table no wider than the console: ``optional`` columns are left out,
    in order, until every value fits whole (no cut values, no wrapped rows)."""
    columns = list(frame.columns)
    while True:
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
        for column in columns:
            numeric = frame[column].dtype.is_numeric()
            table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
        for row in frame.select(columns).iter_rows():
            table.add_row(*[_cell(v) for v in row])
        droppable = [c for c in optional if c in columns]
        natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if natural <= console.width or not droppable:
            return table
        columns.remove(droppable[0])


def print_day_summary(db: Path, as_of: dt.date, console: Console | None = None) -> None:
    console = console or Console()
    summary = day_summary(db, as_of)
    table = Table(title=f"End-of-day margin {as_of} (USD, whole units)", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_header=False)
    table.add_column("figure", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    previous = None
    for row in summary.iter_rows(named=True):
        if row["section"] != previous:
            table.add_row(f"[bold]{row['section']}[/bold]", "")
            previous = row["section"]
        table.add_row(f"  {row['label']}", _fmt(row["value"], row["section"]))
    console.print(table)
    deficits = top_deficits(db, as_of)
    if deficits.height:
        console.print(fitting_table(deficits, "Largest shortfalls to initial margin (binding book; v_margin_calls)",
                                    console, OPTIONAL_COLUMNS))


def day_summary_markdown(db: Path, as_of: dt.date, record: dict | None = None) -> str:
    """The Prefect run artifact: headline figures, accounts by status, top deficits,
    quarantined rows by reason, and (given the run record) the run's id and timings."""
    summary = day_summary(db, as_of)
    lines = [f"# End-of-day margin {as_of}", ""]
    if record is not None:
        timings = ", ".join(f"{stage} {seconds:.2f}s" for stage, seconds in record.get("timings", {}).items())
        lines += [
            f"run `{record['run_id']}` · {record['status']} · code `{record['code_version']}`",
            "",
            f"timings: {timings}",
            "",
        ]
        if record.get("warnings"):
            lines += ["## Warnings", "", "| code | count | sample |", "|---|---:|---|"]
            lines += [
                f"| {code} | {w['count']} | {', '.join(map(str, w['sample'][:5]))} |"
                for code, w in record["warnings"].items()
            ]
            lines.append("")
    for (section,), rows in summary.group_by("section", maintain_order=True):
        lines += [f"## {section}", "", "| | value |", "|---|---:|"]
        lines += [f"| {label} | {_fmt(value, section)} |" for label, value in rows.select("label", "value").iter_rows()]
        lines.append("")
    deficits = top_deficits(db, as_of)
    if deficits.height:
        lines += ["## Largest shortfalls to initial margin (binding book)", "", "| " + " | ".join(deficits.columns) + " |",
                  "|" + "---|" * len(deficits.columns)]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in deficits.iter_rows()]
    return "\n".join(lines)
