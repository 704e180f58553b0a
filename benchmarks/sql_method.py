"""The yardstick: SPEC §3–§7 as a strong analyst would write it in DuckDB SQL.

    uv run python -m benchmarks.sql_method INPUTS DATE OUT.duckdb

Not product code: the floor ``margin run`` is compared with (``benchmarks.run``).  Every
row-level step is DuckDB SQL over the input Parquet files — validation with reason
codes, netting, the valuation joins, rule margin, scenario losses per account ×
underlying (and per group book), collateral tiers, account health and groups.  Only the
per-instrument table (Black-76 values, greeks, one unit's loss in each scenario: a few
hundred rows) is computed in Polars, and the inter-underlying credits (a loop over the
few offset rows, vectorised over books) in numpy.  The result tables are written as
tables into the DuckDB file ``OUT`` (replaced), as the product's warehouse holds them.

``tests/test_sql_yardstick.py`` checks it against both worked books' expected outputs.
It prints one JSON line: the seconds of each step and the row counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
import tomllib
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

TABLES = ("positions", "prices", "collateral", "fx_rates", "instruments", "accounts",
          "haircuts", "risk_params", "scenarios", "offsets")
POLICY_DEFAULTS = {"maintenance_ratio": 0.75, "vol_floor": 0.01}
BIG = 1e12
TINY = 1e-12


def table_path(inputs: Path, as_of: dt.date, name: str) -> Path:
    """A table from ``date=D/`` when present there, else from ``reference/`` (SPEC §2)."""
    day = inputs / f"date={as_of.isoformat()}" / name
    return day if day.exists() else inputs / "reference" / name


def finite(column: str) -> str:
    return f"({column} IS NOT NULL AND isfinite({column}))"


def blank(column: str) -> str:
    return f"(nullif(trim({column}), '') IS NULL)"


def per_instrument(con: duckdb.DuckDBPyConnection, as_of: dt.date, vol_floor: float,
                   scenarios: pl.DataFrame) -> pl.DataFrame:
    """One row per usable instrument: why positions on it are quarantined (or null), its
    valuation per unit (mark value, greeks, rule margin per unit) and ``l_<k>``, one
    unit's weighted loss ``−cover_k × pnl_unit_k`` in scenario ``k`` (SPEC §4, §5)."""
    frame = con.sql(f"""
        SELECT i.instrument_id, i.kind, i.underlying, i.currency, i.multiplier, i.expiry, i.strike, i.option_type,
               p.price, p.implied_vol, fx.usd_rate AS fx, ix.price AS index_price, ixfx.usd_rate AS index_fx,
               r.price_scan, r.vol_scan, r.im_rate, r.spread_rate, r.short_option_min_rate,
               r.underlying IS NOT NULL AS has_params,
               greatest(i.expiry - DATE '{as_of}', 0) / 365.0 AS years
        FROM ok_instruments i
        LEFT JOIN ok_prices p USING (instrument_id)
        LEFT JOIN ok_fx fx ON fx.currency = i.currency
        LEFT JOIN ok_instruments ixi ON ixi.instrument_id = i.underlying AND ixi.kind = 'spot'
        LEFT JOIN ok_prices ix ON ix.instrument_id = ixi.instrument_id
        LEFT JOIN ok_fx ixfx ON ixfx.currency = ixi.currency
        LEFT JOIN risk_params r ON r.underlying = i.underlying
    """).pl()
    is_option = pl.col("kind") == "option"
    vol_ok = pl.col("implied_vol").is_not_null() & pl.col("implied_vol").is_finite() & pl.col("implied_vol").is_between(1e-4, 10)
    frame = frame.with_columns(
        pl.when(pl.col("expiry").is_not_null() & (pl.col("expiry") < as_of)).then(pl.lit("expired_instrument"))
        .when(pl.col("price").is_null()).then(pl.lit("missing_price"))
        .when(is_option & ~vol_ok).then(pl.lit("missing_vol"))
        .when(pl.col("fx").is_null()).then(pl.lit("missing_fx"))
        .when(pl.col("index_price").is_null() | pl.col("index_fx").is_null()).then(pl.lit("missing_index"))
        .when(~pl.col("has_params")).then(pl.lit("missing_risk_params"))
        .alias("reason")
    )
    usable = frame.filter(pl.col("reason").is_null())
    F, K, T = pl.col("index_price"), pl.col("strike"), pl.col("years")
    call = pl.col("option_type") == "C"

    def ncdf(x):
        return 0.5 * (-x / math.sqrt(2.0)).erfc()

    def npdf(x):
        return (-0.5 * x * x).exp() / math.sqrt(2.0 * math.pi)

    def black(f, sigma):
        live = (T > 0) & (sigma > 0) & (f > 0)
        d1 = ((f / K).log() + 0.5 * sigma * sigma * T) / (sigma * T.sqrt())
        d2 = d1 - sigma * T.sqrt()
        model = pl.when(call).then(f * ncdf(d1) - K * ncdf(d2)).otherwise(K * ncdf(-d2) - f * ncdf(-d1))
        intrinsic = pl.when(call).then(pl.max_horizontal(f - K, 0.0)).otherwise(pl.max_horizontal(K - f, 0.0))
        return pl.when(live).then(model).otherwise(intrinsic)

    sigma = pl.col("implied_vol")
    live = (T > 0) & (sigma > 0) & (F > 0)
    d1 = ((F / K).log() + 0.5 * sigma * sigma * T) / (sigma * T.sqrt())
    expired_delta = pl.when(call).then((F > K).cast(pl.Float64)).otherwise(-(F < K).cast(pl.Float64))
    delta = pl.when(~is_option).then(1.0).when(live).then(
        pl.when(call).then(ncdf(d1)).otherwise(ncdf(d1) - 1.0)).otherwise(expired_delta)
    gamma = pl.when(is_option & live).then(npdf(d1) / (F * sigma * T.sqrt())).otherwise(0.0)
    vega = pl.when(is_option & live).then(F * npdf(d1) * T.sqrt() / 100.0).otherwise(0.0)
    theta = pl.when(is_option & live).then(-F * npdf(d1) * sigma / (2.0 * T.sqrt()) / 365.0).otherwise(0.0)
    otm = pl.when(call).then(pl.max_horizontal(K - F, 0.0)).otherwise(pl.max_horizontal(F - K, 0.0))
    linear_im = pl.col("multiplier") * pl.col("price") * pl.col("fx") * pl.col("im_rate")
    short_option_im = pl.col("multiplier") * pl.col("fx") * pl.max_horizontal(
        pl.col("im_rate") * F - otm, pl.col("short_option_min_rate") * F)
    losses = []
    for sid, move, vol_move, cover in scenarios.select("scenario_id", "price_move", "vol_move", "cover").iter_rows():
        shocked = F * (1.0 + move * pl.col("price_scan"))
        shocked_vol = pl.max_horizontal(sigma + vol_move * pl.col("vol_scan"), pl.lit(vol_floor))
        option_pnl = pl.col("multiplier") * pl.col("fx") * (black(shocked, shocked_vol) - black(F, sigma))
        linear_pnl = pl.col("multiplier") * pl.col("price") * move * pl.col("price_scan") * pl.col("fx")
        losses.append((-cover * pl.when(is_option).then(option_pnl).otherwise(linear_pnl)).alias(f"l_{sid}"))
    bucket = (pl.when(pl.col("kind") == "spot").then(-2).when(pl.col("kind") == "perpetual").then(-1)
              .otherwise(pl.col("expiry").cast(pl.Int32)).cast(pl.Int32))
    valued = usable.select(
        "instrument_id", "kind", "underlying", "multiplier", "price", "fx", "option_type",
        (pl.col("index_price") * pl.col("index_fx")).alias("index_usd"),
        "price_scan", "spread_rate", "short_option_min_rate",
        bucket.alias("bucket"), delta.alias("delta"), gamma.alias("gamma"), vega.alias("vega"), theta.alias("theta"),
        pl.when(is_option).then(0.0).otherwise(linear_im).alias("im_long_unit"),
        pl.when(is_option).then(short_option_im).otherwise(linear_im).alias("im_short_unit"),
        (is_option | (pl.col("kind") == "spot")).alias("in_equity"),
        (is_option & call).alias("is_call"), (is_option & ~call).alias("is_put"),
        *losses,
    )
    rejected = frame.filter(pl.col("reason").is_not_null()).select("instrument_id", "reason")
    return pl.concat([valued, rejected], how="diagonal")


