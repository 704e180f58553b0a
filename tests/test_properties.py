"""Invariants of the methodology, on random small books (hypothesis).

One ``compute_margin`` per example carries several derived accounts side by side
(accounts are margined independently), so the file stays well under a minute:

- ``A``: the generated rows; ``S``: every row split into two same-sign halves;
  ``O``: every row q split into opposite-sign pieces q + 1 and −1; ``D``: every
  quantity doubled; ``Z``: the rows plus their negation; ``M``: the rows, alone in
  margin group ``G``.  All in portfolio mode.
"""

from __future__ import annotations

import math
import random

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from books import margin, rows
from transforms.valuation import black76_value

INSTRUMENT_IDS = ["BTC", "BTC-PERP", "BTC-0328", "BTC-0425", "BTC-0328-50000-C", "BTC-0328-50000-P",
                  "BTC-0328-40000-P", "ETH", "ETH-PERP", "ETH-0328"]
# quantities are multiples of 0.5, so halves and sums are exact in binary
quantity = st.integers(min_value=-20, max_value=20).filter(lambda n: n != 0).map(lambda n: n / 2)
book_rows = st.lists(st.tuples(st.sampled_from(INSTRUMENT_IDS), quantity), min_size=1, max_size=6)
collateral_rows = st.lists(st.tuples(st.sampled_from(["USD", "USDC", "BTC", "MEME"]), quantity), max_size=3)
SETTINGS = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REL = 1e-9
POSITION_FIGURES = ["net_qty", "mv_usd", "delta_units", "delta_usd", "gamma_units", "vega_usd", "theta_usd", "net_im"]
ACCOUNT_FIGURES = ["net_im", "portfolio_im", "inter_credit", "position_count", "position_value_usd",
                   "collateral_value_usd", "equity"]


def derived_book(generated, collateral):
    positions = []
    for instrument, q in generated:
        positions += [("A", instrument, q), ("S", instrument, q / 2, "x"), ("S", instrument, q / 2, "y"),
                      ("O", instrument, q + math.copysign(1.0, q)), ("O", instrument, -math.copysign(1.0, q)),
                      ("D", instrument, 2 * q), ("Z", instrument, q), ("Z", instrument, -q), ("M", instrument, q)]
    cash = [(account, asset, amount) for asset, amount in collateral for account in ("A", "S", "O", "M")]
    accounts = [(a, None, "portfolio") for a in ("A", "S", "O", "D", "Z")] + [("M", "G", "portfolio")]
    return positions, cash, accounts


def by_instrument(results, account):
    return {r["instrument_id"]: r for r in rows(results, "position_margin", account_id=account)}


def close(a, b, rel=REL):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)


def assert_figures(got: dict, expect: dict, columns, factor=1.0):
    for column in columns:
        assert close(got[column], factor * expect[column] if factor != 1.0 else expect[column]), (
            column, got[column], expect[column])


def assert_sound(results):
    """portfolio_im ≥ 0; each underlying's credit is at most its scan risk."""
    assert (results.tables["account_margin"]["portfolio_im"] >= 0).all()
    risk = results.tables["underlying_risk"]
    assert (risk["inter_credit"] <= risk["scan_risk"] * 0.5 + 1e-9).all()  # max credit_rate = 0.5
    assert (risk["inter_credit"] >= 0).all() and (risk["risk"] >= risk["short_option_min"]).all()


