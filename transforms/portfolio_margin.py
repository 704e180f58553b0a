"""Scenario-based portfolio margin per book and underlying (SPEC §5.2).

A *book* is an account (``book_key = "account_id"``) or a margin group's combined
positions (``book_key = "margin_group"``); the same functions serve both.

Scenario P&L is computed once per instrument × scenario (``scenario_unit_losses``)
and applied to positions as one wide join: every position row gets K loss columns,
then one two-stage aggregation (book × underlying × expiry bucket, then book ×
underlying) produces the scenario losses, greeks, calendar and short-option terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from transforms import encoding, summation
from transforms.valuation import black76_value


def loss_column(scenario_id: int) -> str:
    """Name of the wide column holding scenario ``scenario_id``'s weighted loss."""
    return f"loss_{scenario_id}"


def scenario_unit_pnl(instrument_values: pl.LazyFrame, scenarios: pl.LazyFrame, vol_floor: float) -> pl.LazyFrame:
    """P&L of one unit of each instrument in each scenario, USD; one row per instrument × scenario.

    linear: ``multiplier × price × price_move × price_scan × fx``;
    option: ``multiplier × fx × (B(S(1 + price_move × price_scan), max(σ + vol_move ×
    vol_scan, vol_floor)) − B(S, σ))`` with ``B`` Black-76 (SPEC §5.2).
    """
    spot = pl.col("index_price")
    shocked_spot = spot * (1.0 + pl.col("price_move") * pl.col("price_scan"))
    shocked_vol = pl.max_horizontal(
        pl.col("implied_vol") + pl.col("vol_move") * pl.col("vol_scan"), pl.lit(vol_floor)
    )
    strike, years, option_type = pl.col("strike"), pl.col("years"), pl.col("option_type")
    option_pnl = (
        pl.col("multiplier")
        * pl.col("fx")
        * (
            black76_value(shocked_spot, strike, shocked_vol, years, option_type)
            - black76_value(spot, strike, pl.col("implied_vol"), years, option_type)
        )
    )
    linear_pnl = pl.col("multiplier") * pl.col("price") * pl.col("price_move") * pl.col("price_scan") * pl.col("fx")
    return instrument_values.join(scenarios, how="cross").select(
        "instrument_id",
        "scenario_id",
        "cover",
        pl.when(pl.col("kind") == "option").then(option_pnl).otherwise(linear_pnl).alias("pnl_unit"),
    )


def scenario_unit_losses(
    instrument_values: pl.LazyFrame, scenarios: pl.LazyFrame, scenario_ids: Sequence[int], vol_floor: float
) -> pl.LazyFrame:
    """One row per instrument with a column ``loss_<id>`` per scenario: ``−cover × pnl_unit``."""
    long = scenario_unit_pnl(instrument_values, scenarios, vol_floor).select(
        "instrument_id", "scenario_id", (-pl.col("cover") * pl.col("pnl_unit")).alias("unit_loss")
    )
    wide = long.pivot(
        on="scenario_id", on_columns=list(scenario_ids), index="instrument_id", values="unit_loss"
    )
    return wide.rename({str(sid): loss_column(sid) for sid in scenario_ids})


def _expiry_bucket() -> pl.Expr:
    """Calendar bucket: spot alone (−2), all perpetuals together (−1), futures/options by
    expiry (days since 1970-01-01); an integer key groups much faster than a string."""
    kind = pl.col("kind")
    return (
        pl.when(kind == "spot")
        .then(pl.lit(-2, dtype=pl.Int32))
        .when(kind == "perpetual")
        .then(pl.lit(-1, dtype=pl.Int32))
        .otherwise(pl.col("expiry").cast(pl.Int32))
        .alias("expiry_bucket")
    )


#: Relative tolerance under which two scenario losses count as a tie for ``worst_scenario``.
WORST_SCENARIO_TIE_TOLERANCE = 1e-12

UNDERLYING_PARAMS = ("index_price", "index_fx", "price_scan", "spread_rate", "short_option_min_rate")
GREEK_SUMS = ("delta_units", "delta_usd", "gamma_units", "vega_usd", "theta_usd")


