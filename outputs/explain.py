"""``margin explain``: how one account's (or margin group's) published figures were reached (SPEC §13).

Data gathering (``explain_account``, ``explain_group``) returns one plain dict — the
JSON document of ``--format json`` — built from

- the published tables, read for that account (or group) only: DuckDB ``WHERE
  as_of_date = ? AND account_id = ?`` (the tables are stored in account order, so the
  zone maps skip the rest of the day);
- the date's inputs, by default those recorded in the date's ``runs`` row: the
  account's positions and collateral rows only (``pl.scan_parquet(...).filter(...)``:
  row groups of other accounts are skipped), the small reference tables in full;
- the transforms the run uses, applied to those rows for the parts no table
  publishes: calendar buckets, short option quantities, each offset's credit step,
  haircut tier by tier; a group's book (its members' positions and collateral pooled)
  goes through ``compute_margin`` as one small book.

Every figure that has a published column is shown as published.  ``render_text``
prints the document with rich.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import math
from dataclasses import replace
from pathlib import Path

import duckdb
import polars as pl

from flows.loading import LoadedInputs, StructuralError, load_inputs
from flows.settings import SQL_DIR
from flows.warehouse import open_warehouse
from transforms import collateral as coll
from transforms import portfolio_margin, validation
from transforms.pipeline import compute_margin

#: Daily input tables read for the explained accounts only (filter pushdown on account_id).
ACCOUNT_TABLES = ("positions", "collateral", "accounts")
#: Positions shown in "what changed" (largest moves first).
TOP_MOVERS = 5


class ExplainError(RuntimeError):
    """One-line operator error: unknown account or group, date not published, missing inputs."""


# --------------------------------------------------------------------------- published rows


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict]:
    return con.sql(sql, params=params).pl().to_dicts()


def published_dates(con: duckdb.DuckDBPyConnection) -> list[dt.date]:
    return [r[0] for r in con.sql("SELECT DISTINCT as_of_date FROM account_margin ORDER BY 1").fetchall()]


def _check_date(con: duckdb.DuckDBPyConnection, as_of: dt.date, db: Path) -> list[dt.date]:
    dates = published_dates(con)
    if as_of not in dates:
        if not dates:
            raise ExplainError(f"no date is published in {db} (run `margin run --date {as_of}` first)")
        nearest = sorted(dates, key=lambda d: (abs((d - as_of).days), d))[:3]
        raise ExplainError(
            f"{as_of} is not published in {db}; nearest published dates: "
            + ", ".join(d.isoformat() for d in sorted(nearest))
            + (f" ({len(dates)} dates from {dates[0]} to {dates[-1]})" if len(dates) > 1 else " (the only one)")
        )
    return dates


def _similar(con: duckdb.DuckDBPyConnection, sql: str, params: list, wanted: str) -> list[str]:
    """Up to 3 ids close to ``wanted``: DuckDB ranks the candidates by edit distance, then
    Jaro-Winkler similarity (no pass of Python over a million ids); difflib orders the best 20."""
    candidates = [r[0] for r in con.sql(sql, params=params).fetchall()]
    return difflib.get_close_matches(wanted, candidates, n=3, cutoff=0.5) or candidates[:3]


def _unknown(con, kind: str, wanted: str, as_of: dt.date, table: str, column: str) -> ExplainError:
    similar = _similar(
        con,
        f"SELECT DISTINCT {column} FROM {table} WHERE as_of_date = $1 AND {column} IS NOT NULL "
        f"ORDER BY levenshtein({column}, $2), jaro_winkler_similarity({column}, $2) DESC, {column} LIMIT 20",
        [as_of, wanted],
        wanted,
    )
    count = con.sql(f"SELECT count(DISTINCT {column}) FROM {table} WHERE as_of_date = $1", params=[as_of]).fetchall()[0][0]
    hint = f"; similar: {', '.join(similar)}" if similar else ""
    return ExplainError(f"{kind} {wanted!r} is not in the results of {as_of} ({count} {kind}s published){hint}")


def _select_for(con, table: str, as_of: dt.date, column: str, values: list[str], order: str) -> pl.DataFrame:
    placeholders = ", ".join(f"${i + 2}" for i in range(len(values)))
    return con.sql(
        f"SELECT * FROM {table} WHERE as_of_date = $1 AND {column} IN ({placeholders}) ORDER BY {order}",
        params=[as_of, *values],
    ).pl()


def _run_record(con, run_id: str) -> dict:
    rows = _rows(con, "SELECT run_id, parameters, input_checksums, code_version FROM runs WHERE run_id = $1", [run_id])
    if not rows:
        return {"run_id": run_id, "parameters": {}, "input_checksums": {}}
    row = rows[0]
    row["parameters"] = json.loads(row["parameters"] or "{}")
    row["input_checksums"] = json.loads(row["input_checksums"] or "{}")
    return row


def _quarantined(con, as_of: dt.date, account_ids: list[str]) -> list[dict]:
    placeholders = ", ".join(f"${i + 2}" for i in range(len(account_ids)))
    rows = _rows(
        con,
        "SELECT source_table, reason, row_json FROM quarantine WHERE as_of_date = $1 AND "
        f"json_extract_string(row_json, '$.account_id') IN ({placeholders}) ORDER BY source_table, reason, row_json",
        [as_of, *account_ids],
    )
    return [{"source_table": r["source_table"], "reason": r["reason"], "row": json.loads(r["row_json"])} for r in rows]


# --------------------------------------------------------------------------- inputs


def load_book_inputs(inputs_root: Path, as_of: dt.date, account_ids: list[str]) -> LoadedInputs:
    """The date's inputs with the daily positions, collateral and accounts rows of
    ``account_ids`` only (Parquet filter pushdown); reference tables in full."""
    loaded = load_inputs(inputs_root, as_of, scan=ACCOUNT_TABLES)
    inputs = loaded.margin_inputs
    wanted = pl.col("account_id").is_in(account_ids)
    frames = pl.collect_all([getattr(inputs, t).filter(wanted) for t in ACCOUNT_TABLES])
    return replace(loaded, margin_inputs=replace(inputs, **{t: f.lazy() for t, f in zip(ACCOUNT_TABLES, frames)}))


def _inputs_for(run: dict, inputs_root: Path | None, as_of: dt.date, account_ids: list[str]) -> tuple[LoadedInputs, dict]:
    recorded = run["parameters"].get("inputs")
    root = Path(inputs_root) if inputs_root else (Path(recorded) if recorded else None)
    if root is None:
        raise ExplainError(f"the run {run['run_id']} of {as_of} recorded no inputs folder; pass --inputs DIR")
    try:
        loaded = load_book_inputs(root, as_of, account_ids)
    except StructuralError as error:
        raise ExplainError(f"inputs of {as_of}: {error}") from error
    recorded_sums = run.get("input_checksums") or {}
    changed = sorted(
        name for name, checksum in loaded.checksums.items() if name in recorded_sums and checksum != recorded_sums[name]
    )
    info = {"root": str(root), "recorded_root": recorded, "changed_files": changed}
    return loaded, info


def _market(inputs) -> pl.DataFrame:
    """One row per usable instrument with its market data and its underlying's
    parameters (``validation.instrument_market``, as the run builds it)."""
    fx = validation.usable_fx(validation.check_fx_rates(inputs.fx_rates))
    return validation.instrument_market(
        validation.usable_rows(validation.check_instruments(inputs.instruments)),
        validation.usable_rows(validation.check_prices(inputs.prices)),
        fx,
        inputs.risk_params.lazy(),
        inputs.as_of,
    ).filter(pl.col("hold_reason").is_null()).collect()


UNDERLYING_PARAMS = ("index_price", "index_fx", "price_scan", "spread_rate", "short_option_min_rate")


def _underlying_params(market: pl.DataFrame) -> pl.DataFrame:
    return market.select("underlying", *UNDERLYING_PARAMS).unique("underlying").sort("underlying")


# --------------------------------------------------------------------------- derivation


def im_rule(margin_mode: str | None) -> str:
    return {
        "isolated": "isolated mode: im = gross_im (every input row margined on its own)",
        "cross": "cross mode: im = net_im (rule margin of the netted positions)",
        "portfolio": "portfolio mode: im = portfolio_im (Σ R_u of the scenario scan)",
    }.get(margin_mode or "", "margin mode unknown: im = max(gross_im, net_im, portfolio_im), the most conservative")


def im_source(row: dict) -> str:
    """Which figure ``im`` is: the mode's, or for an unknown mode the largest one."""
    mode = row.get("margin_mode")
    if mode in ("isolated", "cross", "portfolio"):
        return {"isolated": "gross_im", "cross": "net_im", "portfolio": "portfolio_im"}[mode]
    figures = {name: row[name] or 0.0 for name in ("gross_im", "net_im", "portfolio_im")}
    return max(figures, key=lambda name: figures[name])


