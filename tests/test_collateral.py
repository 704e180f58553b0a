"""Collateral valuation: FX, marginal haircut tiers, ineligible assets (SPEC §6).

Haircuts (tests/books.py): BTC 10 % on [0, 100,000), 20 % on [100,000, 500,000),
50 % from 500,000 (open); USDC 1 % on [0, 1,000,000), 5 % above; USD, ETH, EUR,
MEME have no row.  FX: BTC 50000, ETH 2000, EUR 1.25, MEME 0.01, USDC 1.
"""

from __future__ import annotations

import pytest

from books import margin, row

REL = 1e-9


@pytest.fixture(scope="module")
def results():
    return margin(
        collateral=[
            ("H1", "BTC", 3.0),
            ("H2", "BTC", 20.0),
            ("H3", "USDC", 600_000.0), ("H3", "USDC", 600_000.0),
            ("H4", "BTC", -2.0),
            ("H5", "MEME", 1000.0),
            ("H6", "MEME", -500.0),
            ("H7", "USD", 1000.0),
            ("H8", "USDC", 100.0), ("H8", "USDC", -100.0),
            ("H9", "ETH", 1.0),
            ("H10", "EUR", 100.0),
            ("H11", "BTC", 1.0), ("H11", "USDC", 500.0), ("H11", "MEME", 1000.0), ("H11", "ETH", -1.0),
        ],
    )


def valuation(results, account, asset):
    got = row(results, "collateral_valuation", account_id=account, asset=asset)
    return got["amount"], got["usd_rate"], got["value_usd"], got["haircut_usd"], got["value_after_haircut_usd"], got[
        "eligible"]


def test_marginal_tiers(results):
    # 3 BTC = 150,000: 10 % × 100,000 + 20 % × 50,000 = 20,000
    assert valuation(results, "H1", "BTC") == pytest.approx((3.0, 50000.0, 150000.0, 20000.0, 130000.0, True),
                                                            rel=REL)


def test_last_tier_is_open_ended(results):
    # 20 BTC = 1,000,000: 10 % × 100,000 + 20 % × 400,000 + 50 % × 500,000 = 10,000 + 80,000 + 250,000
    assert valuation(results, "H2", "BTC") == pytest.approx((20.0, 50000.0, 1e6, 340000.0, 660000.0, True), rel=REL)


def test_rows_are_summed_before_tiers(results):
    # 600,000 + 600,000 USDC: 1 % × 1,000,000 + 5 % × 200,000 = 20,000 (not 2 × 6,000)
    assert valuation(results, "H3", "USDC") == pytest.approx((1.2e6, 1.0, 1.2e6, 20000.0, 1.18e6, True), rel=REL)


def test_negative_balance_counts_in_full(results):
    assert valuation(results, "H4", "BTC") == (-2.0, 50000.0, -100000.0, 0.0, -100000.0, True)
    # ineligible and borrowed: still no haircut, counted in full
    assert valuation(results, "H6", "MEME") == pytest.approx((-500.0, 0.01, -5.0, 0.0, -5.0, False), rel=REL)


def test_asset_without_haircut_row_is_ineligible(results):
    # 1000 MEME × 0.01 = 10, haircut 100 % of a positive value
    assert valuation(results, "H5", "MEME") == pytest.approx((1000.0, 0.01, 10.0, 10.0, 0.0, False), rel=REL)
    assert valuation(results, "H9", "ETH") == (1.0, 2000.0, 2000.0, 2000.0, 0.0, False)
    assert valuation(results, "H10", "EUR") == (100.0, 1.25, 125.0, 125.0, 0.0, False)


def test_usd_without_haircut_row_is_eligible_at_zero(results):
    assert valuation(results, "H7", "USD") == (1000.0, 1.0, 1000.0, 0.0, 1000.0, True)


def test_zero_sum_keeps_its_row(results):
    assert valuation(results, "H8", "USDC") == (0.0, 1.0, 0.0, 0.0, 0.0, True)


def test_account_collateral_value(results):
    got = row(results, "account_margin", account_id="H11")
    # BTC 50000 − 5000; USDC 500 − 5; MEME 10 − 10; ETH −2000 − 0
    assert got["collateral_value_usd"] == pytest.approx(45000.0 + 495.0 + 0.0 - 2000.0, rel=REL)
    assert got["haircut_usd"] == pytest.approx(5000.0 + 5.0 + 10.0, rel=REL)
    assert got["equity"] == pytest.approx(43495.0, rel=REL) and got["status"] == "ok"


def test_usd_with_a_haircut_row_uses_it():
    results = margin(collateral=[("A", "USD", 1000.0)], haircuts=[("USD", 0.0, 0.02)])
    assert valuation(results, "A", "USD") == pytest.approx((1000.0, 1.0, 1000.0, 20.0, 980.0, True), rel=REL)