def validate(con: duckdb.DuckDBPyConnection, as_of: dt.date) -> None:
    """SQL validation of SPEC §3: ``ok_*`` tables of usable rows and ``quarantine``."""
    con.execute(f"""
        CREATE TEMP TABLE fx_checked AS SELECT *,
          CASE WHEN {blank('currency')} OR NOT {finite('usd_rate')} OR usd_rate <= 0
                    OR usd_rate NOT BETWEEN {TINY} AND {BIG} OR (currency = 'USD' AND usd_rate <> 1.0)
                 THEN 'invalid_value'
               WHEN count(*) OVER (PARTITION BY currency) > 1 THEN 'duplicate_key' END AS reason
        FROM fx_rates_in;
        CREATE TEMP TABLE ok_fx AS SELECT currency, usd_rate FROM fx_checked WHERE reason IS NULL AND currency <> 'USD'
          UNION ALL SELECT 'USD', 1.0;
        CREATE TEMP TABLE instruments_checked AS SELECT *,
          CASE WHEN {blank('instrument_id')} OR {blank('underlying')} OR {blank('currency')}
                    OR kind IS NULL OR kind NOT IN ('spot', 'future', 'perpetual', 'option')
                    OR NOT {finite('multiplier')} OR multiplier NOT BETWEEN {TINY} AND {BIG}
                    OR (kind = 'future' AND expiry IS NULL)
                    OR (kind = 'option' AND (expiry IS NULL OR NOT {finite('strike')} OR strike <= 0
                        OR strike NOT BETWEEN {TINY} AND {BIG} OR option_type IS NULL OR option_type NOT IN ('C', 'P')))
                 THEN 'invalid_value'
               WHEN count(*) OVER (PARTITION BY instrument_id) > 1 THEN 'duplicate_key' END AS reason
        FROM instruments_in;
        CREATE TEMP TABLE ok_instruments AS SELECT * EXCLUDE (reason) FROM instruments_checked WHERE reason IS NULL;
        CREATE TEMP TABLE prices_checked AS SELECT *,
          CASE WHEN {blank('instrument_id')} OR NOT {finite('price')} OR price > {BIG} OR (price > 0 AND price < {TINY})
                 THEN 'invalid_value'
               WHEN count(*) OVER (PARTITION BY instrument_id) > 1 THEN 'duplicate_key'
               WHEN price <= 0 THEN 'invalid_price' END AS reason
        FROM prices_in;
        CREATE TEMP TABLE ok_prices AS SELECT * EXCLUDE (reason) FROM prices_checked WHERE reason IS NULL;
        CREATE TEMP TABLE accounts_checked AS SELECT *,
          CASE WHEN {blank('account_id')} OR margin_mode IS NULL OR margin_mode NOT IN ('isolated', 'cross', 'portfolio')
                 THEN 'invalid_value'
               WHEN count(*) OVER (PARTITION BY account_id) > 1 THEN 'duplicate_key' END AS reason
        FROM accounts_in;
        CREATE TEMP TABLE ok_accounts AS SELECT * EXCLUDE (reason) FROM accounts_checked WHERE reason IS NULL;
    """)