def status_rule(status: str, equity: float, im: float, mm: float, position_count: int) -> str:
    """The SPEC §6 rule that decided ``status``, in words with the figures."""
    money = _money
    if position_count == 0 and im == 0:
        if status == "deficit":
            return f"no positions and im = 0, and equity {money(equity)} < 0: deficit"
        return f"no positions and im = 0, and equity {money(equity)} ≥ 0: ok"
    if status == "liquidation":
        if equity <= 0:
            return f"equity {money(equity)} ≤ 0: liquidation"
        return f"equity {money(equity)} < mm {money(mm)}: liquidation"
    if status == "margin_call":
        return f"mm {money(mm)} ≤ equity {money(equity)} < im {money(im)}: margin call"
    return f"equity {money(equity)} ≥ im {money(im)} (and > 0): ok"


def risk_binding(row: dict) -> str:
    scanned = row["scan_risk"] + row["calendar_charge"] - row["inter_credit"]
    return "short_option_min" if row["short_option_min"] > scanned else "scan_risk + calendar_charge − inter_credit"


def _money(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.2f} USD"


POSITION_KEYS = ("instrument_id", "kind", "net_qty", "worst_scenario_loss", "net_im", "gross_im")


def _underlyings(
    risk: pl.DataFrame, positions: pl.DataFrame, instruments: pl.DataFrame, params: pl.DataFrame, book_key: str
) -> list[dict]:
    """Per underlying: the published (or group-book) risk row, its positions, the
    calendar buckets and short option quantities by the run's transforms, the
    parameters of the charges, and the term that bound ``R_u``."""
    buckets = portfolio_margin.calendar_buckets(positions.lazy(), instruments.lazy(), book_key).collect()
    shorts = portfolio_margin.short_option_units(positions.lazy(), instruments.lazy(), book_key).collect()
    out = []
    for row in risk.join(params, on="underlying", how="left").sort("underlying").to_dicts():
        u = row["underlying"]
        held = positions.filter(pl.col("underlying") == u)
        mine = buckets.filter(pl.col("underlying") == u)
        short = shorts.filter(pl.col("underlying") == u).to_dicts()
        bucket_deltas = mine["delta_units"].to_list()
        row.update(
            positions=[{k: p.get(k) for k in POSITION_KEYS} for p in held.to_dicts()],
            calendar_buckets=[{"bucket": b, "delta_units": d} for b, d in zip(mine["bucket"].to_list(), bucket_deltas)],
            calendar_long=sum(max(d, 0.0) for d in bucket_deltas),
            calendar_short=sum(max(-d, 0.0) for d in bucket_deltas),
            short_calls=short[0]["short_calls"] if short else 0.0,
            short_puts=short[0]["short_puts"] if short else 0.0,
            risk_binding=risk_binding(row),
        )
        for drop in (book_key, "as_of_date", "run_id"):
            row.pop(drop, None)
        out.append(row)
    return out


