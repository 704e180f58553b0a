"""Option pricing (Black-76, zero rates), greeks and per-position valuation (SPEC §4).

Options are linear (premium, strike and payoff in the instrument's currency) and are
valued on the underlying's index price ``F = S_u``.  All functions are Polars
expressions so one plan prices every instrument and scenario at once.
"""

from __future__ import annotations

import math

import polars as pl

SQRT2 = math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
DAYS_PER_YEAR = 365.0


def norm_cdf(x: pl.Expr) -> pl.Expr:
    """Standard normal CDF ``N(x)``; ``erfc`` keeps the left tail accurate."""
    return 0.5 * (-x / SQRT2).erfc()


def norm_pdf(x: pl.Expr) -> pl.Expr:
    """Standard normal density ``n(x)``."""
    return INV_SQRT_2PI * (-0.5 * x * x).exp()


def _is_call(option_type: pl.Expr) -> pl.Expr:
    return option_type == "C"


def intrinsic_value(forward: pl.Expr, strike: pl.Expr, option_type: pl.Expr) -> pl.Expr:
    """``max(F − K, 0)`` for a call, ``max(K − F, 0)`` for a put."""
    return (
        pl.when(_is_call(option_type))
        .then(pl.max_horizontal(forward - strike, 0.0))
        .otherwise(pl.max_horizontal(strike - forward, 0.0))
    )


def _d1(forward: pl.Expr, strike: pl.Expr, sigma: pl.Expr, years: pl.Expr) -> pl.Expr:
    vol_sqrt_t = sigma * years.sqrt()
    return ((forward / strike).log() + 0.5 * sigma * sigma * years) / vol_sqrt_t


def _has_time_value(forward: pl.Expr, sigma: pl.Expr, years: pl.Expr) -> pl.Expr:
    return (years > 0) & (sigma > 0) & (forward > 0)


def black76_value(
    forward: pl.Expr, strike: pl.Expr, sigma: pl.Expr, years: pl.Expr, option_type: pl.Expr
) -> pl.Expr:
    """Black-76 value of one option unit with zero rates; intrinsic when ``T = 0``,
    ``σ = 0`` or ``F ≤ 0`` (SPEC §4)."""
    d1 = _d1(forward, strike, sigma, years)
    d2 = d1 - sigma * years.sqrt()
    call = forward * norm_cdf(d1) - strike * norm_cdf(d2)
    put = strike * norm_cdf(-d2) - forward * norm_cdf(-d1)
    model = pl.when(_is_call(option_type)).then(call).otherwise(put)
    return (
        pl.when(_has_time_value(forward, sigma, years))
        .then(model)
        .otherwise(intrinsic_value(forward, strike, option_type))
    )


def option_greeks(
    forward: pl.Expr, strike: pl.Expr, sigma: pl.Expr, years: pl.Expr, option_type: pl.Expr
) -> list[pl.Expr]:
    """Per-unit greeks ``delta``, ``gamma``, ``vega`` (per vol point), ``theta`` (per day).

    At ``T = 0`` (or ``σ = 0``) a call's delta is 1 if ``F > K`` else 0, a put's −1 if
    ``F < K`` else 0, and the other greeks are 0 (SPEC §4).
    """
    sqrt_t = years.sqrt()
    d1 = _d1(forward, strike, sigma, years)
    density = norm_pdf(d1)
    live = _has_time_value(forward, sigma, years)
    call = _is_call(option_type)
    model_delta = pl.when(call).then(norm_cdf(d1)).otherwise(norm_cdf(d1) - 1.0)
    expiry_delta = (
        pl.when(call)
        .then(pl.when(forward > strike).then(1.0).otherwise(0.0))
        .otherwise(pl.when(forward < strike).then(-1.0).otherwise(0.0))
    )
    return [
        pl.when(live).then(model_delta).otherwise(expiry_delta).alias("delta"),
        pl.when(live).then(density / (forward * sigma * sqrt_t)).otherwise(0.0).alias("gamma"),
        pl.when(live).then(forward * density * sqrt_t / 100.0).otherwise(0.0).alias("vega"),
        pl.when(live)
        .then(-forward * density * sigma / (2.0 * sqrt_t) / DAYS_PER_YEAR)
        .otherwise(0.0)
        .alias("theta"),
    ]


def years_to_expiry(expiry: pl.Expr, as_of) -> pl.Expr:
    """``T = max(expiry − D, 0) / 365`` in whole days, ACT/365; 0 without expiry."""
    days = (expiry - pl.lit(as_of)).dt.total_days()
    return pl.max_horizontal(days, 0).cast(pl.Float64).fill_null(0.0) / DAYS_PER_YEAR


def value_instruments(instrument_market: pl.LazyFrame, as_of) -> pl.LazyFrame:
    """Greeks per unit of underlying for each instrument; one row per instrument.

    Input: one row per usable instrument with ``kind``, ``strike``, ``option_type``,
    ``expiry``, ``index_price`` and ``implied_vol``. Adds ``years``, ``delta``,
    ``gamma``, ``vega``, ``theta``.  Spot, future and perpetual: delta 1, others 0.
    """
    forward = pl.col("index_price")
    strike = pl.col("strike")
    sigma = pl.col("implied_vol")
    years = pl.col("years")
    option_type = pl.col("option_type")
    is_option = pl.col("kind") == "option"
    greeks = option_greeks(forward, strike, sigma, years, option_type)
    linear = {"delta": 1.0, "gamma": 0.0, "vega": 0.0, "theta": 0.0}
    return instrument_market.with_columns(years_to_expiry(pl.col("expiry"), as_of).alias("years")).with_columns(
        pl.when(is_option).then(greek).otherwise(pl.lit(linear[greek.meta.output_name()])).alias(
            greek.meta.output_name()
        )
        for greek in greeks
    )


def value_positions(netted: pl.LazyFrame, instruments_by_code: pl.DataFrame) -> pl.LazyFrame:
    """Mark value and greeks of each netted position; one row per book × instrument, in
    the order of ``netted``.

    ``mv_usd = net_qty × multiplier × price × fx``; ``delta_units = net_qty ×
    multiplier × delta``; ``delta_usd = delta_units × S_u × fx_u``; ``gamma_units``,
    ``vega_usd`` and ``theta_usd`` likewise (SPEC §4).

    ``instrument_id`` is a dense integer code and row ``i`` of ``instruments_by_code``
    (``encoding.by_code``) holds instrument ``i``'s values: each instrument column is one
    gather by code instead of a join.
    """
    per_instrument = [
        pl.lit(instruments_by_code.get_column(name)).gather(pl.col("instrument_id")).alias(name)
        for name in instruments_by_code.columns
        if name != "instrument_id"
    ]
    units = pl.col("net_qty") * pl.col("multiplier")
    return netted.with_columns(per_instrument).with_columns(
        (units * pl.col("price") * pl.col("fx")).alias("mv_usd"),
        (units * pl.col("delta")).alias("delta_units"),
        (units * pl.col("delta") * pl.col("index_price") * pl.col("index_fx")).alias("delta_usd"),
        (units * pl.col("gamma")).alias("gamma_units"),
        (units * pl.col("vega") * pl.col("fx")).alias("vega_usd"),
        (units * pl.col("theta") * pl.col("fx")).alias("theta_usd"),
    )
