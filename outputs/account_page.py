"""Account pages of the HTML report: one self-contained page per account with the
derivation of ``margin explain`` (SPEC §13) and two small charts — the scenario losses
per underlying (worst scenario highlighted) and the collateral haircut tier by tier.

The report links every account id in its tables to ``accounts/<id>.html`` beside the
report file (``account_href``) and writes those pages (``write_account_pages``);
``margin report --date D --account A`` writes one page on request.  Like the report:
inline SVG (vl-convert), no script, no network, no clock time.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import os
from pathlib import Path
from urllib.parse import quote

import altair as alt
import polars as pl

from outputs.explain import explain_account
from outputs.html_page import html_document, svg

ACCOUNT_FOLDER = "accounts"
#: Report table columns holding an account id (linked to the account's page).
ACCOUNT_COLUMNS = ("account_id", "top_account_id")
WORST_COLOUR, OTHER_COLOUR, GAIN_COLOUR = "#c0392b", "#7f8c8d", "#4c9a2a"

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; }
h1 { margin-bottom: 0.1em; } .sub { color: #666; margin-top: 0; }
section { margin: 2em 0; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; } h3 { margin-bottom: 0.2em; }
table { border-collapse: collapse; font-size: 0.85em; margin-top: 0.6em; }
th, td { border-bottom: 1px solid #eee; padding: 0.25em 0.6em; } th { text-align: left; background: #f6f6f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .empty { color: #666; font-style: italic; }
.chart svg { max-width: 100%; height: auto; } .scroll { overflow-x: auto; }
.bind { font-weight: bold; color: #c0392b; } .rule { background: #f6f6f6; padding: 0.5em 0.8em; border-radius: 4px; }
"""


def account_file_name(account_id: str) -> str:
    """The page's file name: the id percent-encoded (ids may hold any character)."""
    return quote(account_id, safe="") + ".html"


def account_href(account_id: str) -> str:
    """Link from the report (in the same folder as ``accounts/``) to the account's page."""
    return f"{ACCOUNT_FOLDER}/{quote(account_file_name(account_id), safe='')}"


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list], numeric: list[bool] | None = None, empty: str = "none") -> str:
    if not rows:
        return f'<p class="empty">{html.escape(empty)}</p>'
    numeric = numeric or [False] * len(header)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="{"num" if is_num else "txt"}">{cell if isinstance(cell, Markup) else _num(cell)}</td>'
            for cell, is_num in zip(row, numeric)
        ) + "</tr>"
        for row in rows
    )
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


class Markup(str):
    """Already-escaped HTML for a table cell."""


def scenario_chart(doc: dict) -> str:
    """Scenario losses per underlying (one row of bars each), the worst scenario in red."""
    rows = [
        {"underlying": u["underlying"], "scenario": str(sid), "order": i, "loss_usd": loss,
         "kind": "worst" if sid == u["worst_scenario"] else ("loss" if loss > 0 else "gain")}
        for u in doc["underlyings"] for i, (sid, loss) in enumerate(zip(doc["scenario_ids"], u["scenario_losses"] or []))
    ]
    if not rows:
        return ""
    colour = alt.Color("kind:N", title=None, scale=alt.Scale(domain=["worst", "loss", "gain"],
                                                            range=[WORST_COLOUR, OTHER_COLOUR, GAIN_COLOUR]))
    chart = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        x=alt.X("scenario:N", sort=alt.EncodingSortField("order"), title="scenario"),
        y=alt.Y("loss_usd:Q", title="loss (USD)"),
        color=colour,
        tooltip=["underlying:N", "scenario:N", alt.Tooltip("loss_usd:Q", format=",.2f")],
    ).properties(width=420, height=110).facet(row=alt.Row("underlying:N", title=None)).resolve_scale(y="independent")
    return svg(chart)


def tier_chart(doc: dict) -> str:
    """Collateral per asset: the haircut of each tier stacked, and what is left after it."""
    rows = []
    for c in doc["collateral"]:
        for t in c["tiers"]:
            rows.append({"asset": c["asset"], "piece": f"haircut {t['haircut']:.0%} from {t['tier_start_usd']:,.0f}",
                         "usd": t["haircut_usd"], "order": 1})
        if not c["tiers"] and (c["haircut_usd"] or 0) > 0:
            rows.append({"asset": c["asset"], "piece": "haircut 100% (not eligible)", "usd": c["haircut_usd"], "order": 1})
        rows.append({"asset": c["asset"], "piece": "value after haircut", "usd": c["value_after_haircut_usd"], "order": 0})
    if not rows:
        return ""
    chart = alt.Chart(alt.Data(values=rows)).mark_bar().encode(
        y=alt.Y("asset:N", title=None),
        x=alt.X("usd:Q", title="USD", stack="zero"),
        color=alt.Color("piece:N", title=None),
        order=alt.Order("order:Q"),
        tooltip=["asset:N", "piece:N", alt.Tooltip("usd:Q", format=",.2f")],
    ).properties(width=520, height=max(40, 28 * len(doc["collateral"])))
    return svg(chart)


def _mark(flag: bool) -> Markup:
    return Markup('<span class="bind">◀ binds</span>' if flag else "")