def _offsets(risk: pl.DataFrame, params: pl.DataFrame, offsets: pl.DataFrame, book_key: str) -> list[dict]:
    with_params = risk.select(book_key, "underlying", "net_delta_units", "scan_risk").join(
        params, on="underlying", how="left"
    )
    steps = portfolio_margin.offset_credit_steps(with_params.lazy(), offsets, book_key).collect()
    return steps.drop(book_key).to_dicts()


def _collateral(valuation: pl.DataFrame, haircuts: pl.DataFrame, book_key: str) -> list[dict]:
    tiers = coll.haircut_by_tier(valuation.lazy(), haircuts.lazy(), book_key).collect()
    out = []
    for row in valuation.sort("asset").to_dicts():
        pieces = tiers.filter(pl.col("asset") == row["asset"]).drop(book_key, "asset").to_dicts()
        for drop in (book_key, "as_of_date", "run_id"):
            row.pop(drop, None)
        row["tiers"] = pieces
        row["haircut_rule"] = (
            "value ≤ 0: no haircut (a debt counts in full)" if (row["value_usd"] or 0) <= 0
            else "tiered haircut" if pieces
            else "not eligible: 100 % of the value" if not row["eligible"]
            else "eligible without haircut tiers: 0 %"
        )
        out.append(row)
    return out


