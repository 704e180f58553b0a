"""The headline summary printed by `margin run` / `margin demo` and put in the artifact."""

from __future__ import annotations

import io

from rich.console import Console

from books import AS_OF, margin
from outputs.summary import day_summary_markdown, print_day_summary
from flows.warehouse import publish_date
from published_books import run_record


def test_summary_of_a_book_without_groups_or_quarantine(tmp_path):
    """No groups: the aggregation benefit is 0, not a crash (the date is already published)."""
    results = margin(("A1", "BTC-PERP", 2.0))
    db = tmp_path / "warehouse.duckdb"
    policy = {"maintenance_ratio": 0.75, "vol_floor": 0.01, "reporting_lei": None, "collateralisation_category": "OWC2"}
    record = run_record(AS_OF, "run-1", results.counts, policy)
    publish_date(db, AS_OF, "run-1", results.tables, record)
    console = Console(file=io.StringIO(), width=120)
    print_day_summary(db, AS_OF, console)
    printed = console.file.getvalue()
    assert "aggregation benefit of margin groups" in printed and "quarantined rows by reason" not in printed
    markdown = day_summary_markdown(db, AS_OF)
    # 2 BTC-PERP × 50,100 × im_rate 0.1 = 10,020 of IM in portfolio mode
    assert "| portfolio | 10,020 |" in markdown