def calendar_terms(bucket_delta: pl.Expr) -> dict[str, pl.Expr]:
    """The two terms of the calendar spread charge that one calendar bucket adds, units
    of underlying ≥ 0 (SPEC §5.2): ``calendar_long = max(bucket_delta, 0)`` and
    ``calendar_short = max(−bucket_delta, 0)``, ``bucket_delta`` the book's Σ
    ``delta_units`` in the bucket.  Summed over the book's buckets on an underlying they
    give the ``long`` and ``short`` of ``calendar_spread_charge``."""
    return {
        "calendar_long": bucket_delta.clip(lower_bound=0.0),
        "calendar_short": (-bucket_delta).clip(lower_bound=0.0),
    }


def calendar_spread_charge() -> pl.Expr:
    """Calendar spread charge of a book × underlying, USD ≥ 0 (SPEC §5.2):
    ``calendar_u = min(long, short) × S_u × fx_u × spread_rate_u``.

    Columns: ``calendar_long`` and ``calendar_short`` (Σ of ``calendar_terms`` over the
    book's calendar buckets on ``u``: spot alone, all perpetuals together, futures and
    options by expiry), ``index_price`` (``S_u``), ``index_fx`` and ``spread_rate``."""
    usd_per_unit = pl.col("index_price") * pl.col("index_fx")
    return pl.min_horizontal("calendar_long", "calendar_short") * usd_per_unit * pl.col("spread_rate")


def short_option_terms() -> dict[str, pl.Expr]:
    """The units one position adds to its book's short calls and short puts, ≥ 0 (SPEC
    §5.2): ``|net_qty| × multiplier`` for an option with ``net_qty < 0``, as
    ``short_calls`` for a call and ``short_puts`` for a put; 0 otherwise.  Columns
    ``net_qty``, ``multiplier``, ``kind``, ``option_type``."""
    units = pl.col("net_qty") * pl.col("multiplier")
    short_units = pl.when(pl.col("net_qty") < 0).then(units.abs()).otherwise(0.0)
    is_option = pl.col("kind") == "option"
    return {
        "short_calls": pl.when(is_option & (pl.col("option_type") == "C")).then(short_units).otherwise(0.0),
        "short_puts": pl.when(is_option & (pl.col("option_type") == "P")).then(short_units).otherwise(0.0),
    }


def short_option_minimum() -> pl.Expr:
    """Short option minimum of a book × underlying, USD ≥ 0 (SPEC §5.2):
    ``som_u = max(short_calls_u, short_puts_u) × S_u × fx_u × short_option_min_rate_u``
    (a short straddle counts once, as in SPAN).

    Columns: ``short_calls`` and ``short_puts`` (Σ of ``short_option_terms`` over the
    book's options on ``u``, units of underlying), ``index_price`` (``S_u``),
    ``index_fx`` and ``short_option_min_rate``."""
    usd_per_unit = pl.col("index_price") * pl.col("index_fx")
    return pl.max_horizontal("short_calls", "short_puts") * usd_per_unit * pl.col("short_option_min_rate")