def _input_rows(inputs, account_ids: list[str]) -> list[dict]:
    return (
        inputs.positions.select("account_id", "instrument_id", "source", "quantity")
        .collect().with_row_index("row").sort("account_id", "instrument_id", "source", "row", nulls_last=True)
        .drop("row").to_dicts()
    )


def _strip(row: dict, *keys: str) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


# --------------------------------------------------------------------------- account


def _change(con, as_of: dt.date, account_id: str, margin_mode: str | None) -> dict | None:
    rows = _rows(con, (SQL_DIR / "explain" / "account_change.sql").read_text(), [as_of, account_id])
    if not rows:
        return None
    change = rows[0]
    prev_date = change["prev_date"]
    figure = {"isolated": "gross_im", "cross": "net_im"}.get(margin_mode or "", "worst_scenario_loss")
    moved = con.sql(
        f"""
        WITH t AS (SELECT * FROM position_margin WHERE as_of_date = $1 AND account_id = $3),
             y AS (SELECT * FROM position_margin WHERE as_of_date = $2 AND account_id = $3)
        SELECT coalesce(t.instrument_id, y.instrument_id) AS instrument_id,
               coalesce(y.net_qty, 0) AS prev_net_qty, coalesce(t.net_qty, 0) AS net_qty,
               coalesce(t.mv_usd, 0) - coalesce(y.mv_usd, 0) AS mv_change,
               coalesce(t.net_im, 0) - coalesce(y.net_im, 0) AS net_im_change,
               coalesce(t.worst_scenario_loss, 0) - coalesce(y.worst_scenario_loss, 0) AS worst_scenario_loss_change,
               coalesce(t.{figure}, 0) - coalesce(y.{figure}, 0) AS margin_change
        FROM t FULL OUTER JOIN y ON t.instrument_id = y.instrument_id
        ORDER BY abs(margin_change) DESC, abs(mv_change) DESC, instrument_id
        LIMIT {TOP_MOVERS}
        """,
        params=[as_of, prev_date, account_id],
    ).pl()
    change["margin_figure"] = figure
    change["positions_moved"] = moved.to_dicts()
    return change


GROUP_FIGURES = ("group_im", "group_equity", "group_excess", "sum_member_im", "aggregation_benefit")


def _group_change(con, as_of: dt.date, margin_group: str) -> dict | None:
    """The group's ``group_margin`` row against the previous published date's, and its
    members' ``im``, equity and status on both dates, largest ``im`` move first (the
    members that drove the change; each member's own drivers: ``margin explain --account``).
    None when no earlier date is published."""
    prev = con.sql("SELECT max(as_of_date) FROM group_margin WHERE as_of_date < $1", params=[as_of]).fetchall()[0][0]
    if prev is None:
        return None
    rows = {r["as_of_date"]: r for r in _rows(
        con, "SELECT * FROM group_margin WHERE as_of_date IN ($1, $2) AND margin_group = $3", [as_of, prev, margin_group])}
    today, before = rows.get(as_of, {}), rows.get(prev, {})
    change = {"as_of_date": as_of, "prev_date": prev, "status": today.get("status"), "prev_status": before.get("status"),
              "new_today": not before}
    for figure in GROUP_FIGURES:
        now, then = today.get(figure), before.get(figure)
        change.update({figure: now, f"prev_{figure}": then, f"{figure}_change": (now or 0.0) - (then or 0.0)})
    change["members_moved"] = _rows(
        con,
        """
        WITH t AS (SELECT * FROM account_margin WHERE as_of_date = $1 AND margin_group = $3),
             y AS (SELECT * FROM account_margin WHERE as_of_date = $2 AND margin_group = $3)
        SELECT coalesce(t.account_id, y.account_id) AS account_id, y.status AS prev_status, t.status,
               coalesce(y.im, 0) AS prev_im, coalesce(t.im, 0) AS im, coalesce(t.im, 0) - coalesce(y.im, 0) AS im_change,
               coalesce(t.equity, 0) - coalesce(y.equity, 0) AS equity_change
        FROM t FULL OUTER JOIN y ON t.account_id = y.account_id
        ORDER BY abs(im_change) DESC, abs(equity_change) DESC, account_id
        """,
        [as_of, prev, margin_group],
    )
    return change


