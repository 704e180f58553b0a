"""Headline figures of a published date, for the console and the Prefect artifact."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from flows import warehouse


def day_summary(db: Path, as_of: dt.date) -> pl.DataFrame:
    """``section``, ``label``, ``value`` rows from ``sql/report_day_summary.sql``."""
    return warehouse.query(db, warehouse.sql_file("report_day_summary.sql"), [as_of]).drop("ord")


def top_deficits(db: Path, as_of: dt.date, limit: int = 5) -> pl.DataFrame:
    return warehouse.query(
        db,
        "SELECT account_id, margin_mode, status, round(im, 2) AS im, round(equity, 2) AS equity, "
        "round(excess, 2) AS excess FROM account_margin WHERE as_of_date = $1 AND excess < 0 "
        "ORDER BY excess, account_id LIMIT $2",
        [as_of, limit],
    )


def _fmt(value: float | None, section: str) -> str:
    return "—" if value is None else f"{value:,.0f}"


def print_day_summary(db: Path, as_of: dt.date, console: Console | None = None) -> None:
    console = console or Console()
    summary = day_summary(db, as_of)
    table = Table(title=f"End-of-day margin {as_of}", show_lines=False)
    table.add_column("section")
    table.add_column("")
    table.add_column("value", justify="right")
    previous = None
    for row in summary.iter_rows(named=True):
        table.add_row(row["section"] if row["section"] != previous else "", row["label"], _fmt(row["value"], row["section"]))
        previous = row["section"]
    console.print(table)
    deficits = top_deficits(db, as_of)
    if deficits.height:
        worst = Table(title="Largest deficits")
        for column in deficits.columns:
            worst.add_column(column, justify="right" if deficits[column].dtype.is_numeric() else "left")
        for row in deficits.iter_rows():
            worst.add_row(*[f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row])
        console.print(worst)


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
        lines += ["## Top deficits", "", "| " + " | ".join(deficits.columns) + " |",
                  "|" + "---|" * len(deficits.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in deficits.iter_rows()]
    return "\n".join(lines)