def underlying_scan(
    valued_positions: pl.LazyFrame,
    instruments: pl.LazyFrame,
    unit_losses: pl.LazyFrame,
    scenario_ids: Sequence[int],
    book_key: str,
) -> pl.LazyFrame:
    """One row per book × underlying the book holds (net-flat included).

    Columns: ``net_delta_units``, ``delta_usd``, ``gamma_units``, ``vega_usd``,
    ``theta_usd``, ``scenario_losses`` (list in scenario-id order), ``scan_risk``
    (``max(0, max_k loss_k)``), ``worst_scenario`` (lowest id attaining it; null when
    0), ``calendar_charge`` (``calendar_spread_charge``) and ``short_option_min``
    (``short_option_minimum``), plus the underlying's
    parameters for the credit step and ``underlying_code`` (the underlying's rank by
    name, an integer to sort by).

    ``instruments`` (one row per instrument: ``instrument_id``, ``underlying``, ``kind``,
    ``expiry`` and the underlying's parameters) supplies the per-instrument keys and the
    underlyings' parameters, so no pass over the positions is needed for them.
    """
    losses = [loss_column(sid) for sid in scenario_ids]
    # Integer keys (the underlying's code, the expiry bucket) brought by the per-instrument
    # join, and the underlying's name and parameters joined afterwards.
    params = (
        instruments.select("underlying", *UNDERLYING_PARAMS).unique("underlying")
        .sort("underlying").with_row_index("underlying_code")
    )
    # ``scan_order`` ranks the instruments by (underlying, expiry bucket, instrument), so
    # sorting the positions by (book, scan_order) puts each bucket's rows together in an
    # order fixed by the data, and the sums below are reproducible to the bit (SPEC §8).
    # Instrument ids are dense integer codes (``encoding``): each position gathers its
    # instrument's keys and unit losses by code, after the sort, so the sort moves only the
    # narrow position rows and no join copies the K loss columns.
    instrument_keys = (
        instruments.select("instrument_id", "underlying", _expiry_bucket()).unique("instrument_id")
        .join(params.select("underlying", "underlying_code"), on="underlying", how="left")
        .sort("underlying_code", "expiry_bucket", "instrument_id")
        .with_row_index("scan_order")
        .join(unit_losses, on="instrument_id", how="left")
        .drop("underlying")
        .collect()
    )
    slots = int(instrument_keys.get_column("instrument_id").max()) + 1 if instrument_keys.height else 0
    keys_by_code = encoding.by_code(instrument_keys.with_columns(pl.col("instrument_id").cast(encoding.CODE_TYPE)),
                                    "instrument_id", slots)

    def by_code(column: str) -> pl.Expr:
        return pl.lit(keys_by_code.get_column(column)).gather(pl.col("instrument_id")).alias(column)

    scan_rows = (
        valued_positions.select(
            book_key, "instrument_id", "net_qty", *GREEK_SUMS,
            *(term.alias(name) for name, term in short_option_terms().items()),
        )
        .with_columns(by_code("underlying_code"), by_code("expiry_bucket"), by_code("scan_order"))
        .collect()
        .sort(book_key, "scan_order", nulls_last=True)
    )
    per_bucket = summation.ordered_sums(
        scan_rows,
        [book_key, "underlying_code", "expiry_bucket"],
        {
            **{c: c for c in GREEK_SUMS},
            **{c: pl.col("net_qty") * by_code(c) for c in losses},
            "short_calls": "short_calls",
            "short_puts": "short_puts",
        },
        presorted=True,
    )
    per_underlying = summation.ordered_sums(
        per_bucket,
        [book_key, "underlying_code"],
        {
            **{c: c for c in (*GREEK_SUMS, *losses, "short_calls", "short_puts")},
            **calendar_terms(pl.col("delta_units")),
        },
        presorted=True,
    ).join(params, on="underlying_code", how="left")
    # concat_arr → list: concat_list of the loss columns was far slower (docs/performance.md).
    loss_list = pl.concat_arr(losses).arr.to_list()
    max_loss = pl.max_horizontal(losses)
    scan_risk = pl.max_horizontal(max_loss, 0.0)
    # Lowest scenario id attaining the maximum: the first loss column (ids ascending) equal to
    # it.  Scenarios that differ only in vol move give mathematically equal losses on a linear
    # book; summation order can leave them a few ulps apart, so "equal" allows 1e-12 relative,
    # which keeps the lowest-id rule stable from run to run.
    attains_max = max_loss - WORST_SCENARIO_TIE_TOLERANCE * max_loss.abs()
    worst = pl.coalesce(
        [pl.when(pl.col(column) >= attains_max).then(pl.lit(sid, dtype=pl.Int32)) for sid, column in zip(scenario_ids, losses)]
    )
    return per_underlying.with_columns(
        loss_list.alias("scenario_losses"),
        scan_risk.alias("scan_risk"),
        pl.when(scan_risk > 0).then(worst).otherwise(None).cast(pl.Int32).alias("worst_scenario"),
        calendar_spread_charge().alias("calendar_charge"),
        short_option_minimum().alias("short_option_min"),
    ).rename({"delta_units": "net_delta_units"}).drop(losses)