def explain_account(db: Path, as_of: dt.date, account_id: str, inputs_root: Path | None = None) -> dict:
    """The whole derivation of one account's ``account_margin`` row (SPEC §13), as one JSON-able dict."""
    with open_warehouse(db, read_only=True) as con:
        _check_date(con, as_of, db)
        accounts = _rows(con, "SELECT * FROM account_margin WHERE as_of_date = $1 AND account_id = $2", [as_of, account_id])
        if not accounts:
            raise _unknown(con, "account", account_id, as_of, "account_margin", "account_id")
        account = accounts[0]
        positions = _select_for(con, "position_margin", as_of, "account_id", [account_id], "instrument_id")
        if "worst_scenario_loss" not in positions.columns:  # a warehouse from before SPEC revision 2
            positions = positions.with_columns(pl.lit(None, dtype=pl.Float64).alias("worst_scenario_loss"))
        risk = _select_for(con, "underlying_risk", as_of, "account_id", [account_id], "underlying")
        valuation = _select_for(con, "collateral_valuation", as_of, "account_id", [account_id], "asset")
        group = None
        if account["margin_group"] is not None:
            groups = _rows(con, "SELECT * FROM group_margin WHERE as_of_date = $1 AND margin_group = $2",
                           [as_of, account["margin_group"]])
            group = _strip(groups[0], "as_of_date", "run_id") if groups else None
        run = _run_record(con, account["run_id"])
        quarantined = _quarantined(con, as_of, [account_id])
        change = _change(con, as_of, account_id, account["margin_mode"])

    loaded, inputs_info = _inputs_for(run, inputs_root, as_of, [account_id])
    inputs = loaded.margin_inputs
    market = _market(inputs)
    params = _underlying_params(market)
    instruments = market.select("instrument_id", "underlying", "kind", "expiry", "option_type", "multiplier")
    scenario_ids = sorted(inputs.scenarios["scenario_id"].to_list())
    document = _strip(account, "as_of_date", "run_id")
    document.update(
        kind="account",
        as_of_date=as_of.isoformat(),
        run_id=account["run_id"],
        maintenance_ratio=inputs.maintenance_ratio,
        im_rule=im_rule(account["margin_mode"]),
        im_source=im_source(account),
        status_rule=status_rule(account["status"], account["equity"], account["im"], account["mm"],
                                account["position_count"]),
        binding_status_rule=(
            f"member of margin group {account['margin_group']}: binding_status is the group's status"
            if group else "not in a margin group: binding_status is the account's own status"
        ),
        scenario_ids=scenario_ids,
        inputs=inputs_info,
        input_rows=_input_rows(inputs, [account_id]),
        quarantined_rows=quarantined,
        positions=[_strip(p, "as_of_date", "run_id", "account_id") for p in positions.to_dicts()],
        underlyings=_underlyings(risk, positions, instruments, params, "account_id"),
        offsets=_offsets(risk, params, inputs.offsets, "account_id"),
        collateral=_collateral(valuation, inputs.haircuts, "account_id"),
        group=group,
        change=change,
    )
    return document


# --------------------------------------------------------------------------- group


def group_book_inputs(inputs, margin_group: str):
    """The group's members as one book: every member row relabelled ``account_id = G``
    with one accounts row (portfolio mode) — the union of their positions netted per
    instrument and their collateral pooled per asset, as SPEC §7 margins a group."""
    relabel = pl.lit(margin_group).alias("account_id")
    accounts = pl.LazyFrame(
        {"account_id": [margin_group], "margin_group": [None], "margin_mode": ["portfolio"], "lei": [None]},
        schema={"account_id": pl.String, "margin_group": pl.String, "margin_mode": pl.String, "lei": pl.String},
    )
    return replace(
        inputs,
        positions=inputs.positions.with_columns(relabel),
        collateral=inputs.collateral.with_columns(relabel),
        accounts=accounts,
    )


