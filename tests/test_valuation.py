"""Black-76 values and greeks, time to expiry and per-position valuation (SPEC §4).

Golden numbers: N(0.1) = 0.539827837277029, n(0.1) = 0.3969525474770118 (standard
normal tables); others are written out with their arithmetic.  Compared at 1e-9
relative.  Greeks are also checked against finite differences of the pricing
function itself.
"""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest

from books import AS_OF, EXP_0328, margin, row
from transforms.valuation import black76_value, option_greeks, years_to_expiry

REL = 1e-9


def black76(forward, strike, sigma, years, option_type) -> float:
    """The product's Black-76 value of one option unit, evaluated through Polars."""
    given = pl.DataFrame(
        {"F": [float(forward)], "K": [float(strike)], "sigma": [float(sigma)], "T": [float(years)],
         "type": [option_type]}
    )
    return given.select(
        black76_value(pl.col("F"), pl.col("K"), pl.col("sigma"), pl.col("T"), pl.col("type"))
    ).item()


def greeks(forward, strike, sigma, years, option_type) -> dict[str, float]:
    given = pl.DataFrame(
        {"F": [float(forward)], "K": [float(strike)], "sigma": [float(sigma)], "T": [float(years)],
         "type": [option_type]}
    )
    return given.select(
        option_greeks(pl.col("F"), pl.col("K"), pl.col("sigma"), pl.col("T"), pl.col("type"))
    ).to_dicts()[0]


# --- Black-76 value ----------------------------------------------------------------

def test_at_the_money_call_and_put():
    # F = K = 100, σ = 0.2, T = 1: d1 = (ln 1 + 0.02) / 0.2 = 0.1, d2 = −0.1
    # call = 100·N(0.1) − 100·N(−0.1) = 100·(2·0.539827837277029 − 1) = 7.965567455405804
    # put  = 100·N(0.1) − 100·N(−0.1) as well (zero rates, F = K)
    assert black76(100, 100, 0.2, 1.0, "C") == pytest.approx(7.965567455405804, rel=REL)
    assert black76(100, 100, 0.2, 1.0, "P") == pytest.approx(7.965567455405804, rel=REL)


def test_in_the_money_call_and_put_keep_parity():
    # F = 110, K = 100, σ = 0.25, T = 0.5: σ√T = 0.1767766952966369
    # d1 = (ln 1.1 + 0.015625) / 0.1767766952966369 = (0.09531017980432493 + 0.015625) / 0.17677… = 0.6275441432942968
    # call = 110·N(d1) − 100·N(d1 − σ√T) = 13.44121470639925; put = call − (F − K) = 3.441214706399247
    call = black76(110, 100, 0.25, 0.5, "C")
    put = black76(110, 100, 0.25, 0.5, "P")
    assert call == pytest.approx(13.44121470639925, rel=REL)
    assert put == pytest.approx(3.441214706399247, rel=REL)
    assert call - put == pytest.approx(110 - 100, rel=REL)


@pytest.mark.parametrize(
    "forward, strike, sigma, years, option_type, intrinsic",
    [
        (110, 100, 0.5, 0.0, "C", 10.0),   # T = 0: max(110 − 100, 0)
        (110, 100, 0.5, 0.0, "P", 0.0),    # T = 0: max(100 − 110, 0)
        (90, 100, 0.5, 0.0, "P", 10.0),    # T = 0: max(100 − 90, 0)
        (90, 100, 0.5, 0.0, "C", 0.0),
        (100, 100, 0.5, 0.0, "C", 0.0),    # at the money at expiry: worthless
        (120, 100, 0.0, 1.0, "C", 20.0),   # σ = 0: intrinsic
        (80, 100, 0.0, 1.0, "P", 20.0),
        (0.0, 100, 0.5, 1.0, "C", 0.0),    # F ≤ 0: intrinsic, max(0 − 100, 0)
        (0.0, 100, 0.5, 1.0, "P", 100.0),  # max(100 − 0, 0)
        (-5.0, 100, 0.5, 1.0, "P", 105.0),
    ],
)
def test_value_is_intrinsic_without_time_vol_or_positive_forward(forward, strike, sigma, years, option_type, intrinsic):
    assert black76(forward, strike, sigma, years, option_type) == intrinsic


# --- greeks --------------------------------------------------------------------------