def worst_scenario_loss(
    positions: pl.LazyFrame, scan: pl.LazyFrame, unit_losses: pl.LazyFrame, scenario_ids: Sequence[int], book_key: str
) -> pl.LazyFrame:
    """``positions`` (one row per book × instrument) with ``worst_scenario_loss``: the
    position's share of its underlying's worst-scenario loss, USD (SPEC §5.2).

    ``−cover_k* × net_qty × pnl_unit_k*`` = ``net_qty × loss_<k*>`` of the instrument's
    unit losses, ``k*`` the ``worst_scenario`` of the position's book × underlying in
    ``scan``; 0 where the underlying has no worst scenario (scan risk 0).  Positive is a
    loss.  Over a book's positions on an underlying with scan risk > 0 these sum to
    ``scan_risk``.  Row order of ``positions`` is kept.

    ``instrument_id`` is a dense integer code (as ``valuation.value_positions`` takes it):
    the small ``unit_losses`` table is laid out flat, instrument by instrument and
    scenario by scenario, so each position gathers its ``loss_<k*>`` at ``instrument_id ×
    K + index of k*`` instead of joining an instrument × scenario table.
    """
    losses = [loss_column(sid) for sid in scenario_ids]
    by_instrument = unit_losses.select("instrument_id", *losses).collect()
    scenario_count = len(scenario_ids)
    slots = (by_instrument.get_column("instrument_id").cast(pl.Int64).max() or 0) + 1 if by_instrument.height else 0
    # Row ``code × K + i`` holds instrument ``code``'s loss in the i-th scenario (null for a code
    # with no unit losses: no position holds it).
    flat_unit_losses = (
        pl.DataFrame({"flat_index": pl.int_range(slots * scenario_count, eager=True, dtype=pl.Int64)})
        .join(
            by_instrument.unpivot(index="instrument_id", on=losses, variable_name="loss_column", value_name="unit_loss")
            .with_columns(
                (pl.col("instrument_id").cast(pl.Int64) * scenario_count
                 + pl.col("loss_column").replace_strict(losses, list(range(scenario_count)), return_dtype=pl.Int64))
                .alias("flat_index")
            ),
            on="flat_index", how="left", maintain_order="left",
        )
        .get_column("unit_loss")
    )
    scenario_index = pl.col("worst_scenario").replace_strict(
        list(scenario_ids), list(range(scenario_count)), return_dtype=pl.Int64
    )
    worst = scan.filter(pl.col("worst_scenario").is_not_null()).select(
        book_key, "underlying", scenario_index.alias("worst_index")
    )
    # The join carries only the key columns; the share is put beside the positions (same
    # rows, same order), so the wide position rows are not copied through the join.
    share = (
        positions.select(book_key, "instrument_id", "underlying", "net_qty")
        .join(worst, on=[book_key, "underlying"], how="left", maintain_order="left")
        .select(
            (pl.col("net_qty") * pl.lit(flat_unit_losses).gather(
                pl.col("instrument_id").cast(pl.Int64) * scenario_count + pl.col("worst_index")
            )).fill_null(0.0).alias("worst_scenario_loss")
        )
    )
    return pl.concat([positions, share], how="horizontal")


def _per_delta_risk() -> pl.Expr:
    """``w_u = min(SR_u / |Δ_u|, price_scan_u × S_u × fx_u)``, 0 when ``Δ_u = 0`` (SPEC §5.2)."""
    delta = pl.col("net_delta_units")
    return (
        pl.when(delta != 0)
        .then(
            pl.min_horizontal(
                pl.col("scan_risk") / delta.abs(), pl.col("price_scan") * pl.col("index_price") * pl.col("index_fx")
            )
        )
        .otherwise(0.0)
    )


def _credit_state(
    underlying_risk: pl.LazyFrame, ordered: pl.DataFrame, offset_underlyings: list[str], book_key: str,
    record_steps: bool = False,
) -> pl.LazyFrame:
    """One row per book: remaining delta ``d|u``, per-delta risk ``w|u`` and credit
    ``credit|u`` of each offset underlying after every offset of ``ordered`` (ascending
    priority).  ``record_steps`` keeps each offset's ``n|<priority>`` and the deltas it
    started from (``d_a|<priority>``, ``d_b|<priority>``)."""
    # One row per book × underlying, so each sum has one non-zero term (plain sums: a
    # filtered aggregation is far slower).
    def held_in(u: str, value: pl.Expr) -> pl.Expr:
        return pl.when(pl.col("underlying") == u).then(value).otherwise(0.0)

    state = underlying_risk.select(
        book_key,
        *[held_in(u, pl.col("net_delta_units")).alias(f"d|{u}") for u in offset_underlyings],
        *[held_in(u, _per_delta_risk()).alias(f"w|{u}") for u in offset_underlyings],
    ).group_by(book_key).agg(pl.all().sum()).with_columns(
        pl.lit(0.0).alias(f"credit|{u}") for u in offset_underlyings
    )
    for offset in ordered.iter_rows(named=True):
        a, b = offset["underlying_a"], offset["underlying_b"]
        if a == b:
            continue
        ratio_a, ratio_b, rate = offset["ratio_a"], offset["ratio_b"], offset["credit_rate"]
        d_a, d_b = pl.col(f"d|{a}"), pl.col(f"d|{b}")
        spread_legs = (
            pl.when(d_a * d_b < 0)
            .then(pl.min_horizontal(d_a.abs() / ratio_a, d_b.abs() / ratio_b))
            .otherwise(0.0)
        )
        state = state.with_columns(spread_legs.alias("spread_legs"))
        if record_steps:
            priority = offset["priority"]
            state = state.with_columns(
                pl.col("spread_legs").alias(f"n|{priority}"), d_a.alias(f"d_a|{priority}"), d_b.alias(f"d_b|{priority}")
            )
        state = state.with_columns(
            (pl.col(f"credit|{a}") + rate * pl.col("spread_legs") * ratio_a * pl.col(f"w|{a}")).alias(f"credit|{a}"),
            (pl.col(f"credit|{b}") + rate * pl.col("spread_legs") * ratio_b * pl.col(f"w|{b}")).alias(f"credit|{b}"),
            (d_a - d_a.sign() * pl.col("spread_legs") * ratio_a).alias(f"d|{a}"),
            (d_b - d_b.sign() * pl.col("spread_legs") * ratio_b).alias(f"d|{b}"),
        )
    return state


