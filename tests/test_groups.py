"""Margin groups margined as one book (SPEC §7)."""

from __future__ import annotations

import pytest

from books import margin, row

REL = 1e-9


@pytest.fixture(scope="module")
def results():
    return margin(
        ("A", "BTC-PERP", 1.0),
        ("B", "BTC-PERP", -0.5),
        ("D", "BTC-PERP", 1.0),
        ("E", "BTC-PERP", 1.0),
        ("X", "BTC-PERP", 1.0), ("X", "BTC-PERP", -1.0),
        collateral=[("A", "BTC", 1.5), ("B", "BTC", 1.5), ("C", "BTC", -0.1), ("X", "USDC", -100.0),
                    ("F", "USD", -1.0)],
        accounts=[
            ("A", "G", "portfolio"), ("B", "G", "isolated"), ("C", "G", "cross"),
            ("D", "G", "hedge"),          # quarantined row: not a member
            ("X", "H", "portfolio"),
            ("F", None, "cross"),
        ],
    )


def test_group_figures(results):
    got = row(results, "group_margin", margin_group="G")
    # members A, B, C (D's row is quarantined; E is not in accounts)
    assert got["member_count"] == 3
    # book: BTC-PERP 1 − 0.5 = 0.5 → SR = 0.5 × 5010 = 2505 (scenario 5), no calendar, no credit
    assert got["group_im"] == pytest.approx(2505.0, rel=REL)
    # member im: A portfolio 5010; B isolated 0.5 × 5010 = 2505; C cross 0
    assert got["sum_member_im"] == pytest.approx(7515.0, rel=REL)
    assert got["aggregation_benefit"] == pytest.approx(5010.0, rel=REL)
    # collateral summed per asset first: BTC 1.5 + 1.5 − 0.1 = 2.9 → 145,000;
    # haircut 10 % × 100,000 + 20 % × 45,000 = 19,000 (member by member it would be 7,500 + 7,500 + 0)
    assert got["group_equity"] == pytest.approx(126000.0, rel=REL)  # perpetual marks add nothing
    assert got["group_excess"] == pytest.approx(126000.0 - 2505.0, rel=REL)
    assert got["status"] == "ok"


def test_binding_status_is_the_group_status(results):
    member = row(results, "account_margin", account_id="C")
    # C alone: no positions, im 0, equity −5000 → deficit; its group is ok and binds
    assert (member["status"], member["binding_status"], member["margin_group"]) == ("deficit", "ok", "G")
    loner = row(results, "account_margin", account_id="F")
    assert (loner["status"], loner["binding_status"]) == ("deficit", "deficit")
    outsider = row(results, "account_margin", account_id="D")  # quarantined accounts row: no group
    assert outsider["margin_group"] is None and outsider["binding_status"] == outsider["status"]


def test_flat_group_in_deficit(results):
    got = row(results, "group_margin", margin_group="H")
    # the book nets to zero (position_count 0, group_im 0) and owes 100 USDC → deficit
    assert (got["member_count"], got["group_im"], got["group_equity"], got["status"]) == (1, 0.0, -100.0, "deficit")
    assert got["sum_member_im"] == 0.0 and got["aggregation_benefit"] == 0.0
    assert row(results, "account_margin", account_id="X")["binding_status"] == "deficit"


def test_group_book_uses_portfolio_mode_with_calendar_and_credits():
    results = margin(
        ("A", "BTC", 1.0), ("B", "BTC-PERP", -1.0), ("B", "ETH-PERP", 10.0),
        accounts=[("A", "G", "isolated"), ("B", "G", "isolated")],
    )
    got = row(results, "group_margin", margin_group="G")
    # BTC: spot +1 vs perpetual −1 → SR 10, calendar 1000; Δ_BTC = 0 → w_BTC = 0, no BTC credit
    # ETH: +10 → SR 10 × 2001 × 0.2 = 4002; Δ_BTC = 0 so d_a·d_b = 0: no credit either
    assert got["group_im"] == pytest.approx(1010.0 + 4002.0, rel=REL)
    # isolated members: A 5000; B 5010 + 10 × 2001 × 0.2 = 9012
    assert got["sum_member_im"] == pytest.approx(14012.0, rel=REL)
    assert got["aggregation_benefit"] == pytest.approx(14012.0 - 5012.0, rel=REL)
    # spot mark counts in group equity: 50000; no collateral
    assert got["group_equity"] == 50000.0 and got["status"] == "ok"