def write_tables(con, as_of: dt.date, scenario_ids: list[int], policy: dict, offsets: pl.DataFrame,
                 worst_loss: bool, timings: dict) -> None:
    losses = [f"l_{sid}" for sid in scenario_ids]
    maintenance = float(policy["maintenance_ratio"])

    def step(name: str, sql: str) -> None:
        begin = time.perf_counter()
        con.execute(sql)
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - begin, 4)

    # Positions: the first reason of SPEC §3, from the row itself or its instrument.
    position_reason = f"""
        CASE WHEN {blank('p.account_id')} OR {blank('p.instrument_id')} OR NOT {finite('p.quantity')}
                  OR abs(p.quantity) > {BIG} THEN 'invalid_value'
             WHEN i.instrument_id IS NULL THEN 'unknown_instrument'
             ELSE i.reason END"""
    collateral_reason = f"""
        CASE WHEN {blank('c.account_id')} OR {blank('c.asset')} OR NOT {finite('c.amount')}
                  OR abs(c.amount) > {BIG} THEN 'invalid_value'
             WHEN fx.usd_rate IS NULL THEN 'missing_fx' END"""
    step("positions", f"""
        CREATE TEMP TABLE positions_checked AS
        SELECT p.account_id, p.instrument_id, p.quantity, {position_reason} AS reason
        FROM positions_in p LEFT JOIN instrument_table i USING (instrument_id)
    """)
    step("collateral", f"""
        CREATE TEMP TABLE collateral_checked AS
        SELECT c.account_id, c.asset, c.amount, fx.usd_rate, {collateral_reason} AS reason
        FROM collateral_in c LEFT JOIN ok_fx fx ON fx.currency = c.asset
    """)
    # The original rows (as JSON) only of the rows quarantined: a second, filtered read.
    step("quarantine", f"""
        CREATE OR REPLACE TABLE quarantine AS
        SELECT * FROM (SELECT 'positions' AS source_table, to_json(p) AS row_json, {position_reason} AS reason
                       FROM positions_in p LEFT JOIN instrument_table i USING (instrument_id)) WHERE reason IS NOT NULL
        UNION ALL SELECT * FROM (SELECT 'collateral', to_json(c), {collateral_reason} AS reason
                       FROM collateral_in c LEFT JOIN ok_fx fx ON fx.currency = c.asset) WHERE reason IS NOT NULL
        UNION ALL SELECT 'prices', to_json(t) , reason FROM prices_checked t WHERE reason IS NOT NULL
        UNION ALL SELECT 'fx_rates', to_json(t), reason FROM fx_checked t WHERE reason IS NOT NULL
        UNION ALL SELECT 'instruments', to_json(t), reason FROM instruments_checked t WHERE reason IS NOT NULL
        UNION ALL SELECT 'accounts', to_json(t), reason FROM accounts_checked t WHERE reason IS NOT NULL
    """)
    # Netting (SPEC §4) with the per-row rule margin summed for gross_im (SPEC §5.1).
    step("net", f"""
        CREATE TEMP TABLE netted AS
        SELECT p.account_id, p.instrument_id,
               CASE WHEN abs(sum(p.quantity)) <= 1e-9 * sum(abs(p.quantity)) THEN 0.0 ELSE sum(p.quantity) END AS net_qty,
               sum(abs(p.quantity)) AS gross_qty, count(*) AS source_count,
               sum(abs(p.quantity) * CASE WHEN p.quantity < 0 THEN i.im_short_unit ELSE i.im_long_unit END) AS gross_im
        FROM positions_checked p JOIN instrument_table i USING (instrument_id)
        WHERE p.reason IS NULL
        GROUP BY ALL
    """)
    book_members = """
        SELECT a.margin_group, p.instrument_id, p.quantity
        FROM positions_checked p JOIN ok_accounts a USING (account_id)
        WHERE p.reason IS NULL AND a.margin_group IS NOT NULL
    """
    step("net", f"""
        CREATE TEMP TABLE group_netted AS
        SELECT margin_group, instrument_id,
               CASE WHEN abs(sum(quantity)) <= 1e-9 * sum(abs(quantity)) THEN 0.0 ELSE sum(quantity) END AS net_qty
        FROM ({book_members}) GROUP BY ALL
    """)

    def scan(book: str, netted: str, out: str) -> None:
        """Scenario losses, greeks, calendar and short-option terms per book × underlying."""
        step("scan", f"""
            CREATE TEMP TABLE {out}_bucket AS
            SELECT n.{book}, i.underlying, i.bucket,
                   sum(n.net_qty * i.multiplier * i.delta) AS delta_units,
                   sum(n.net_qty * i.multiplier * i.delta * i.index_usd) AS delta_usd,
                   sum(n.net_qty * i.multiplier * i.gamma) AS gamma_units,
                   sum(n.net_qty * i.multiplier * i.vega * i.fx) AS vega_usd,
                   sum(n.net_qty * i.multiplier * i.theta * i.fx) AS theta_usd,
                   sum(CASE WHEN i.is_call AND n.net_qty < 0 THEN -n.net_qty * i.multiplier ELSE 0 END) AS short_calls,
                   sum(CASE WHEN i.is_put AND n.net_qty < 0 THEN -n.net_qty * i.multiplier ELSE 0 END) AS short_puts,
                   {", ".join(f"sum(n.net_qty * i.{c}) AS {c}" for c in losses)}
            FROM {netted} n JOIN instrument_table i USING (instrument_id)
            GROUP BY ALL
        """)
        max_loss = f"greatest({', '.join(losses)})"
        worst = " ".join(f"WHEN {c} >= m - 1e-12 * abs(m) THEN {sid}" for sid, c in zip(scenario_ids, losses))
        step("scan", f"""
            CREATE TEMP TABLE {out} AS
            SELECT *, CASE WHEN scan_risk > 0 THEN CASE {worst} END END::INTEGER AS worst_scenario
            FROM (SELECT *, {max_loss} AS m, greatest(m, 0) AS scan_risk FROM (
                SELECT b.{book}, b.underlying,
                       sum(delta_units) AS net_delta_units, sum(delta_usd) AS delta_usd,
                       sum(gamma_units) AS gamma_units, sum(vega_usd) AS vega_usd, sum(theta_usd) AS theta_usd,
                       {", ".join(f"sum({c}) AS {c}" for c in losses)},
                       least(sum(greatest(delta_units, 0)), sum(greatest(-delta_units, 0)))
                         * any_value(u.index_usd) * any_value(u.spread_rate) AS calendar_charge,
                       greatest(sum(short_calls), sum(short_puts))
                         * any_value(u.index_usd) * any_value(u.short_option_min_rate) AS short_option_min,
                       any_value(u.price_scan) * any_value(u.index_usd) AS scan_cap
                FROM {out}_bucket b JOIN underlying_params u USING (underlying)
                GROUP BY ALL
            ))
        """)
        credits(book, out)
        step("scan", f"""
            CREATE TEMP TABLE {out}_risk AS
            SELECT s.* EXCLUDE (m, scan_cap), coalesce(c.credit, 0) AS inter_credit,
                   greatest(s.scan_risk + s.calendar_charge - coalesce(c.credit, 0), s.short_option_min) AS risk
            FROM {out} s LEFT JOIN {out}_credit c USING ({book}, underlying)
        """)

    def credits(book: str, scan_table: str) -> None:
        """Inter-underlying credits (SPEC §5.2): the offsets loop in numpy, vectorised over books."""
        begin = time.perf_counter()
        names = sorted(set(offsets["underlying_a"]) | set(offsets["underlying_b"])) if offsets.height else []
        if not names:
            con.execute(f"CREATE TEMP TABLE {scan_table}_credit ({book} VARCHAR, underlying VARCHAR, credit DOUBLE)")
            return
        columns = ", ".join(
            f"sum(CASE WHEN underlying = '{u}' THEN net_delta_units ELSE 0 END) AS \"d|{u}\", "
            f"sum(CASE WHEN underlying = '{u}' AND net_delta_units <> 0 "
            f"THEN least(scan_risk / abs(net_delta_units), scan_cap) ELSE 0 END) AS \"w|{u}\"" for u in names)
        state = con.sql(f"SELECT {book}, {columns} FROM {scan_table} GROUP BY {book}").fetchnumpy()
        d = {u: np.asarray(state[f"d|{u}"], dtype=float).copy() for u in names}
        w = {u: np.asarray(state[f"w|{u}"], dtype=float) for u in names}
        credit = {u: np.zeros_like(d[u]) for u in names}
        for offset in offsets.sort("priority").iter_rows(named=True):
            a, b = offset["underlying_a"], offset["underlying_b"]
            if a == b:
                continue
            legs = np.where(d[a] * d[b] < 0, np.minimum(np.abs(d[a]) / offset["ratio_a"], np.abs(d[b]) / offset["ratio_b"]), 0.0)
            credit[a] += offset["credit_rate"] * legs * offset["ratio_a"] * w[a]
            credit[b] += offset["credit_rate"] * legs * offset["ratio_b"] * w[b]
            d[a] -= np.sign(d[a]) * legs * offset["ratio_a"]
            d[b] -= np.sign(d[b]) * legs * offset["ratio_b"]
        keys = np.asarray(state[book], dtype=object)
        long = pl.DataFrame({
            book: np.concatenate([keys] * len(names)),
            "underlying": np.repeat(np.array(names, dtype=object), len(keys)),
            "credit": np.concatenate([credit[u] for u in names]),
        })
        con.register("credit_rows", long)
        con.execute(f"CREATE TEMP TABLE {scan_table}_credit AS SELECT * FROM credit_rows")
        con.unregister("credit_rows")
        timings["credits"] = round(timings.get("credits", 0.0) + time.perf_counter() - begin, 4)

    scan("account_id", "netted", "account_scan")
    scan("margin_group", "group_netted", "group_scan")

    worst_column = ""
    worst_join = ""
    if worst_loss:
        cases = " ".join(f"WHEN {sid} THEN n.net_qty * i.{c}" for sid, c in zip(scenario_ids, losses))
        worst_column = f", coalesce(CASE r.worst_scenario {cases} END, 0.0) AS worst_scenario_loss"
        worst_join = "LEFT JOIN account_scan r ON r.account_id = n.account_id AND r.underlying = i.underlying"
    step("position_margin", f"""
        CREATE OR REPLACE TABLE position_margin AS
        SELECT n.account_id, n.instrument_id, i.underlying, i.kind, n.net_qty, n.gross_qty, n.source_count, i.price,
               n.net_qty * i.multiplier * i.price * i.fx AS mv_usd,
               n.net_qty * i.multiplier * i.delta AS delta_units,
               n.net_qty * i.multiplier * i.delta * i.index_usd AS delta_usd,
               n.net_qty * i.multiplier * i.gamma AS gamma_units,
               n.net_qty * i.multiplier * i.vega * i.fx AS vega_usd,
               n.net_qty * i.multiplier * i.theta * i.fx AS theta_usd,
               abs(n.net_qty) * CASE WHEN n.net_qty < 0 THEN i.im_short_unit ELSE i.im_long_unit END AS net_im,
               n.gross_im {worst_column}
        FROM netted n JOIN instrument_table i USING (instrument_id) {worst_join}
    """)
    step("underlying_risk", f"""
        CREATE OR REPLACE TABLE underlying_risk AS
        SELECT account_id, underlying, net_delta_units, delta_usd, gamma_units, vega_usd, theta_usd,
               [{", ".join(losses)}]::DOUBLE[] AS scenario_losses, scan_risk, worst_scenario,
               calendar_charge, short_option_min, inter_credit, risk
        FROM account_scan_risk
    """)
    # Collateral (SPEC §6): balances, FX, marginal haircut tiers.
    tiers = """
        SELECT asset, tier_start_usd, haircut,
               lead(tier_start_usd) OVER (PARTITION BY asset ORDER BY tier_start_usd) AS tier_end_usd
        FROM haircuts
    """

    def valuation(book: str, source: str, out: str, persist: bool) -> None:
        step("collateral", f"""
            CREATE OR REPLACE {'' if persist else 'TEMP'} TABLE {out} AS
            WITH balances AS (
                SELECT {book}, asset, sum(amount) AS amount, any_value(usd_rate) AS usd_rate,
                       sum(amount) * any_value(usd_rate) AS value_usd
                FROM {source} GROUP BY ALL
            ), tiered AS (
                SELECT b.{book}, b.asset,
                       sum(t.haircut * CASE WHEN t.tier_end_usd IS NULL THEN greatest(b.value_usd - t.tier_start_usd, 0)
                           ELSE least(greatest(b.value_usd - t.tier_start_usd, 0), t.tier_end_usd - t.tier_start_usd) END)
                         AS tiered_haircut,
                       count(t.asset) > 0 AS has_tiers
                FROM balances b LEFT JOIN tiers t USING (asset) GROUP BY ALL
            )
            SELECT b.{book}, b.asset, b.amount, b.usd_rate, b.value_usd,
                   CASE WHEN b.value_usd <= 0 THEN 0.0 WHEN h.has_tiers THEN h.tiered_haircut
                        WHEN b.asset = 'USD' THEN 0.0 ELSE b.value_usd END AS haircut_usd,
                   b.value_usd - haircut_usd AS value_after_haircut_usd,
                   h.has_tiers OR b.asset = 'USD' AS eligible
            FROM balances b JOIN tiered h USING ({book}, asset)
        """)

    con.execute(f"CREATE TEMP VIEW tiers AS {tiers}")
    valuation("account_id", "(SELECT * FROM collateral_checked WHERE reason IS NULL)", "collateral_valuation", True)
    valuation("margin_group", """(SELECT a.margin_group, c.asset, c.amount, c.usd_rate
              FROM collateral_checked c JOIN ok_accounts a USING (account_id)
              WHERE c.reason IS NULL AND a.margin_group IS NOT NULL)""", "group_collateral", False)
    # Accounts (SPEC §5.3, §6): the universe, margins, equity, status.
    status = """CASE WHEN {n} = 0 AND {im} = 0 THEN CASE WHEN {eq} < 0 THEN 'deficit' ELSE 'ok' END
                     WHEN {eq} < {mm} OR {eq} <= 0 THEN 'liquidation' WHEN {eq} < {im} THEN 'margin_call'
                     ELSE 'ok' END"""
    step("account_margin", f"""
        CREATE TEMP TABLE account_figures AS
        WITH universe AS (
            SELECT account_id FROM ok_accounts
            UNION SELECT account_id FROM positions_checked WHERE NOT {blank('account_id')}
            UNION SELECT account_id FROM collateral_checked WHERE NOT {blank('account_id')}
        ), incomplete AS (
            SELECT account_id FROM positions_checked WHERE reason IS NOT NULL
            UNION SELECT account_id FROM collateral_checked WHERE reason IS NOT NULL
            UNION SELECT account_id FROM accounts_checked WHERE reason IS NOT NULL
        ), by_position AS (
            SELECT n.account_id, count(*) FILTER (WHERE n.net_qty <> 0) AS position_count,
                   sum(n.gross_im) AS gross_im,
                   sum(abs(n.net_qty) * CASE WHEN n.net_qty < 0 THEN i.im_short_unit ELSE i.im_long_unit END) AS net_im,
                   sum(CASE WHEN i.in_equity THEN n.net_qty * i.multiplier * i.price * i.fx ELSE 0 END) AS position_value_usd
            FROM netted n JOIN instrument_table i USING (instrument_id) GROUP BY ALL
        ), by_underlying AS (
            SELECT account_id, sum(risk) AS portfolio_im, sum(inter_credit) AS inter_credit
            FROM account_scan_risk GROUP BY ALL
        ), by_asset AS (
            SELECT account_id, sum(value_after_haircut_usd) AS collateral_value_usd, sum(haircut_usd) AS haircut_usd
            FROM collateral_valuation GROUP BY ALL
        )
        SELECT u.account_id, a.margin_group, a.margin_mode, a.lei,
               coalesce(p.position_count, 0) AS position_count, coalesce(p.gross_im, 0.0) AS gross_im,
               coalesce(p.net_im, 0.0) AS net_im, coalesce(r.portfolio_im, 0.0) AS portfolio_im,
               coalesce(r.inter_credit, 0.0) AS inter_credit,
               coalesce(c.collateral_value_usd, 0.0) AS collateral_value_usd, coalesce(c.haircut_usd, 0.0) AS haircut_usd,
               coalesce(p.position_value_usd, 0.0) AS position_value_usd,
               x.account_id IS NULL AS complete
        FROM universe u
        LEFT JOIN ok_accounts a USING (account_id)
        LEFT JOIN by_position p USING (account_id)
        LEFT JOIN by_underlying r USING (account_id)
        LEFT JOIN by_asset c USING (account_id)
        LEFT JOIN incomplete x USING (account_id)
    """)
    step("account_margin", f"""
        CREATE TEMP TABLE account_health AS
        SELECT *, im * {maintenance} AS mm, collateral_value_usd + position_value_usd AS equity
        FROM (SELECT *, CASE margin_mode WHEN 'isolated' THEN gross_im WHEN 'cross' THEN net_im
                             WHEN 'portfolio' THEN portfolio_im ELSE greatest(gross_im, net_im, portfolio_im) END AS im
              FROM account_figures)
    """)
    step("group_margin", f"""
        CREATE OR REPLACE TABLE group_margin AS
        WITH members AS (
            SELECT a.margin_group, count(*) AS member_count, sum(h.im) AS sum_member_im
            FROM ok_accounts a JOIN account_health h USING (account_id)
            WHERE a.margin_group IS NOT NULL GROUP BY ALL
        ), book AS (
            SELECT n.margin_group, count(*) FILTER (WHERE n.net_qty <> 0) AS position_count,
                   sum(CASE WHEN i.in_equity THEN n.net_qty * i.multiplier * i.price * i.fx ELSE 0 END) AS position_value
            FROM group_netted n JOIN instrument_table i USING (instrument_id) GROUP BY ALL
        ), risk AS (
            SELECT margin_group, sum(risk) AS group_im FROM group_scan_risk GROUP BY ALL
        ), cash AS (
            SELECT margin_group, sum(value_after_haircut_usd) AS collateral FROM group_collateral GROUP BY ALL
        ), figures AS (
            SELECT m.margin_group, m.member_count, m.sum_member_im, coalesce(r.group_im, 0.0) AS group_im,
                   coalesce(c.collateral, 0.0) + coalesce(b.position_value, 0.0) AS group_equity,
                   coalesce(b.position_count, 0) AS position_count
            FROM members m LEFT JOIN book b USING (margin_group) LEFT JOIN risk r USING (margin_group)
            LEFT JOIN cash c USING (margin_group)
        )
        SELECT margin_group, member_count, sum_member_im, group_im, sum_member_im - group_im AS aggregation_benefit,
               group_equity, group_equity - group_im AS group_excess,
               {status.format(n="position_count", im="group_im", eq="group_equity", mm=f"group_im * {maintenance}")}
                 AS status
        FROM figures
    """)
    step("account_margin", f"""
        CREATE OR REPLACE TABLE account_margin AS
        SELECT h.account_id, h.margin_group, h.margin_mode, h.lei, h.position_count, h.gross_im, h.net_im,
               h.portfolio_im, h.inter_credit, h.im, h.mm, h.collateral_value_usd, h.haircut_usd,
               h.position_value_usd, h.equity, h.equity - h.im AS excess,
               CASE WHEN h.equity > 0 THEN h.mm / h.equity END AS margin_ratio,
               {status.format(n="h.position_count", im="h.im", eq="h.equity", mm="h.mm")} AS status,
               coalesce(g.status, {status.format(n="h.position_count", im="h.im", eq="h.equity", mm="h.mm")})
                 AS binding_status,
               h.gross_im - h.im AS netting_benefit, h.complete
        FROM account_health h LEFT JOIN group_margin g USING (margin_group)
    """)