def inter_underlying_credits(underlying_risk: pl.LazyFrame, offsets: pl.DataFrame, book_key: str) -> pl.LazyFrame:
    """Adds ``inter_credit`` (credit_u) per book × underlying, offsets in ascending priority.

    ``w_u = min(SR_u / |Δ_u|, price_scan_u × S_u × fx_u)`` (0 when ``Δ_u = 0``); for each
    offset (a, b) with ``d_a·d_b < 0``: ``n = min(|d_a|/ratio_a, |d_b|/ratio_b)``,
    ``credit_a += credit_rate × n × ratio_a × w_a`` (b likewise), and the remaining
    deltas shrink by ``n × ratio`` (SPEC §5.2).  The loop runs over the few offset rows;
    each step is vectorised across every book.
    """
    if offsets.height == 0:
        return underlying_risk.with_columns(pl.lit(0.0).alias("inter_credit"))
    ordered = offsets.sort("priority")
    offset_underlyings = sorted(set(ordered["underlying_a"]) | set(ordered["underlying_b"]))
    state = _credit_state(underlying_risk, ordered, offset_underlyings, book_key)
    # Back to book × underlying by a join on the book alone (one row per book).
    credit_columns = [f"credit|{u}" for u in offset_underlyings]
    inter_credit = pl.coalesce(
        [pl.when(pl.col("underlying") == u).then(pl.col(f"credit|{u}")) for u in offset_underlyings]
    ).fill_null(0.0)
    return underlying_risk.join(state.select(book_key, *credit_columns), on=book_key, how="left").with_columns(
        inter_credit.alias("inter_credit")
    ).drop(credit_columns)


def offset_credit_steps(underlying_risk: pl.LazyFrame, offsets: pl.DataFrame, book_key: str) -> pl.LazyFrame:
    """One row per book × offset that gave a credit (``n > 0``), in priority order: the
    pair (``underlying_a``, ``underlying_b``, ratios, ``credit_rate``), the remaining
    deltas it started from (``d_a``, ``d_b``, units of underlying), ``n`` (spread legs),
    the per-delta risks ``w_a``, ``w_b`` (USD per unit) and ``credit_a``, ``credit_b``
    (USD): the steps of ``inter_underlying_credits``, by the same state (SPEC §5.2, §13).
    Per book × underlying the credits sum, in priority order, to its ``inter_credit``."""
    columns = {
        book_key: pl.String, "priority": pl.Int32, "underlying_a": pl.String, "underlying_b": pl.String,
        "ratio_a": pl.Float64, "ratio_b": pl.Float64, "credit_rate": pl.Float64, "d_a": pl.Float64,
        "d_b": pl.Float64, "n": pl.Float64, "w_a": pl.Float64, "w_b": pl.Float64, "credit_a": pl.Float64,
        "credit_b": pl.Float64,
    }
    ordered = offsets.sort("priority").filter(pl.col("underlying_a") != pl.col("underlying_b"))
    if ordered.height == 0:
        return underlying_risk.select(book_key).head(0).with_columns(
            pl.lit(None, dtype=dtype).alias(name) for name, dtype in columns.items() if name != book_key
        )
    offset_underlyings = sorted(set(ordered["underlying_a"]) | set(ordered["underlying_b"]))
    state = _credit_state(underlying_risk, ordered, offset_underlyings, book_key, record_steps=True)
    steps = [
        state.select(
            book_key,
            pl.lit(o["priority"], dtype=pl.Int32).alias("priority"),
            pl.lit(o["underlying_a"]).alias("underlying_a"), pl.lit(o["underlying_b"]).alias("underlying_b"),
            pl.lit(o["ratio_a"], dtype=pl.Float64).alias("ratio_a"), pl.lit(o["ratio_b"], dtype=pl.Float64).alias("ratio_b"),
            pl.lit(o["credit_rate"], dtype=pl.Float64).alias("credit_rate"),
            pl.col(f"d_a|{o['priority']}").alias("d_a"), pl.col(f"d_b|{o['priority']}").alias("d_b"),
            pl.col(f"n|{o['priority']}").alias("n"),
            pl.col(f"w|{o['underlying_a']}").alias("w_a"), pl.col(f"w|{o['underlying_b']}").alias("w_b"),
            (o["credit_rate"] * pl.col(f"n|{o['priority']}") * o["ratio_a"] * pl.col(f"w|{o['underlying_a']}")).alias("credit_a"),
            (o["credit_rate"] * pl.col(f"n|{o['priority']}") * o["ratio_b"] * pl.col(f"w|{o['underlying_b']}")).alias("credit_b"),
        )
        for o in ordered.iter_rows(named=True)
    ]
    return pl.concat(steps).filter(pl.col("n") > 0).sort(book_key, "priority")


