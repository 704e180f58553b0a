"""``margin report --date D``: the risk desk's daily page, one self-contained HTML file.

The figures come from the report queries in ``sql/reports/`` (which read the analyst
views); the charts are Altair specs rendered to inline SVG by vl-convert, so the page
needs no network, no JavaScript and no CDN.  The page holds no clock time: the same
warehouse gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
from pathlib import Path

import polars as pl

from flows.settings import SQL_DIR
from flows.warehouse import open_warehouse
from outputs.html_page import html_document, svg  # noqa: F401 (svg: callers import it from here)

# Altair, vl-convert and the account pages are imported where they are used: `margin
# report` for a date without results answers before loading them (they take seconds).

REPORT_QUERIES = (
    "headline", "im_by_mode", "accounts_by_status", "top_deficits", "netting_by_group",
    "risk_by_underlying", "change_drivers", "top_movers", "collateral_by_asset",
    *("stress_cover", "closest_to_liquidation"),  # the stress section (stress_section)
    *("quarantine_by_reason", "quarantine_samples"),  # the quarantine section (quarantine_section)
    "negative_aggregation",  # groups charged more than their members (aggregation_note)
)
STATUS_COLOURS = {"ok": "#4c9a2a", "margin_call": "#e0a100", "liquidation": "#c0392b", "deficit": "#7d3c98"}
CHART_WIDTH = 520
NO_GROUP = "(none)"  # v_netting_benefit_by_group's row of the accounts outside margin groups
#: Free-text columns: they wrap in a wide cell instead of squeezing to a word per line.
WRAPPING_COLUMNS = ("why", "row_json")
#: Wide tables are shown as several tables of at most this many columns that repeat the key
#: column, so no column hides behind a horizontal scroll at 1,400 px.
RISK_TABLES = (
    ("underlying", "accounts", "net_delta_units", "delta_usd", "vega_usd", "theta_usd", "worst_scenario",
     "worst_scenario_loss"),
    ("underlying", "scan_risk", "calendar_charge", "short_option_min", "inter_credit", "risk", "gross_im", "net_im",
     "rule_netting_benefit", "portfolio_benefit"),
)
MOVER_TABLES = (
    ("account_id", "prev_status", "status", "prev_im", "im", "im_change", "im_price_effect", "im_position_effect"),
    ("account_id", "prev_equity", "equity", "equity_change", "equity_collateral_effect", "equity_price_effect",
     "equity_position_effect"),
)


class ReportError(RuntimeError):
    """The report cannot be made (no results for the date)."""


def status_colour(field: str):
    """Colour encoding of a margin status column with the desk's fixed status colours."""
    import altair as alt

    return alt.Color(f"{field}:N", scale=alt.Scale(domain=list(STATUS_COLOURS), range=list(STATUS_COLOURS.values())))


def report_data(db: Path, as_of: dt.date) -> dict[str, pl.DataFrame]:
    """Every report query of ``sql/reports/`` for ``as_of``, by name."""
    with open_warehouse(db, read_only=True) as con:
        frames = {
            name: con.sql((SQL_DIR / "reports" / f"{name}.sql").read_text(), params=[as_of]).pl()
            for name in REPORT_QUERIES
        }
    if frames["headline"]["accounts"][0] == 0:
        raise ReportError(f"no results for {as_of} in {db} (run `margin run --date {as_of}` first)")
    return frames


def _usd(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.0f}"


def _cell(value, column: str) -> str:
    if value is None:
        return "–"
    from outputs.account_page import ACCOUNT_COLUMNS, account_href

    if column in ACCOUNT_COLUMNS:  # each account links to its page (outputs.account_page)
        return f'<a href="{html.escape(account_href(str(value)))}">{html.escape(str(value))}</a>'
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if column == "share_of_table":  # quarantined rows are a small share of a table
            return f"{value:.3%}"
        if column.endswith(("_pct", "_share", "_haircut")) or column == "share_of_collateral":
            return f"{value:.1%}"
        if column.endswith("_units"):
            return f"{value:,.3f}"
        return _usd(value)
    return html.escape(str(value))


def _header(column: str) -> str:
    """A column name that may break after its underscores (long names do not widen a table)."""
    return html.escape(column).replace("_", "_<wbr>")