def explain_group(db: Path, as_of: dt.date, margin_group: str, inputs_root: Path | None = None) -> dict:
    """The derivation of one margin group's ``group_margin`` row (SPEC §7, §13): its
    members, its book's per-underlying risk recomputed from the inputs, its pooled collateral."""
    with open_warehouse(db, read_only=True) as con:
        _check_date(con, as_of, db)
        groups = _rows(con, "SELECT * FROM group_margin WHERE as_of_date = $1 AND margin_group = $2", [as_of, margin_group])
        if not groups:
            raise _unknown(con, "group", margin_group, as_of, "group_margin", "margin_group")
        group = groups[0]
        members = con.sql(
            "SELECT account_id, margin_mode, position_count, im, mm, equity, excess, status, binding_status "
            "FROM account_margin WHERE as_of_date = $1 AND margin_group = $2 ORDER BY account_id",
            params=[as_of, margin_group],
        ).pl()
        run = _run_record(con, group["run_id"])
        member_ids = members["account_id"].to_list()
        quarantined = _quarantined(con, as_of, member_ids) if member_ids else []
        change = _group_change(con, as_of, margin_group)

    loaded, inputs_info = _inputs_for(run, inputs_root, as_of, member_ids)
    inputs = loaded.margin_inputs
    market = _market(inputs)
    params = _underlying_params(market)
    instruments = market.select("instrument_id", "underlying", "kind", "expiry", "option_type", "multiplier")
    book = compute_margin(group_book_inputs(inputs, margin_group)).tables
    figures = book["account_margin"].to_dicts()
    figures = figures[0] if figures else {}
    document = _strip(group, "as_of_date", "run_id")
    group_mm = group["group_im"] * inputs.maintenance_ratio
    position_count = figures.get("position_count", 0)
    document.update(
        kind="group",
        as_of_date=as_of.isoformat(),
        run_id=group["run_id"],
        margin_mode="portfolio",
        # The pooled book's rule margins, recomputed (no table publishes them), beside group_im.
        gross_im=figures.get("gross_im"),
        net_im=figures.get("net_im"),
        portfolio_im=group["group_im"],
        im=group["group_im"],
        mm=group_mm,
        equity=group["group_equity"],
        excess=group["group_excess"],
        maintenance_ratio=inputs.maintenance_ratio,
        position_count=position_count,
        collateral_value_usd=figures.get("collateral_value_usd"),
        position_value_usd=figures.get("position_value_usd"),
        im_rule="a margin group is margined as one book in portfolio mode: group_im = Σ R_u of the pooled book",
        status_rule=status_rule(group["status"], group["group_equity"], group["group_im"], group_mm, position_count),
        binding_status=group["status"],
        binding_status_rule="a margin group's status is the binding_status of each of its members",
        scenario_ids=sorted(inputs.scenarios["scenario_id"].to_list()),
        inputs=inputs_info,
        members=members.to_dicts(),
        input_rows=sorted(_input_rows(inputs, member_ids), key=lambda r: r["instrument_id"]),
        positions=[_strip(p, "account_id") for p in book["position_margin"].to_dicts()],
        quarantined_rows=quarantined,
        underlyings=_underlyings(book["underlying_risk"], book["position_margin"], instruments, params, "account_id"),
        offsets=_offsets(book["underlying_risk"], params, inputs.offsets, "account_id"),
        collateral=_collateral(book["collateral_valuation"], inputs.haircuts, "account_id"),
        change=change,
    )
    return document


# --------------------------------------------------------------------------- output


def plain(value):
    """``value`` with dates as ISO text and NaN / ±inf as null (JSON has neither)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def to_json(document: dict) -> str:
    return json.dumps(plain(document), indent=2, allow_nan=False) + "\n"


def render_text(document: dict, console=None) -> None:
    from outputs.explain_text import render

    render(document, console)
