"""``margin report``: a self-contained HTML page whose charts render in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import margin_cli
from outputs.report import ReportError, report_data, write_report
from published_books import DAY, shared_warehouse

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
)
SECTION_CHARTS = ("im_by_mode", "accounts_by_status", "top_deficits", "netting_by_group", "risk_by_underlying",
                  "change_drivers")


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
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("/usr/bin/chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("/usr/bin/chromium is not installed (apt-get install -y chromium); CI runs this test")
    result = subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "End-of-day margin report — 2025-03-14" in dom
    for name in SECTION_CHARTS:
        chart = re.search(rf'<div class="chart" id="chart-{name}">(.*?)</div>', dom, re.S)
        assert chart, f"chart {name} missing from the rendered DOM"
        assert "<svg" in chart.group(1)
        assert re.search(r"<(path|rect)\b", chart.group(1)), f"chart {name} has no marks"
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


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
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("/usr/bin/chromium is required in CI (apt-get install -y chromium)")
        pytest.skip("/usr/bin/chromium is not installed (apt-get install -y chromium); CI runs this test")
    result = subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", account_page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert "Account ACC0004 — 2025-03-14" in dom
    for name in ("scenarios", "tiers"):
        chart = re.search(rf'<div class="chart" id="chart-{name}">(.*?)</div>', dom, re.S)
        assert chart and "<svg" in chart.group(1), f"chart {name} missing from the rendered DOM"
        assert re.search(r"<(path|rect)\b", chart.group(1)), f"chart {name} has no marks"
    scenarios = re.search(r'<div class="chart" id="chart-scenarios">(.*?)</div>', dom, re.S).group(1)
    assert WORST_COLOUR in scenarios  # the worst scenario is highlighted
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