def html_table(frame: pl.DataFrame, empty: str = "none") -> str:
    if frame.height == 0:
        return f'<p class="empty">{html.escape(empty)}</p>'
    kinds = ["num" if dtype.is_numeric() else "wrap" if c in WRAPPING_COLUMNS else "txt"
             for c, dtype in zip(frame.columns, frame.dtypes)]
    head = "".join(f"<th>{_header(c)}</th>" for c in frame.columns)
    rows = []
    for row in frame.iter_rows():
        cells = "".join(
            f'<td class="{kind}">{_cell(v, c)}</td>' for v, c, kind in zip(row, frame.columns, kinds)
        )
        rows.append(f"<tr>{cells}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _long(frame: pl.DataFrame, key: str, columns: list[str], name: str = "figure") -> pl.DataFrame:
    return frame.select(key, *columns).unpivot(index=key, variable_name=name, value_name="usd")


def charts(data: dict[str, pl.DataFrame]) -> dict[str, str]:
    """Inline SVG per report section (empty string when the section has no data)."""
    import altair as alt

    out: dict[str, str] = {}
    modes = data["im_by_mode"]
    if modes.height:
        out["im_by_mode"] = svg(
            alt.Chart(_long(modes, "margin_mode", ["gross_im", "net_im", "portfolio_im", "im"]))
            .mark_bar()
            .encode(
                x=alt.X("margin_mode:N", title="margin mode"),
                xOffset=alt.XOffset("figure:N", sort=["gross_im", "net_im", "portfolio_im", "im"]),
                y=alt.Y("usd:Q", title="USD"),
                color=alt.Color("figure:N", sort=["gross_im", "net_im", "portfolio_im", "im"]),
            )
            .properties(width=CHART_WIDTH, height=260, title="Initial margin by mode: charged (im) vs each method")
        )
    status = data["accounts_by_status"]
    if status.height:
        out["accounts_by_status"] = svg(
            alt.Chart(status)
            .mark_bar()
            .encode(
                y=alt.Y("kind:N", title=None),
                x=alt.X("accounts:Q", title="accounts"),
                color=status_colour("status"),
                order=alt.Order("status:N"),
            )
            .properties(width=CHART_WIDTH, height=110, title="Accounts by status")
        )
    deficits = data["top_deficits"]
    if deficits.height:
        out["top_deficits"] = svg(
            alt.Chart(deficits)
            .mark_bar()
            .encode(
                y=alt.Y("account_id:N", sort="-x", title=None),
                x=alt.X("binding_deficit:Q", title="USD to restore initial margin (binding book)"),
                color=status_colour("binding_status"),
            )
            .properties(width=CHART_WIDTH, height=max(60, 18 * deficits.height), title="Largest deficits")
        )
    # The accounts outside margin groups ("(none)") hold most of the book: on one axis with
    # the groups they make every group an invisible sliver, so they get their own panel.
    benefits = ["member_netting_benefit", "aggregation_benefit"]
    groups = data["netting_by_group"].filter(pl.col("margin_group") != NO_GROUP)
    if groups.height:
        out["netting_by_group"] = svg(
            alt.Chart(_long(groups, "margin_group", benefits, "benefit"))
            .mark_bar()
            .encode(
                y=alt.Y("margin_group:N", title="margin group", sort="-x"),
                x=alt.X("usd:Q", title="USD saved vs gross margin (negative: the group costs margin)"),
                color=alt.Color("benefit:N", sort=benefits),
            )
            .properties(width=CHART_WIDTH, height=max(60, 16 * groups.height),
                        title="Netting and aggregation benefit by margin group")
        )
    outside = data["netting_by_group"].filter(pl.col("margin_group") == NO_GROUP)
    if outside.height:
        accounts = outside["accounts"][0]
        out["netting_outside_groups"] = svg(
            alt.Chart(_long(outside, "margin_group", benefits, "benefit"))
            .mark_bar()
            .encode(
                y=alt.Y("benefit:N", title=None, sort=benefits),
                x=alt.X("usd:Q", title="USD saved vs gross margin"),
                color=alt.Color("benefit:N", sort=benefits, legend=None),
            )
            .properties(width=CHART_WIDTH, height=50,
                        title=f"Accounts outside margin groups ({accounts:,} accounts; own scale)")
        )
    risk = data["risk_by_underlying"]
    if risk.height:
        out["risk_by_underlying"] = svg(
            alt.Chart(_long(risk, "underlying", ["scan_risk", "calendar_charge", "short_option_min", "risk"]))
            .mark_bar()
            .encode(
                x=alt.X("underlying:N"),
                xOffset=alt.XOffset("figure:N"),
                y=alt.Y("usd:Q", title="USD"),
                color=alt.Color("figure:N"),
            )
            .properties(width=CHART_WIDTH, height=260, title="Risk by underlying (Σ over accounts)")
        )
    drivers = data["change_drivers"].filter(pl.col("prev_date").is_not_null())
    if drivers.height:
        out["change_drivers"] = svg(
            alt.Chart(drivers)
            .mark_bar()
            .encode(
                y=alt.Y("driver:N", title=None, sort=["collateral", "price", "positions"]),
                x=alt.X("change_usd:Q", title="USD change since the previous date"),
                row=alt.Row("measure:N", title=None),
                color=alt.condition("datum.change_usd < 0", alt.value("#c0392b"), alt.value("#4c9a2a")),
            )
            .properties(width=CHART_WIDTH, height=90, title="Day-over-day change by driver")
        )
    return out


STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1320px;
       padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.1em; } .sub { color: #666; margin-top: 0; }
section { margin: 2em 0; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.cards { display: flex; flex-wrap: wrap; gap: 1em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 150px; }
.card b { display: block; font-size: 1.3em; } .card span { color: #666; font-size: 0.85em; }
table { border-collapse: collapse; font-size: 0.85em; margin-top: 0.8em; }
th, td { border-bottom: 1px solid #eee; padding: 0.25em 0.5em; vertical-align: top; }
th { text-align: left; background: #f6f6f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.empty { color: #666; font-style: italic; }
.chart svg { max-width: 100%; height: auto; } .scroll { overflow-x: auto; }
td.txt { white-space: nowrap; } td.wrap { min-width: 22em; overflow-wrap: anywhere; }
.note { max-width: 60em; color: #333; }
"""


def stress_section(data: dict[str, pl.DataFrame]) -> str:
    """The stress block (SPEC §11): Cover 1 / Cover 2 per stress with the counterparties
    that make them (``stress_cover``), and the counterparties closest to liquidation on the
    ladder (``closest_to_liquidation``); a note when the date ran without stresses."""
    cover, closest = data["stress_cover"], data["closest_to_liquidation"]
    if cover.height == 0:
        return ('<p class="empty">no stress tests for this date (no stress_scenarios.parquet in the inputs)</p>')
    worst = cover.sort(["cover2_usd", "stress_id"], descending=[True, False]).row(0, named=True)
    lead = (
        f'<p>Largest Cover 2: <b>{_usd(worst["cover2_usd"])}</b> USD under <b>{html.escape(worst["stress_id"])}</b>'
        + (f' ({html.escape(worst["cover1_counterparty"])}'
           + (f' and {html.escape(worst["cover2_counterparty"])}' if worst["cover2_counterparty"] else "") + ")"
           if worst["cover1_counterparty"] else "")
        + ". Shortfall is the stressed loss a counterparty's own collateral does not cover; "
        "Cover 2 is the sum of the two largest (queries: <code>v_stress_cover</code>, "
        "<code>v_liquidation_distance</code>).</p>"
    )
    return (
        lead
        + "<h3>Cover 1 / Cover 2 per stress</h3>" + html_table(cover)
        + "<h3>Closest to liquidation (uniform move of every underlying)</h3>"
        + html_table(closest, "no counterparty breaches maintenance margin on any ladder rung")
    )


def quarantine_section(data: dict[str, pl.DataFrame]) -> str:
    """Quarantined input rows (SPEC §3): how many per table, per (table, reason) with the
    share of the table they were read from, and up to three sample rows per reason."""
    by_reason, samples = data["quarantine_by_reason"], data["quarantine_samples"]
    if by_reason.height == 0:
        return '<p class="empty">no input row was quarantined for this date</p>'
    per_table = (by_reason.group_by("source_table").agg(pl.col("rows").sum(), pl.col("rows_read").first())
                 .sort("source_table"))
    tables = "; ".join(
        f"{html.escape(row['source_table'])} {row['rows']:,}"
        + (f" of {row['rows_read']:,} read" if row["rows_read"] is not None else "")
        for row in per_table.iter_rows(named=True)
    )
    lead = (
        f'<p class="note"><b>{by_reason["rows"].sum():,}</b> input rows were set aside with a reason code and '
        f"margined by nobody ({tables}). Reason codes: docs/data_dictionary.md; every row: "
        "<code>select * from quarantine where as_of_date = …</code>, counts: <code>v_quarantine_summary</code>.</p>"
    )
    return (
        lead + "<h3>Rows by table and reason</h3>" + html_table(by_reason)
        + "<h3>Sample rows (up to 3 per reason)</h3>" + html_table(samples)
    )


def aggregation_note(data: dict[str, pl.DataFrame]) -> str:
    """The paragraph that explains a negative aggregation benefit, when a group has one."""
    negative = data["negative_aggregation"]
    if negative.height == 0:
        return ""
    examples = "; ".join(
        f"{html.escape(row['margin_group'])}: members ({html.escape(row['member_modes'])}) "
        f"{_usd(row['sum_member_im'])}, group {_usd(row['group_im'])}, "
        f"the portfolio method on each member alone {_usd(row['members_portfolio_im'])}"
        for row in negative.head(3).iter_rows(named=True)
    )
    return (
        f'<p class="note" id="negative-aggregation"><b>Negative aggregation benefit</b> '
        f"({negative.height:,} group{'s' if negative.height != 1 else ''}). "
        "A margin group is margined as one book by the portfolio method (SPEC §7), while each member "
        "is charged by its own margin mode: <i>isolated</i> pays the gross rule margin, <i>cross</i> the "
        "net rule margin (§5.3). For some books, short options above all, the rule margin is lower than "
        "what the scenario scan and the short option minimum charge, so the group's initial margin "
        "exceeds the sum of its members' and <code>aggregation_benefit = sum_member_im − group_im</code> "
        "is negative: the group costs margin instead of saving it. It is not an error. The portfolio "
        "method applied to each member alone shows how much is the method, not the aggregation. "
        f"Here (USD initial margin): {examples}.</p>"
    )


def render_html(as_of: dt.date, data: dict[str, pl.DataFrame]) -> str:
    """The whole page as text (deterministic for the same data)."""
    head = data["headline"].row(0, named=True)
    figures = charts(data)

    def chart(name: str) -> str:
        return f'<div class="chart" id="chart-{name}">{figures[name]}</div>' if name in figures else ""

    cards = [
        ("accounts", f"{head['accounts']:,}"),
        ("not ok (binding)", f"{head['accounts_not_ok']:,}"),
        ("initial margin (USD)", _usd(head["im"])),
        ("equity (USD)", _usd(head["equity"])),
        ("netting benefit (USD)", _usd(head["netting_benefit"])),
        ("aggregation benefit (USD)", _usd(head["aggregation_benefit"])),
        ("quarantined rows", f"{head['quarantined_rows']:,}"),
    ]
    prev = data["change_drivers"]["prev_date"].drop_nulls()
    change_title = f"Day-over-day change since {prev[0]}" if prev.len() else "Day-over-day change"
    sections = [
        ("Initial margin by mode", chart("im_by_mode") + html_table(data["im_by_mode"])),
        ("Accounts by status", chart("accounts_by_status") + html_table(data["accounts_by_status"])),
        ("Top deficits (margin calls and liquidations)",
         chart("top_deficits") + html_table(data["top_deficits"], "no account on margin call or in liquidation")),
        ("Netting and aggregation benefit",
         chart("netting_by_group") + chart("netting_outside_groups") + aggregation_note(data)
         + html_table(data["netting_by_group"])),
        ("Risk by underlying",
         chart("risk_by_underlying") + "".join(html_table(data["risk_by_underlying"].select(columns))
                                               for columns in RISK_TABLES)),
        (change_title,
         (chart("change_drivers") + "".join(html_table(data["top_movers"].select(columns))
                                            for columns in MOVER_TABLES))
         if prev.len() else '<p class="empty">no earlier date in the warehouse to compare with</p>'),
        ("Collateral by asset", html_table(data["collateral_by_asset"])),
        ("Stress tests: Cover 2 and the liquidation ladder", stress_section(data)),
        ("Quarantined input rows", quarantine_section(data)),
    ]
    card_html = "".join(f'<div class="card"><b>{v}</b><span>{html.escape(k)}</span></div>' for k, v in cards)
    return html_document(
        f"Margin report {as_of}", STYLE,
        f"<h1>End-of-day margin report — {as_of}</h1>"
        f'<p class="sub">All amounts in USD. Run {html.escape(str(head["run_id"]))}. '
        "Definitions: docs/data_dictionary.md.</p>"
        f'<div class="cards">{card_html}</div>',
        sections,
    )


def write_report(db: Path, as_of: dt.date, out: Path) -> Path:
    """Render the report of ``as_of`` to the HTML file ``out`` (written atomically), and
    the page of every account its tables show into ``accounts/`` beside it."""
    data = report_data(Path(db), as_of)
    page = render_html(as_of, data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from outputs.account_page import ACCOUNT_FOLDER, linked_accounts, write_account_pages

    write_account_pages(Path(db), as_of, linked_accounts(data), out.parent / ACCOUNT_FOLDER)
    temporary = out.with_name(out.name + ".partial")
    temporary.write_text(page, encoding="utf-8")
    os.replace(temporary, out)
    return out
