"""Terminal rendering of a ``margin explain`` document (``outputs.explain``) with rich.

Sections in the order of the derivation (SPEC §13): inputs → netted positions →
valuation and rule margin → per underlying scan, calendar, short option minimum and
R_u → offsets → gross / net / portfolio and im → collateral tier by tier → equity,
excess, status → group → change since the previous date.  Amounts in USD with two
decimals, quantities as given; every table's numbers right-aligned; ``◀`` marks the
binding term of each max and the worst scenario.
"""

from __future__ import annotations

import math

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

MARK = "◀"
#: Members listed in a group's "what changed" (largest im moves first).
TOP_MEMBERS = 10


def usd(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return "0.00" if abs(value) < 0.005 else f"{value:,.2f}"  # no "-0.00"


def qty(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value + 0.0:,.6g}" if abs(value) < 1e6 else f"{value:,.2f}"  # + 0.0: no "-0"


def ratio(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def table(*columns: str) -> Table:
    """A compact table; columns named ``…:l`` are left-aligned, the rest (numbers) right."""
    out = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in columns:
        name, _, align = column.partition(":")
        out.add_column(name, justify="left" if align == "l" else "right", no_wrap=True)
    return out


def heading(console: Console, text: str) -> None:
    console.print()
    console.rule(Text(text, style="bold"), align="left")


def _inputs(console: Console, doc: dict) -> None:
    inputs = doc["inputs"]
    console.print(f"inputs: {inputs['root']}")
    if inputs.get("changed_files"):
        console.print(Text(
            f"warning: these inputs changed since run {doc['run_id']} (checksums differ): "
            + ", ".join(inputs["changed_files"]) + "; the recomputed details may not match the published figures",
            style="bold yellow",
        ))
    heading(console, "Input rows → netted positions (SPEC §4)")
    netted = {p["instrument_id"]: p for p in doc.get("positions", [])}
    rows = table("account:l", "instrument:l", "source:l", "quantity", "net_qty", "gross_qty", "rows") if doc["kind"] == "group" \
        else table("instrument:l", "source:l", "quantity", "net_qty", "gross_qty", "rows")
    previous = None
    for row in doc["input_rows"]:
        key = (row["account_id"], row["instrument_id"])
        first = row["instrument_id"] != previous
        position = netted.get(row["instrument_id"]) if first else None
        cells = [row["instrument_id"] if first else "", row["source"] or "—", qty(row["quantity"]),
                 qty(position["net_qty"]) if position else "", qty(position["gross_qty"]) if position else "",
                 str(position["source_count"]) if position else ""]
        if doc["kind"] == "group":
            cells = [row["account_id"], *cells]
        rows.add_row(*cells)
        previous = row["instrument_id"]
        del key
    console.print(rows)
    for row in doc.get("quarantined_rows", []):
        console.print(Text(f"quarantined {row['source_table']} row ({row['reason']}): {row['row']}", style="yellow"))


def _positions(console: Console, doc: dict) -> None:
    heading(console, "Positions: valuation and greeks (SPEC §4), rule margin (§5.1), worst-scenario loss (§5.2)")
    out = table("instrument:l", "kind:l", "net_qty", "price", "mv USD", "delta units", "delta USD", "gamma units",
                "vega USD/vol pt", "theta USD/day")
    for p in doc["positions"]:
        out.add_row(p["instrument_id"], p["kind"], qty(p["net_qty"]), qty(p["price"]), usd(p["mv_usd"]),
                    qty(p["delta_units"]), usd(p["delta_usd"]), qty(p["gamma_units"]), usd(p["vega_usd"]),
                    usd(p["theta_usd"]))
    console.print(out)
    margin = table("instrument:l", "net_im USD", "gross_im USD", "worst-scenario loss USD")
    for p in doc["positions"]:
        margin.add_row(p["instrument_id"], usd(p["net_im"]), usd(p["gross_im"]), usd(p["worst_scenario_loss"]))
    margin.add_row(Text("Σ", style="bold"), usd(sum(p["net_im"] or 0 for p in doc["positions"])),
                   usd(sum(p["gross_im"] or 0 for p in doc["positions"])), "")
    console.print(margin)


def _underlying_tree(doc: dict, u: dict) -> Tree:
    binding_som = u["risk_binding"] == "short_option_min"
    tree = Tree(Text(f"{u['underlying']}: R_u = {usd(u['risk'])} USD", style="bold"))
    scenarios = table("scenario", "loss USD", ":l")
    for sid, loss in zip(doc["scenario_ids"], u["scenario_losses"] or []):
        worst = sid == u["worst_scenario"]
        scenarios.add_row(str(sid), usd(loss), Text(f"{MARK} worst", style="bold red") if worst else "")
    worst_text = "none (no scenario loses: scan_risk = 0)" if u["worst_scenario"] is None else str(u["worst_scenario"])
    node = tree.add(Group(Text("scenario losses: loss_k = −cover_k × Σ net_qty × pnl_unit_k", style="italic"), scenarios, Text(f"scan_risk = max(0, max_k loss_k) = {usd(u['scan_risk'])} USD; "
                                           f"worst scenario {worst_text}")))
    shares = table("instrument:l", "net_qty", "worst-scenario loss USD")
    for p in u["positions"]:
        shares.add_row(p["instrument_id"], qty(p["net_qty"]), usd(p["worst_scenario_loss"]))
    shares.add_row(Text("Σ = scan_risk", style="bold"), "", usd(sum(p["worst_scenario_loss"] or 0 for p in u["positions"])))
    node.add(Group(Text("each position's share of the worst-scenario loss", style="italic"), shares))
    buckets = table("bucket:l", "delta units")
    for b in u["calendar_buckets"]:
        buckets.add_row(str(b["bucket"]), qty(b["delta_units"]))
    tree.add(Group(Text("calendar buckets: Σ delta_units by expiry (spot, perpetuals apart)", style="italic"), buckets, Text(
        f"calendar_charge = min(long {qty(u['calendar_long'])}, short {qty(u['calendar_short'])}) units × S_u "
        f"{usd(u['index_price'])} × fx_u {qty(u['index_fx'])} × spread_rate {qty(u['spread_rate'])} = "
        f"{usd(u['calendar_charge'])} USD")))
    tree.add(Text(
        f"short_option_min = max(short calls {qty(u['short_calls'])}, short puts {qty(u['short_puts'])}) units × S_u "
        f"{usd(u['index_price'])} × fx_u {qty(u['index_fx'])} × rate {qty(u['short_option_min_rate'])} = "
        f"{usd(u['short_option_min'])} USD"))
    tree.add(Text(f"inter_credit (offsets below) = {usd(u['inter_credit'])} USD"))
    scanned = u["scan_risk"] + u["calendar_charge"] - u["inter_credit"]
    formula = Table.grid(padding=(0, 2))
    formula.add_column()
    formula.add_column(justify="right")
    formula.add_column()
    formula.add_row("scan_risk + calendar_charge − inter_credit", usd(scanned),
                    Text(f"{MARK} binds", style="bold") if not binding_som else "")
    formula.add_row("short_option_min", usd(u["short_option_min"]), Text(f"{MARK} binds", style="bold") if binding_som else "")
    formula.add_row(Text("R_u = max of the two", style="bold"), usd(u["risk"]), "USD")
    tree.add(formula)
    return tree


def _underlyings(console: Console, doc: dict) -> None:
    heading(console, "Portfolio margin per underlying (SPEC §5.2)")
    if not doc["underlyings"]:
        console.print("no positions")
    for u in doc["underlyings"]:
        console.print(_underlying_tree(doc, u))
    if doc["offsets"]:
        console.print(Text("inter-underlying offsets that gave a credit, ascending priority: n = min(|d_a|/ratio_a, "
                           "|d_b|/ratio_b), w = min(SR/|Δ|, price_scan × S × fx), credit = rate × n × ratio × w",
                           style="italic"))
        out = table("priority", "pair:l", "ratio a:b:l", "d_a units", "d_b units", "n legs", "w_a USD/unit",
                    "w_b USD/unit", "rate", "credit_a USD", "credit_b USD")
        for o in doc["offsets"]:
            out.add_row(str(o["priority"]), f"{o['underlying_a']}/{o['underlying_b']}", f"{qty(o['ratio_a'])}:{qty(o['ratio_b'])}",
                        qty(o["d_a"]), qty(o["d_b"]), qty(o["n"]), usd(o["w_a"]), usd(o["w_b"]), qty(o["credit_rate"]),
                        usd(o["credit_a"]), usd(o["credit_b"]))
        console.print(out)
    else:
        console.print("no offset gave a credit (no pair of underlyings with opposite remaining deltas)")


def _margin(console: Console, doc: dict) -> None:
    heading(console, "Initial and maintenance margin (SPEC §5.3)")
    out = table("figure:l", "USD", ":l")
    source = doc["im_source"]
    for name, note in (("gross_im", "Σ rule margin of every input row"), ("net_im", "Σ rule margin of the netted positions"),
                       ("portfolio_im", "Σ_u R_u")):
        out.add_row(name, usd(doc[name]), Text(f"{MARK} im  ({note})", style="bold") if name == source else note)
    out.add_row("inter_credit", usd(doc["inter_credit"]), "Σ_u credit_u (inside portfolio_im)")
    out.add_row(Text("im", style="bold"), usd(doc["im"]), doc["im_rule"])
    out.add_row("mm", usd(doc["mm"]), f"im × maintenance_ratio {doc['maintenance_ratio']}")
    out.add_row("netting_benefit", usd(doc["netting_benefit"]), "gross_im − im")
    console.print(out)


def _collateral(console: Console, doc: dict) -> None:
    heading(console, "Collateral after FX and tiered haircuts (SPEC §6)")
    out = table("asset:l", "amount", "usd_rate", "value USD", "tier from USD", "haircut", "haircut USD", "after haircut USD",
                ":l")
    for c in doc["collateral"]:
        out.add_row(c["asset"], qty(c["amount"]), qty(c["usd_rate"]), usd(c["value_usd"]), "", "", usd(c["haircut_usd"]),
                    usd(c["value_after_haircut_usd"]), c["haircut_rule"])
        for t in c["tiers"]:
            out.add_row("", "", "", "", usd(t["tier_start_usd"]), f"{t['haircut']:.2%}", usd(t["haircut_usd"]), "", "")
    out.add_row(Text("Σ", style="bold"), "", "", usd(sum(c["value_usd"] or 0 for c in doc["collateral"])), "", "",
                usd(sum(c["haircut_usd"] or 0 for c in doc["collateral"])),
                usd(sum(c["value_after_haircut_usd"] or 0 for c in doc["collateral"])), "= collateral_value_usd")
    console.print(out)


def _health(console: Console, doc: dict) -> None:
    heading(console, "Equity, excess and status (SPEC §6" + (", §7)" if doc["kind"] == "group" else ")"))
    out = table("figure:l", "USD", ":l")
    out.add_row("collateral_value_usd", usd(doc["collateral_value_usd"]), "collateral after haircuts")
    out.add_row("position_value_usd", usd(doc["position_value_usd"]), "Σ mv of option and spot positions")
    out.add_row(Text("equity", style="bold"), usd(doc["equity"]), "collateral_value_usd + position_value_usd")
    out.add_row("im", usd(doc["im"]), "")
    out.add_row("mm", usd(doc["mm"]), "")
    out.add_row(Text("excess", style="bold"), usd(doc["excess"]), "equity − im")
    if doc["kind"] == "account":
        out.add_row("margin_ratio", ratio(doc["margin_ratio"]), "mm / equity (ratio; null when equity ≤ 0)")
    console.print(out)
    console.print(Text(f"status: {doc['status']} — {doc['status_rule']}", style="bold"))
    if doc["kind"] == "account":
        console.print(f"binding_status: {doc['binding_status']} — {doc['binding_status_rule']}")


def _group(console: Console, doc: dict) -> None:
    group = doc.get("group")
    if not group:
        return
    heading(console, f"Margin group {doc['margin_group']} (SPEC §7; `margin explain --group {doc['margin_group']}`)")
    out = table("figure:l", "value", ":l")
    out.add_row("member_count", str(group["member_count"]), "")
    out.add_row("sum_member_im", usd(group["sum_member_im"]), "USD, Σ members' im by their own modes")
    out.add_row("group_im", usd(group["group_im"]), "USD, the pooled book in portfolio mode")
    out.add_row("aggregation_benefit", usd(group["aggregation_benefit"]), "USD, sum_member_im − group_im")
    out.add_row("group_equity", usd(group["group_equity"]), "USD")
    out.add_row("group_excess", usd(group["group_excess"]), "USD")
    out.add_row("status", group["status"], "→ this account's binding_status")
    console.print(out)


def _members(console: Console, doc: dict) -> None:
    heading(console, f"Members of {doc['margin_group']} ({doc['member_count']})")
    out = table("account:l", "mode:l", "im USD", "equity USD", "status:l")
    for m in doc["members"]:
        out.add_row(m["account_id"], m["margin_mode"] or "—", usd(m["im"]), usd(m["equity"]), m["status"])
    out.add_row(Text("sum_member_im", style="bold"), "", usd(doc["sum_member_im"]), "", "")
    out.add_row("group_im", "", usd(doc["group_im"]), "", "")
    out.add_row("aggregation_benefit", "", usd(doc["aggregation_benefit"]), "", "")
    console.print(out)


def _group_change(console: Console, doc: dict) -> None:
    change = doc.get("change")
    heading(console, "What changed since the previous published date (group_margin, members' account_margin)")
    if not change:
        console.print("no earlier date is published")
        return
    console.print(f"{change['prev_date']} → {change['as_of_date']}: status {change['prev_status'] or '—'} → "
                  f"{change['status'] or '—'}" + (" (the group is new today)" if change["new_today"] else ""))
    out = table("measure:l", "before USD", "now USD", "change USD")
    for figure in ("group_im", "sum_member_im", "aggregation_benefit", "group_equity", "group_excess"):
        out.add_row(figure, usd(change[f"prev_{figure}"]), usd(change[figure]), usd(change[f"{figure}_change"]))
    console.print(out)
    moved = [m for m in change["members_moved"] if m["im_change"] or m["equity_change"] or m["status"] != m["prev_status"]]
    if moved:
        console.print(Text("members that moved most (by Δ im; each member's drivers: margin explain --account)",
                           style="italic"))
        out = table("account:l", "status before:l", "status now:l", "im before USD", "im now USD", "Δ im USD",
                    "Δ equity USD")
        for m in moved[:TOP_MEMBERS]:
            out.add_row(m["account_id"], m["prev_status"] or "—", m["status"] or "—", usd(m["prev_im"]), usd(m["im"]),
                        usd(m["im_change"]), usd(m["equity_change"]))
        console.print(out)


def _change(console: Console, doc: dict) -> None:
    change = doc.get("change")
    if doc["kind"] != "account":
        _group_change(console, doc)
        return
    heading(console, "What changed since the previous published date (v_account_change)")
    if not change:
        console.print("no earlier date is published")
        return
    console.print(f"{change['prev_date']} → {change['as_of_date']}: status {change['prev_status'] or '—'} → "
                  f"{change['status'] or '—'}, mode {change['prev_margin_mode'] or '—'} → {change['margin_mode'] or '—'}")
    out = table("measure:l", "before USD", "now USD", "change USD", "driver:l", "USD")
    out.add_row("im", usd(change["prev_im"]), usd(change["im"]), usd(change["im_change"]), "price", usd(change["im_price_effect"]))
    out.add_row("", "", "", "", "positions", usd(change["im_position_effect"]))
    out.add_row("equity", usd(change["prev_equity"]), usd(change["equity"]), usd(change["equity_change"]), "collateral",
                usd(change["equity_collateral_effect"]))
    out.add_row("", "", "", "", "price", usd(change["equity_price_effect"]))
    out.add_row("", "", "", "", "positions", usd(change["equity_position_effect"]))
    console.print(out)
    moved = change["positions_moved"]
    if moved:
        figure = change["margin_figure"]
        console.print(Text(f"positions that moved most (by Δ {figure}, the figure of this account's mode)", style="italic"))
        out = table("instrument:l", "net_qty before", "net_qty now", "Δ mv USD", "Δ net_im USD", "Δ worst-scenario loss USD")
        for m in moved:
            out.add_row(m["instrument_id"], qty(m["prev_net_qty"]), qty(m["net_qty"]), usd(m["mv_change"]),
                        usd(m["net_im_change"]), usd(m["worst_scenario_loss_change"]))
        console.print(out)


def render(doc: dict, console: Console | None = None) -> None:
    console = console or Console(width=170)
    if doc["kind"] == "account":
        title = (f"Account {doc['account_id']} on {doc['as_of_date']}: {doc['status']}"
                 f" (binding {doc['binding_status']}), margin mode {doc['margin_mode'] or 'unknown'}"
                 + (f", group {doc['margin_group']}" if doc["margin_group"] else "")
                 + ("" if doc["complete"] else ", INCOMPLETE (rows quarantined)"))
    else:
        title = f"Margin group {doc['margin_group']} on {doc['as_of_date']}: {doc['status']}, {doc['member_count']} members"
    console.print(Text(title, style="bold"))
    console.print(f"run {doc['run_id']}; amounts in USD")
    _inputs(console, doc)
    if doc["kind"] == "group":
        _members(console, doc)
    else:
        _positions(console, doc)
    _underlyings(console, doc)
    if doc["kind"] == "account":
        _margin(console, doc)
    else:
        heading(console, "Group margin (SPEC §7)")
        console.print(f"group_im = Σ R_u = {usd(doc['group_im'])} USD; mm = group_im × {doc['maintenance_ratio']} = "
                      f"{usd(doc['mm'])} USD")
    _collateral(console, doc)
    _health(console, doc)
    _group(console, doc)
    _change(console, doc)