def render_account_page(doc: dict) -> str:
    """The page of one ``explain_account`` document (deterministic for the same document)."""
    e = html.escape
    sections: list[tuple[str, str]] = []
    netted = {p["instrument_id"]: p for p in doc["positions"]}
    input_rows = []
    previous = None
    for row in doc["input_rows"]:
        first = row["instrument_id"] != previous
        p = netted.get(row["instrument_id"]) if first else None
        input_rows.append([row["instrument_id"] if first else "", row["source"] or "–", row["quantity"],
                           p["net_qty"] if p else None, p["gross_qty"] if p else None, p["source_count"] if p else None])
        previous = row["instrument_id"]
    quarantined = "".join(f"<p class=\"empty\">quarantined {e(q['source_table'])} row ({e(q['reason'])}): "
                          f"{e(str(q['row']))}</p>" for q in doc["quarantined_rows"])
    sections.append(("Input rows and netting (SPEC §4)",
                     _table(["instrument", "source", "quantity", "net_qty", "gross_qty", "rows"], input_rows,
                            [False, False, True, True, True, True]) + quarantined))
    sections.append(("Positions (SPEC §4, §5.1, §5.2)", _table(
        ["instrument", "kind", "net_qty", "price", "mv USD", "delta units", "delta USD", "vega USD/vol pt",
         "net_im USD", "gross_im USD", "worst-scenario loss USD"],
        [[p["instrument_id"], p["kind"], p["net_qty"], p["price"], p["mv_usd"], p["delta_units"], p["delta_usd"],
          p["vega_usd"], p["net_im"], p["gross_im"], p["worst_scenario_loss"]] for p in doc["positions"]],
        [False, False] + [True] * 9, "no positions")))
    per_underlying = []
    for u in doc["underlyings"]:
        scanned = u["scan_risk"] + u["calendar_charge"] - u["inter_credit"]
        som_binds = u["risk_binding"] == "short_option_min"
        per_underlying.append(
            f"<h3>{e(u['underlying'])}: R<sub>u</sub> = {_num(u['risk'])} USD</h3>"
            + _table(["term", "USD", "how", ""], [
                ["scan_risk", u["scan_risk"], f"worst scenario {u['worst_scenario']}" if u["worst_scenario"] is not None
                 else "no scenario loses", Markup("")],
                ["calendar_charge", u["calendar_charge"],
                 f"min(long {_num(u['calendar_long'], 4)}, short {_num(u['calendar_short'], 4)}) units × "
                 f"{_num(u['index_price'])} × {_num(u['index_fx'], 4)} × {_num(u['spread_rate'], 4)}", Markup("")],
                ["inter_credit", u["inter_credit"], "offsets below", Markup("")],
                ["scan_risk + calendar_charge − inter_credit", scanned, "", _mark(not som_binds)],
                ["short_option_min", u["short_option_min"],
                 f"max(short calls {_num(u['short_calls'], 4)}, short puts {_num(u['short_puts'], 4)}) units × "
                 f"{_num(u['index_price'])} × {_num(u['index_fx'], 4)} × {_num(u['short_option_min_rate'], 4)}",
                 _mark(som_binds)],
            ], [False, True, False, False])
            + _table(["calendar bucket", "delta units"], [[b["bucket"], b["delta_units"]] for b in u["calendar_buckets"]],
                     [False, True])
            + _table(["instrument", "net_qty", "worst-scenario loss USD"],
                     [[p["instrument_id"], p["net_qty"], p["worst_scenario_loss"]] for p in u["positions"]]
                     + [["Σ = scan_risk", None, sum(p["worst_scenario_loss"] or 0 for p in u["positions"])]],
                     [False, True, True])
        )
    offsets = _table(
        ["priority", "pair", "d_a units", "d_b units", "n", "w_a USD/unit", "w_b USD/unit", "rate", "credit_a USD",
         "credit_b USD"],
        [[o["priority"], f"{o['underlying_a']}/{o['underlying_b']}", o["d_a"], o["d_b"], o["n"], o["w_a"], o["w_b"],
          o["credit_rate"], o["credit_a"], o["credit_b"]] for o in doc["offsets"]],
        [True, False] + [True] * 8, "no offset gave a credit")
    sections.append(("Portfolio margin per underlying (SPEC §5.2)",
                     f'<div class="chart" id="chart-scenarios">{scenario_chart(doc)}</div>'
                     + "".join(per_underlying) + "<h3>Offsets</h3>" + offsets))
    source = doc["im_source"]
    sections.append(("Initial and maintenance margin (SPEC §5.3)", _table(
        ["figure", "USD", ""],
        [[name, doc[name], Markup('<span class="bind">◀ im</span>' if name == source else "")]
         for name in ("gross_im", "net_im", "portfolio_im")]
        + [["im", doc["im"], doc["im_rule"]], ["mm", doc["mm"], f"im × {doc['maintenance_ratio']}"]],
        [False, True, False])))
    collateral_rows = []
    for c in doc["collateral"]:
        collateral_rows.append([c["asset"], c["amount"], c["usd_rate"], c["value_usd"], None, None, c["haircut_usd"],
                                c["value_after_haircut_usd"], c["haircut_rule"]])
        for t in c["tiers"]:
            collateral_rows.append(["", None, None, None, t["tier_start_usd"], f"{t['haircut']:.2%}", t["haircut_usd"],
                                    None, ""])
    sections.append(("Collateral, tier by tier (SPEC §6)",
                     f'<div class="chart" id="chart-tiers">{tier_chart(doc)}</div>'
                     + _table(["asset", "amount", "usd_rate", "value USD", "tier from USD", "haircut", "haircut USD",
                               "after haircut USD", ""], collateral_rows,
                              [False, True, True, True, True, True, True, True, False], "no collateral")))
    sections.append(("Equity, excess and status (SPEC §6)", _table(
        ["figure", "value", ""],
        [["collateral_value_usd", doc["collateral_value_usd"], "USD"], ["position_value_usd", doc["position_value_usd"], "USD"],
         ["equity", doc["equity"], "USD"], ["excess", doc["excess"], "USD, equity − im"],
         ["margin_ratio", doc["margin_ratio"], "mm / equity"]], [False, True, False])
        + f'<p class="rule">status <b>{e(doc["status"])}</b>: {e(doc["status_rule"])}<br>'
        f'binding_status <b>{e(doc["binding_status"])}</b>: {e(doc["binding_status_rule"])}</p>'))
    if doc.get("group"):
        g = doc["group"]
        sections.append((f"Margin group {doc['margin_group']} (SPEC §7)", _table(
            ["figure", "value"], [[k, g[k]] for k in ("member_count", "sum_member_im", "group_im", "aggregation_benefit",
                                                     "group_equity", "group_excess", "status")], [False, True])))
    change = doc.get("change")
    if change:
        sections.append((f"Since {change['prev_date']}", _table(
            ["measure", "before", "now", "change", "driver", "USD"],
            [["im", change["prev_im"], change["im"], change["im_change"], "price", change["im_price_effect"]],
             ["", None, None, None, "positions", change["im_position_effect"]],
             ["equity", change["prev_equity"], change["equity"], change["equity_change"], "collateral",
              change["equity_collateral_effect"]],
             ["", None, None, None, "price", change["equity_price_effect"]],
             ["", None, None, None, "positions", change["equity_position_effect"]]],
            [False, True, True, True, False, True])
            + _table(["instrument", "net_qty before", "net_qty now", "Δ mv USD", "Δ net_im USD", "Δ worst-scenario loss USD"],
                     [[m["instrument_id"], m["prev_net_qty"], m["net_qty"], m["mv_change"], m["net_im_change"],
                       m["worst_scenario_loss_change"]] for m in change["positions_moved"]], [False] + [True] * 5)))
    return html_document(
        f"Account {doc['account_id']} {doc['as_of_date']}", STYLE,
        f"<h1>Account {e(doc['account_id'])} — {doc['as_of_date']}: {e(doc['status'])}</h1>"
        f'<p class="sub">Margin mode {e(doc["margin_mode"] or "unknown")}; run {e(doc["run_id"])}; amounts in USD. '
        f"The same derivation as <code>margin explain --date {doc['as_of_date']} --account {e(doc['account_id'])}</code>.</p>",
        sections,
    )