@SETTINGS
@given(generated=book_rows, collateral=collateral_rows)
def test_splitting_doubling_netting_and_groups(generated, collateral):
    positions, cash, accounts = derived_book(generated, collateral)
    results = margin(*positions, collateral=cash, accounts=accounts)
    assert_sound(results)
    original = by_instrument(results, "A")
    account = {a: rows(results, "account_margin", account_id=a)[0] for a in ("A", "S", "O", "D", "Z", "M")}

    # same-sign split: only source_count changes (gross_qty and gross_im are per row, unchanged)
    for instrument, split in by_instrument(results, "S").items():
        assert_figures(split, original[instrument], POSITION_FIGURES + ["gross_qty", "gross_im"])
        assert split["source_count"] == 2 * original[instrument]["source_count"]
    assert_figures(account["S"], account["A"], ACCOUNT_FIGURES + ["gross_im", "im", "excess"])
    assert account["S"]["status"] == account["A"]["status"]

    # opposite-sign split: gross_qty, gross_im and source_count change, nothing else
    for instrument, split in by_instrument(results, "O").items():
        assert_figures(split, original[instrument], POSITION_FIGURES)
        assert split["gross_qty"] > original[instrument]["gross_qty"]
    assert_figures(account["O"], account["A"], ACCOUNT_FIGURES + ["im", "excess"])

    # doubling every quantity doubles every margin figure (all are positively homogeneous)
    for instrument, doubled in by_instrument(results, "D").items():
        assert_figures(doubled, original[instrument], ["net_qty", "gross_qty", "net_im", "gross_im", "delta_units"],
                       factor=2.0)
    assert_figures(account["D"], account["A"], ["gross_im", "net_im", "portfolio_im", "inter_credit"], factor=2.0)

    # a long and an equal short net to zero risk
    assert (account["Z"]["net_im"], account["Z"]["portfolio_im"], account["Z"]["position_count"]) == (0.0, 0.0, 0)
    assert all(r["scan_risk"] == 0.0 and r["worst_scenario"] is None
               for r in rows(results, "underlying_risk", account_id="Z"))

    # a group of one account equals that account in portfolio mode
    group = rows(results, "group_margin", margin_group="G")[0]
    assert close(group["group_im"], account["M"]["portfolio_im"])
    assert close(group["group_equity"], account["M"]["equity"])
    assert close(group["sum_member_im"], account["M"]["im"]) and close(group["aggregation_benefit"], 0.0)
    assert group["status"] == account["M"]["status"] == account["M"]["binding_status"]
    assert_figures(account["M"], account["A"], ACCOUNT_FIGURES + ["im", "gross_im"])


@settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    books=st.lists(st.tuples(st.sampled_from(["P", "Q", "R"]), st.sampled_from(INSTRUMENT_IDS), quantity),
                   min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_account_order_and_row_order_change_nothing(books, seed):
    shuffled = list(books)
    random.Random(seed).shuffle(shuffled)
    accounts = [(a, "G" if a != "R" else None, "portfolio") for a in ("P", "Q", "R")]
    first = margin(*books, accounts=accounts)
    second = margin(*shuffled, accounts=list(reversed(accounts)))
    for table in ("position_margin", "underlying_risk", "account_margin", "group_margin"):
        a, b = first.tables[table], second.tables[table]
        assert a.columns == b.columns and a.height == b.height
        for left, right in zip(a.to_dicts(), b.to_dicts()):
            for column, value in left.items():
                if isinstance(value, float):
                    assert close(value, right[column]), (table, column, value, right[column])
                elif isinstance(value, list):
                    assert all(close(x, y) for x, y in zip(value, right[column]))
                else:
                    assert value == right[column], (table, column)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    forward=st.floats(1.0, 1e5), moneyness=st.floats(0.5, 2.0), sigma=st.floats(0.01, 3.0),
    years=st.floats(0.0, 3.0), option_type=st.sampled_from(["C", "P"]),
)
def test_black76_bounds_and_parity(forward, moneyness, sigma, years, option_type):
    strike = forward * moneyness
    frame = pl.DataFrame({"F": [forward], "K": [strike], "s": [sigma], "T": [years]})
    value = {t: frame.select(black76_value(pl.col("F"), pl.col("K"), pl.col("s"), pl.col("T"), pl.lit(t))).item()
             for t in ("C", "P")}
    intrinsic = max(forward - strike, 0.0) if option_type == "C" else max(strike - forward, 0.0)
    assert value[option_type] >= intrinsic - 1e-9 * forward
    assert value[option_type] <= (forward if option_type == "C" else strike) * (1 + 1e-12)
    assert value["C"] - value["P"] == pytest.approx(forward - strike, rel=1e-9, abs=1e-9 * forward)