def test_at_the_money_greeks():
    # F = K = 100, σ = 0.2, T = 1, d1 = 0.1, n(d1) = 0.3969525474770118
    # call delta N(0.1) = 0.539827837277029; put delta N(0.1) − 1 = −0.460172162722971
    # gamma n(d1)/(F σ √T) = 0.3969525474770118 / 20 = 0.01984762737385059
    # vega  F n(d1) √T / 100 = 0.3969525474770118
    # theta −F n(d1) σ / (2√T) / 365 = −3.969525474770118 / 365 = −0.010875412259644158
    call, put = greeks(100, 100, 0.2, 1.0, "C"), greeks(100, 100, 0.2, 1.0, "P")
    assert call["delta"] == pytest.approx(0.539827837277029, rel=REL)
    assert put["delta"] == pytest.approx(0.539827837277029 - 1.0, rel=REL)
    for side in (call, put):
        assert side["gamma"] == pytest.approx(0.01984762737385059, rel=REL)
        assert side["vega"] == pytest.approx(0.3969525474770118, rel=REL)
        assert side["theta"] == pytest.approx(-0.010875412259644158, rel=REL)


def test_in_the_money_greeks():
    # F = 110, K = 100, σ = 0.25, T = 0.5, d1 = 0.6275441432942968, n(d1) = 0.32761…
    # delta N(d1) = 0.734848695157217 (put −0.26515130484278304)
    # gamma n(d1)/(110·0.17677669529663687) = 0.016849121273425232
    # vega 110·n(d1)·√0.5/100 = 0.2548429592605567; theta −110·n(d1)·0.25/(2√0.5)/365 = −0.01745499720962717
    call, put = greeks(110, 100, 0.25, 0.5, "C"), greeks(110, 100, 0.25, 0.5, "P")
    assert call["delta"] == pytest.approx(0.734848695157217, rel=REL)
    assert put["delta"] == pytest.approx(-0.26515130484278304, rel=REL)
    assert call["gamma"] == put["gamma"] == pytest.approx(0.016849121273425232, rel=REL)
    assert call["vega"] == put["vega"] == pytest.approx(0.2548429592605567, rel=REL)
    assert call["theta"] == put["theta"] == pytest.approx(-0.01745499720962717, rel=REL)


@pytest.mark.parametrize(
    "forward, option_type, delta",
    [
        (110, "C", 1.0),   # call, F > K
        (100, "C", 0.0),   # call, F = K: not F > K
        (90, "C", 0.0),
        (90, "P", -1.0),   # put, F < K
        (100, "P", 0.0),   # put, F = K: not F < K
        (110, "P", 0.0),
    ],
)
def test_greeks_at_expiry(forward, option_type, delta):
    assert greeks(forward, 100, 0.5, 0.0, option_type) == {"delta": delta, "gamma": 0.0, "vega": 0.0, "theta": 0.0}


@pytest.mark.parametrize(
    "forward, strike, sigma, years, option_type",
    [(100, 100, 0.2, 1.0, "C"), (110, 100, 0.25, 0.5, "P"), (50000, 40000, 0.6, 14 / 365, "P"),
     (2000, 2300, 0.9, 0.25, "C")],
)
def test_greeks_are_derivatives_of_the_pricing_function(forward, strike, sigma, years, option_type):
    got = greeks(forward, strike, sigma, years, option_type)
    h = forward * 1e-4

    def value(f=forward, s=sigma, t=years):
        return black76(f, strike, s, t, option_type)

    delta = (value(f=forward + h) - value(f=forward - h)) / (2 * h)
    gamma = (value(f=forward + h) - 2 * value() + value(f=forward - h)) / (h * h)
    vega = (value(s=sigma + 1e-5) - value(s=sigma - 1e-5)) / 2e-5 / 100  # per vol point
    theta = -(value(t=years + 1e-6) - value(t=years - 1e-6)) / 2e-6 / 365  # per day, time running down
    assert got["delta"] == pytest.approx(delta, rel=1e-6, abs=1e-9)
    assert got["gamma"] == pytest.approx(gamma, rel=1e-4)
    assert got["vega"] == pytest.approx(vega, rel=1e-6)
    assert got["theta"] == pytest.approx(theta, rel=1e-6)


# --- time to expiry ----------------------------------------------------------------------

def test_years_to_expiry_act_365_whole_days():
    given = pl.DataFrame(
        {"expiry": [EXP_0328, AS_OF, AS_OF - dt.timedelta(days=3), None, dt.date(2026, 3, 14)]},
        schema={"expiry": pl.Date},
    )
    got = given.select(years_to_expiry(pl.col("expiry"), AS_OF)).to_series().to_list()
    # 14 days; expiring on D → 0; past → max(−3, 0) = 0; no expiry → 0; 365 days → 1
    assert got == [14 / 365, 0.0, 0.0, 0.0, 1.0]


# --- per-position valuation with fx and index fx -------------------------------------

SOL_MARKET = dict(
    instruments={
        "SOL": ("spot", "SOL", "EUR", 1.0, None, None, None),                     # index quoted in EUR
        "SOL-0328-100-C": ("option", "SOL", "GBP", 5.0, EXP_0328, 100.0, "C"),   # option settled in GBP
        "SOL-PERP": ("perpetual", "SOL", "USD", 10.0, None, None, None),
    },
    prices={"SOL": (100.0, None), "SOL-0328-100-C": (8.0, 0.8), "SOL-PERP": (126.0, None)},
    fx_rates={"EUR": 1.25, "GBP": 2.0},
    risk_params=[("SOL", 0.2, 0.1, 0.2, 0.05, 0.05)],
)