def calendar_buckets(positions: pl.LazyFrame, instruments: pl.LazyFrame, book_key: str) -> pl.LazyFrame:
    """One row per book × underlying × calendar bucket: ``bucket`` (``spot``,
    ``perpetual`` or the expiry date), ``expiry_bucket`` (its sort key, as the scan
    uses it) and ``delta_units`` = Σ delta_units of the book's positions in it, units
    of underlying, signed (SPEC §5.2 calendar spread charge).  ``positions``: book ×
    instrument with ``delta_units``; ``instruments``: ``instrument_id``, ``underlying``,
    ``kind``, ``expiry``."""
    keys = instruments.select("instrument_id", "underlying", "kind", "expiry", _expiry_bucket())
    label = (
        pl.when(pl.col("kind") == "spot").then(pl.lit("spot"))
        .when(pl.col("kind") == "perpetual").then(pl.lit("perpetual"))
        .otherwise(pl.col("expiry").cast(pl.String))
    )
    return (
        positions.select(book_key, "instrument_id", "delta_units")
        .join(keys, on="instrument_id", how="left")
        .with_columns(label.alias("bucket"))
        .group_by(book_key, "underlying", "expiry_bucket", "bucket")
        .agg(pl.col("delta_units").sum())
        .sort(book_key, "underlying", "expiry_bucket")
    )


def short_option_units(positions: pl.LazyFrame, instruments: pl.LazyFrame, book_key: str) -> pl.LazyFrame:
    """One row per book × underlying with an option position: ``short_calls`` and
    ``short_puts`` = Σ |net_qty| × multiplier over the book's calls (puts) with
    ``net_qty < 0`` (``short_option_terms``), units of underlying ≥ 0 — the quantities
    of ``short_option_minimum`` (SPEC §5.2), for ``margin explain``.  ``instruments``:
    ``instrument_id``, ``kind``, ``option_type``, ``multiplier``."""
    return (
        positions.select(book_key, "instrument_id", "underlying", "net_qty")
        .join(instruments.select("instrument_id", "kind", "option_type", "multiplier"), on="instrument_id", how="left")
        .filter(pl.col("kind") == "option")
        .group_by(book_key, "underlying")
        .agg(term.sum().alias(name) for name, term in short_option_terms().items())
        .sort(book_key, "underlying")
    )


def underlying_risk(scan: pl.LazyFrame, offsets: pl.DataFrame, book_key: str) -> pl.LazyFrame:
    """Book × underlying risk: ``risk = max(scan_risk + calendar_charge − inter_credit, short_option_min)``."""
    return inter_underlying_credits(scan, offsets, book_key).with_columns(
        pl.max_horizontal(
            pl.col("scan_risk") + pl.col("calendar_charge") - pl.col("inter_credit"), pl.col("short_option_min")
        ).alias("risk")
    )


def portfolio_margin(risk_by_underlying: pl.LazyFrame, book_key: str) -> pl.LazyFrame:
    """One row per book: ``portfolio_im = Σ_u risk_u`` and ``inter_credit = Σ_u credit_u``."""
    return summation.ordered_sums(
        risk_by_underlying, [book_key], {"portfolio_im": "risk", "inter_credit": "inter_credit"},
        order_by=["underlying"],
    )