def run(inputs: Path, as_of: dt.date, out: Path, worst_loss: bool = True) -> dict:
    """The whole method into the DuckDB file ``out`` (replaced); returns timings and row counts."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    for stale in out.parent.glob(f"{out.name}*"):
        stale.unlink()
    con = duckdb.connect(str(out), config={"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                                           "preserve_insertion_order": False})
    for name in TABLES:
        path = table_path(inputs, as_of, f"{name}.parquet")
        view = f"{name}_in" if name in ("positions", "prices", "collateral", "fx_rates", "instruments", "accounts") \
            else name
        con.execute(f"CREATE TEMP VIEW {view} AS SELECT * FROM read_parquet('{path}', hive_partitioning = false)")
    policy_path = table_path(inputs, as_of, "policy.toml")
    policy = {**POLICY_DEFAULTS, **(tomllib.loads(policy_path.read_text()) if policy_path.exists() else {})}
    begin = time.perf_counter()
    validate(con, as_of)
    scenarios = con.sql("SELECT * FROM scenarios ORDER BY scenario_id").pl()
    offsets = con.sql("SELECT * FROM offsets").pl()
    instruments = per_instrument(con, as_of, float(policy["vol_floor"]), scenarios)
    con.register("instrument_frame", instruments)
    con.execute("CREATE TEMP TABLE instrument_table AS SELECT * FROM instrument_frame")
    con.unregister("instrument_frame")
    con.execute("""CREATE TEMP TABLE underlying_params AS
                   SELECT underlying, any_value(index_usd) AS index_usd, any_value(price_scan) AS price_scan,
                          any_value(spread_rate) AS spread_rate, any_value(short_option_min_rate) AS short_option_min_rate
                   FROM instrument_table WHERE reason IS NULL GROUP BY ALL""")
    timings["reference"] = round(time.perf_counter() - begin, 4)
    con.execute("BEGIN TRANSACTION")
    write_tables(con, as_of, scenarios["scenario_id"].to_list(), policy, offsets, worst_loss, timings)
    begin = time.perf_counter()
    con.execute("COMMIT")
    con.execute("CHECKPOINT")
    timings["commit"] = round(time.perf_counter() - begin, 4)
    rows = {t: con.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]
            for t in ("position_margin", "underlying_risk", "collateral_valuation", "account_margin", "group_margin",
                      "quarantine")}
    con.close()
    timings["total"] = round(time.perf_counter() - start, 4)
    return {"timings": timings, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("date", type=dt.date.fromisoformat)
    parser.add_argument("out", type=Path, help="DuckDB file to write the result tables into (replaced)")
    parser.add_argument("--no-worst-scenario-loss", action="store_true",
                        help="Leave position_margin.worst_scenario_loss out (for engines that do not publish it).")
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(run(args.inputs, args.date, args.out, not args.no_worst_scenario_loss)) + "\n")


if __name__ == "__main__":
    main()