def write_page(text: str, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".partial")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, out)
    return out


def write_account_page(db: Path, as_of: dt.date, account_id: str, out: Path, inputs_root: Path | None = None) -> Path:
    """One account's page into the file ``out``."""
    return write_page(render_account_page(explain_account(Path(db), as_of, account_id, inputs_root)), out)


def unavailable_page(account_id: str, as_of: dt.date, reason: str) -> str:
    """The page of an account whose derivation cannot be made (e.g. the run's inputs are gone)."""
    e = html.escape
    return html_document(
        f"Account {account_id} {as_of}", STYLE,
        f"<h1>Account {e(account_id)} — {as_of}</h1><p class=\"empty\">The derivation cannot be shown: {e(reason)}. "
        f"Try <code>margin explain --date {as_of} --account {e(account_id)} --inputs DIR</code>.</p>",
        [],
    )


def write_account_pages(db: Path, as_of: dt.date, account_ids: list[str], folder: Path) -> list[Path]:
    """The pages of ``account_ids`` into ``folder`` (``accounts/`` beside the report); an
    account whose derivation cannot be made gets a page that says why (no dead link)."""
    from outputs.explain import ExplainError

    written = []
    for account_id in sorted(set(account_ids)):
        target = Path(folder) / account_file_name(account_id)
        try:
            written.append(write_account_page(db, as_of, account_id, target))
        except ExplainError as error:
            written.append(write_page(unavailable_page(account_id, as_of, str(error)), target))
    return written


def linked_accounts(frames: dict[str, pl.DataFrame]) -> list[str]:
    """Every account id shown in the report's tables (its ``ACCOUNT_COLUMNS``)."""
    ids: set[str] = set()
    for frame in frames.values():
        for column in ACCOUNT_COLUMNS:
            if column in frame.columns:
                ids.update(v for v in frame.get_column(column).to_list() if v is not None)
    return sorted(ids)