@pytest.fixture(scope="module")
def sol_book():
    return margin(
        ("A", "SOL-0328-100-C", -1.0, "venue-x"),
        ("A", "SOL-0328-100-C", -2.0, "venue-y"),
        ("A", "SOL-PERP", 4.0),
        ("A", "SOL", 10.0),
        **SOL_MARKET,
    )


def test_option_position_values_use_instrument_fx_and_index_fx(sol_book):
    got = row(sol_book, "position_margin", account_id="A", instrument_id="SOL-0328-100-C")
    # S_u = 100 (EUR index, used as a GBP price by the option), fx = 2.0 (GBP), fx_u = 1.25 (EUR)
    # T = 14/365, σ = 0.8: d1 = 0.8·√(14/365)/2 = 0.07833891945495461
    # delta 0.5312207703372149, gamma 0.02538457306691091, vega 0.07789238858887733, theta −0.22254968168250663
    # net_qty × multiplier = −3 × 5 = −15
    assert got["net_qty"] == -3.0 and got["gross_qty"] == 3.0 and got["source_count"] == 2
    assert got["mv_usd"] == pytest.approx(-240.0, rel=REL)                      # −3 × 5 × 8 × 2.0
    assert got["delta_units"] == pytest.approx(-7.968311555058224, rel=REL)     # −15 × 0.53122…
    assert got["delta_usd"] == pytest.approx(-996.038944382278, rel=REL)        # × 100 × 1.25 (fx_u)
    assert got["gamma_units"] == pytest.approx(-0.3807685960036637, rel=REL)    # −15 × 0.025384…
    assert got["vega_usd"] == pytest.approx(-2.33677165766632, rel=REL)         # −15 × 0.077892… × 2.0 (fx)
    assert got["theta_usd"] == pytest.approx(6.676490450475199, rel=REL)        # −15 × −0.22254… × 2.0


def test_linear_position_values(sol_book):
    perp = row(sol_book, "position_margin", account_id="A", instrument_id="SOL-PERP")
    spot = row(sol_book, "position_margin", account_id="A", instrument_id="SOL")
    # perpetual: mv = 4 × 10 × 126 × 1.0 = 5040; delta_units = 4 × 10 × 1 = 40; delta_usd = 40 × 100 × 1.25
    assert (perp["mv_usd"], perp["delta_units"], perp["delta_usd"]) == pytest.approx((5040.0, 40.0, 5000.0), rel=REL)
    # spot in EUR: mv = 10 × 1 × 100 × 1.25 = 1250; delta_usd = 10 × 100 × 1.25 = 1250
    assert (spot["mv_usd"], spot["delta_units"], spot["delta_usd"]) == pytest.approx((1250.0, 10.0, 1250.0), rel=REL)
    for linear in (perp, spot):
        assert (linear["gamma_units"], linear["vega_usd"], linear["theta_usd"]) == (0.0, 0.0, 0.0)
    assert perp["price"] == 126.0 and spot["price"] == 100.0


def test_underlying_greeks_are_sums_of_positions(sol_book):
    got = row(sol_book, "underlying_risk", account_id="A", underlying="SOL")
    # net delta units −7.968311555058224 + 40 + 10; delta_usd −996.038944382278 + 5000 + 1250
    assert got["net_delta_units"] == pytest.approx(42.031688444941776, rel=REL)
    assert got["delta_usd"] == pytest.approx(5253.961055617722, rel=REL)
    assert got["gamma_units"] == pytest.approx(-0.3807685960036637, rel=REL)
    assert got["vega_usd"] == pytest.approx(-2.33677165766632, rel=REL)
    assert got["theta_usd"] == pytest.approx(6.676490450475199, rel=REL)


def test_option_expiring_today_values_at_intrinsic():
    results = margin(
        ("A", "BTC-0314-45000-C", 2.0),
        instruments={"BTC-0314-45000-C": ("option", "BTC", "USD", 1.0, AS_OF, 45000.0, "C")},
        prices={"BTC-0314-45000-C": (5000.0, 0.5)},
    )
    got = row(results, "position_margin", account_id="A", instrument_id="BTC-0314-45000-C")
    # T = 0: delta 1 (F = 50000 > K); delta_units = 2; delta_usd = 2 × 50000; other greeks 0
    assert (got["delta_units"], got["delta_usd"], got["gamma_units"], got["vega_usd"], got["theta_usd"]) == (
        2.0, 100000.0, 0.0, 0.0, 0.0,
    )
    assert got["mv_usd"] == 10000.0  # 2 × 1 × 5000 × 1 (the mark, not the model)
