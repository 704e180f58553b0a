"""``margin report``: a self-contained HTML page whose charts render in headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from chromium import cut_columns, dump_dom, table_layout
from conftest import margin_cli
from outputs.report import NO_GROUP, ReportError, render_html, report_data, write_report
from published_books import DAY, shared_warehouse

SECTION_CHARTS = ("im_by_mode", "accounts_by_status", "top_deficits", "netting_by_group", "netting_outside_groups",
                  "risk_by_underlying", "change_drivers")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    db, _ = shared_warehouse(tmp_path_factory)
    return db


@pytest.fixture(scope="module")
def page(warehouse, tmp_path_factory) -> Path:
    """The page as the real command writes it (into a folder it has to create)."""
    out = tmp_path_factory.mktemp("report-out") / "nested" / "desk.html"
    result = margin_cli("report", "--date", DAY.isoformat(), "--db", str(warehouse), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    return out


def test_page_is_self_contained(page):
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    links = set(re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", text))
    # no CDN, no external stylesheet, no image file: only the account pages written beside it
    assert links and all(re.fullmatch(r"accounts/[^/]+\.html", link) for link in links)
    assert all((page.parent / link).is_file() for link in links)
    assert set(re.findall(r"https?://[^\"' )]+", text)) <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}


def test_page_has_every_section_with_its_figures(page, warehouse):
    text = page.read_text(encoding="utf-8")
    for name in SECTION_CHARTS:
        assert f'id="chart-{name}"' in text
    data = report_data(warehouse, DAY)
    assert data["headline"]["accounts"][0] == 12
    assert set(data["top_deficits"]["account_id"]) == {"ACC0004", "ACC0009"}
    assert "Day-over-day change since 2025-03-13" in text
    # the drivers add up to the change of the book's totals
    drivers = dict(zip(data["change_drivers"]["driver"] + "/" + data["change_drivers"]["measure"],
                       data["change_drivers"]["change_usd"]))
    assert drivers["price/im"] + drivers["positions/im"] == pytest.approx(5027650.753448367 - 3955534.4939409024)


def test_same_warehouse_gives_the_same_bytes(page, warehouse, tmp_path):
    again = write_report(warehouse, DAY, tmp_path / "again.html")
    assert again.read_bytes() == page.read_bytes()


def test_date_without_results_is_a_clear_error(warehouse, tmp_path):
    with pytest.raises(ReportError, match="no results for 2025-03-20"):
        write_report(warehouse, DAY.replace(day=20), tmp_path / "none.html")


def test_page_renders_its_charts_in_headless_chromium(page, tmp_path):
    dom = dump_dom(page, tmp_path / "profile")
    assert "End-of-day margin report — 2025-03-14" in dom
    for name in SECTION_CHARTS:
        chart = re.search(rf'<div class="chart" id="chart-{name}">(.*?)</div>', dom, re.S)
        assert chart, f"chart {name} missing from the rendered DOM"
        assert "<svg" in chart.group(1)
        assert re.search(r"<(path|rect)\b", chart.group(1)), f"chart {name} has no marks"


def test_stress_section_shows_cover_2_and_the_closest_to_liquidation(page, warehouse):
    """Book A: the largest Cover 2 is the −50 % rung (ACC0004 2,046,6xx + ACC0008 48,3xx =
    2,094,9xx USD; crypto_crash is 2,089,663); ACC0004 and GRP00 are already below mm, so
    they lead the ladder table."""
    from outputs.report import render_html, stress_section

    text = page.read_text(encoding="utf-8")
    assert "Stress tests: Cover 2 and the liquidation ladder" in text
    assert "USD under <b>ladder_down_50</b> (account ACC0004 and account ACC0008)" in text
    data = report_data(warehouse, DAY)
    assert data["stress_cover"].height == 24
    assert data["closest_to_liquidation"].select("book_type", "book_id").rows()[:2] == [
        ("account", "ACC0004"), ("group", "GRP00")]
    assert "-25.0%" in stress_section(data)  # ACC0008 breaches at the −25 % rung
    without = {**data, "stress_cover": data["stress_cover"].clear(),
               "closest_to_liquidation": data["closest_to_liquidation"].clear()}
    assert "no stress tests for this date" in render_html(DAY, without)


def test_account_pages_render_in_headless_chromium(page, warehouse, tmp_path):
    """Each account in the report's tables links to its page beside the report; the page
    shows the derivation with the scenario-loss chart (worst scenario highlighted) and the
    collateral tier chart, and renders in headless Chromium."""
    from outputs.account_page import WORST_COLOUR, account_href

    text = page.read_text(encoding="utf-8")
    assert f'href="{account_href("ACC0004")}"' in text  # a top deficit
    account_page = page.parent / account_href("ACC0004")
    html_text = account_page.read_text(encoding="utf-8")
    assert "<script" not in html_text.lower()
    for needle in ("Account ACC0004", "worst-scenario loss USD", "◀ binds", "◀ im", "tier from USD", "status <b>"):
        assert needle in html_text
    single = tmp_path / "one.html"
    result = margin_cli("report", "--date", DAY.isoformat(), "--db", str(warehouse), "--account", "ACC0004",
                        "--out", str(single))
    assert result.returncode == 0, result.stderr
    assert single.read_bytes() == account_page.read_bytes()
    result = margin_cli("report", "--date", DAY.isoformat(), "--db", str(warehouse), "--account", "ACC9999",
                        "--out", str(tmp_path / "none.html"))
    assert result.returncode == 1 and "similar:" in result.stderr
    dom = dump_dom(account_page, tmp_path / "profile")
    assert "Account ACC0004 — 2025-03-14" in dom
    for name in ("scenarios", "tiers"):
        chart = re.search(rf'<div class="chart" id="chart-{name}">(.*?)</div>', dom, re.S)
        assert chart and "<svg" in chart.group(1), f"chart {name} missing from the rendered DOM"
        assert re.search(r"<(path|rect)\b", chart.group(1)), f"chart {name} has no marks"
    scenarios = re.search(r'<div class="chart" id="chart-scenarios">(.*?)</div>', dom, re.S).group(1)
    assert WORST_COLOUR in scenarios  # the worst scenario is highlighted


# --- issue 15: readable at 1,400 px, groups chart, quarantine, negative aggregation ---------


def test_every_table_column_is_visible_at_1400_px_in_headless_chromium(page, tmp_path):
    """Rendered 1,400 px wide, no column of any table hides behind a horizontal scroll or
    beyond the window (the key columns such as worst_scenario, why, group_status among
    them), and the free-text `why` of the top deficits gets a readable width instead of one
    word per line. The page before issue 15 cut 13 columns of book A (why, worst_scenario,
    group_status, equity_position_effect, cover2_counterparty among them) and gave why 94 px."""
    layout = table_layout(page, tmp_path / "profile", width=1400)
    assert layout["viewport"] == 1400
    sections = {table["section"] for table in layout["tables"]}
    assert {"Top deficits (margin calls and liquidations)", "Risk by underlying",
            "Quarantined input rows"} <= sections
    shown = {column["name"].replace("\u200b", "") for table in layout["tables"] for column in table["columns"]}
    assert {"why", "worst_scenario", "worst_scenario_loss", "group_status", "cover2_counterparty",
            "equity_position_effect", "row_json"} <= shown
    assert cut_columns(layout) == []
    assert all(table["scroll_width"] <= table["client_width"] for table in layout["tables"])
    why = next(column for table in layout["tables"] for column in table["columns"]
               if table["section"].startswith("Top deficits") and column["name"] == "why")
    assert why["width"] >= 240


def test_the_layout_check_sees_a_cut_column(page, tmp_path):
    """The check above can fail: the same page squeezed into 900 px cuts columns."""
    layout = table_layout(page, tmp_path / "profile", width=900)
    assert cut_columns(layout)


def test_groups_chart_leaves_the_accounts_outside_groups_to_their_own_panel(page, warehouse):
    text = page.read_text(encoding="utf-8")
    groups_chart = re.search(r'<div class="chart" id="chart-netting_by_group">(.*?)</div>', text, re.S).group(1)
    outside_chart = re.search(r'<div class="chart" id="chart-netting_outside_groups">(.*?)</div>', text,
                              re.S).group(1)
    assert NO_GROUP not in groups_chart and "GRP00" in groups_chart
    assert "Accounts outside margin groups (9 accounts; own scale)" in outside_chart
    # the table keeps every row, (none) included
    assert set(report_data(warehouse, DAY)["netting_by_group"]["margin_group"]) == {NO_GROUP, "GRP00", "GRP01"}


def test_quarantine_section_counts_by_table_and_reason_with_sample_rows(page, warehouse):
    """Book A quarantines 2 position rows on its second day (an unknown instrument and a
    missing price); the section counts them per table and reason and shows the rows."""
    import duckdb

    text = page.read_text(encoding="utf-8")
    assert "<h2>Quarantined input rows</h2>" in text
    with duckdb.connect(str(warehouse), read_only=True) as con:
        expected = con.sql("select source_table, reason, count(*) from quarantine where as_of_date = ? "
                           "group by all order by all", params=[DAY]).fetchall()
        rows = con.sql("select row_json from quarantine where as_of_date = ?", params=[DAY]).fetchall()
    assert expected  # the book has quarantined rows on DAY
    data = report_data(warehouse, DAY)
    assert sorted(data["quarantine_by_reason"].select("source_table", "reason", "rows").rows()) == expected
    total = sum(count for _, _, count in expected)
    assert f"<b>{total:,}</b> input rows were set aside" in text
    for (row_json,) in rows[:3]:
        assert row_json.replace('"', "&quot;") in text
    without = {**data, "quarantine_by_reason": data["quarantine_by_reason"].clear(),
               "quarantine_samples": data["quarantine_samples"].clear()}
    assert "no input row was quarantined for this date" in render_html(DAY, without)


def test_negative_aggregation_benefit_is_explained_where_it_appears(warehouse):
    """A group charged more than its members (isolated members: rule margin 2,110 USD, the
    portfolio method on the union 4,653) gets the paragraph that says why; a page without
    such a group has none."""
    data = report_data(warehouse, DAY)
    assert (data["negative_aggregation"].height == 0) == (
        data["netting_by_group"].filter(pl.col("aggregation_benefit") < -0.005).height == 0)
    plain = render_html(DAY, {**data, "negative_aggregation": data["negative_aggregation"].clear()})
    assert "Negative aggregation benefit" not in plain
    negative = pl.DataFrame({
        "margin_group": ["GRP0011"], "member_count": [2], "sum_member_im": [2109.9], "group_im": [4652.59],
        "aggregation_benefit": [2109.9 - 4652.59], "members_portfolio_im": [4652.59], "member_modes": ["isolated"],
    })
    text = render_html(DAY, {**data, "negative_aggregation": negative})
    assert "<b>Negative aggregation benefit</b> (1 group)" in text
    assert "GRP0011: members (isolated) 2,110, group 4,653, the portfolio method on each member alone 4,653" in text


def test_report_goes_under_the_data_folder_by_default(warehouse, tmp_path):
    """Without --out the report is data/reports/margin_report_D.html of the data folder
    (MARGIN_DATA_DIR), not a file in the current folder; its first line says what it does."""
    data = tmp_path / "data"
    result = margin_cli("report", "--date", DAY.isoformat(), "--db", str(warehouse),
                        env={"MARGIN_DATA_DIR": str(data), "MARGIN_QUIET": "0"})
    assert result.returncode == 0, result.stderr
    expected = data / "reports" / f"margin_report_{DAY.isoformat()}.html"
    assert result.stdout.strip() == str(expected) and expected.is_file()
    assert (expected.parent / "accounts").is_dir()
    assert result.stderr.splitlines()[0] == f"report of {DAY} from {warehouse} …"
