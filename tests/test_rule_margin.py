"""Rule-based margin: gross_im per input row, net_im per netted position (SPEC §5.1).

Market (tests/books.py): S_BTC = 50000, S_ETH = 2000, BTC im_rate 0.1 and
short_option_min_rate 0.01, ETH im_rate 0.2; EUR fx 1.25.
"""

from __future__ import annotations

import pytest

from books import EXP_0328, margin, row

REL = 1e-9

EXTRA = dict(
    instruments={
        "BTC-0328-52000-C": ("option", "BTC", "USD", 1.0, EXP_0328, 52000.0, "C"),
        "BTC-0328-48000-P-EUR": ("option", "BTC", "EUR", 2.0, EXP_0328, 48000.0, "P"),
        "ETH-PERP-EUR": ("perpetual", "ETH", "EUR", 1.0, None, None, None),
    },
    prices={"BTC-0328-52000-C": (1200.0, 0.5), "BTC-0328-48000-P-EUR": (900.0, 0.5), "ETH-PERP-EUR": (1600.0, None)},
)


@pytest.fixture(scope="module")
def results():
    return margin(
        # L: linear
        ("L", "BTC-PERP", 2.0, "a"), ("L", "BTC-PERP", -0.5, "b"),
        ("L", "BTC-0425", -30.0),
        ("L", "ETH-PERP-EUR", -3.0),
        # O: options
        ("O", "BTC-0328-50000-C", -2.0, "a"), ("O", "BTC-0328-50000-C", 0.5, "b"),
        ("O", "BTC-0328-40000-P", -4.0),
        ("O", "BTC-0328-50000-P", 3.0),
        ("O", "BTC-0328-52000-C", -1.0),
        ("O", "BTC-0328-48000-P-EUR", -2.0),
        # M: an option long on net but short on one row
        ("M", "BTC-0328-52000-C", 3.0, "a"), ("M", "BTC-0328-52000-C", -1.0, "b"),
        **EXTRA,
    )


def position(results, account, instrument):
    got = row(results, "position_margin", account_id=account, instrument_id=instrument)
    return got["gross_im"], got["net_im"]


def test_linear_margin(results):
    # BTC-PERP: unit = 1 × 50100 × 1.0 × 0.1 = 5010; gross (2 + 0.5) × 5010; net 1.5 × 5010
    assert position(results, "L", "BTC-PERP") == pytest.approx((12525.0, 7515.0), rel=REL)
    # BTC-0425: unit = 0.1 × 50500 × 0.1 = 505 (the instrument's own price); 30 × 505
    assert position(results, "L", "BTC-0425") == pytest.approx((15150.0, 15150.0), rel=REL)
    # ETH-PERP-EUR: 3 × 1 × 1600 × 1.25 (fx) × 0.2 = 1200
    assert position(results, "L", "ETH-PERP-EUR") == pytest.approx((1200.0, 1200.0), rel=REL)


def test_short_option_margin(results):
    # at the money call: otm = max(50000 − 50000, 0) = 0; max(0.1×50000 − 0, 0.01×50000) = 5000 per unit
    # gross: only the short row −2 → 10000 (the long row costs 0); net: |−1.5| × 5000 = 7500
    assert position(results, "O", "BTC-0328-50000-C") == pytest.approx((10000.0, 7500.0), rel=REL)
    # 40000 put: otm = max(50000 − 40000, 0) = 10000; max(5000 − 10000, 500) = 500 (minimum binds); × 4
    assert position(results, "O", "BTC-0328-40000-P") == pytest.approx((2000.0, 2000.0), rel=REL)
    # long option: 0
    assert position(results, "O", "BTC-0328-50000-P") == (0.0, 0.0)
    # 52000 call: otm = 2000; max(5000 − 2000, 500) = 3000
    assert position(results, "O", "BTC-0328-52000-C") == pytest.approx((3000.0, 3000.0), rel=REL)
    # EUR put, multiplier 2: otm = max(50000 − 48000, 0) = 2000; 2 × 2 × 1.25 × max(5000 − 2000, 500) = 15000
    assert position(results, "O", "BTC-0328-48000-P-EUR") == pytest.approx((15000.0, 15000.0), rel=REL)


def test_gross_counts_each_short_row_even_when_net_long(results):
    # rows +3 (0) and −1 (3000); net +2 is long → net_im 0
    assert position(results, "M", "BTC-0328-52000-C") == pytest.approx((3000.0, 0.0), rel=REL)


def test_account_totals(results):
    accounts = {a: row(results, "account_margin", account_id=a) for a in ("L", "O", "M")}
    # L: gross 12525 + 15150 + 1200; net 7515 + 15150 + 1200
    assert (accounts["L"]["gross_im"], accounts["L"]["net_im"]) == pytest.approx((28875.0, 23865.0), rel=REL)
    # O: gross 10000 + 2000 + 0 + 3000 + 15000; net 7500 + 2000 + 0 + 3000 + 15000
    assert (accounts["O"]["gross_im"], accounts["O"]["net_im"]) == pytest.approx((30000.0, 27500.0), rel=REL)
    assert (accounts["M"]["gross_im"], accounts["M"]["net_im"]) == pytest.approx((3000.0, 0.0), rel=REL)
