"""Effective margin, equity, excess, margin ratio and status (SPEC §5.3, §6)."""

from __future__ import annotations

import polars as pl
import pytest

from books import AS_OF, margin, row
from transforms.account_health import account_health

REL = 1e-9


def health(**figures) -> dict:
    given = {"margin_mode": "isolated", "gross_im": 0.0, "net_im": 0.0, "portfolio_im": 0.0,
             "collateral_value_usd": 0.0, "position_value_usd": 0.0, "position_count": 1}
    given.update(figures)
    frame = pl.LazyFrame([given], schema_overrides={"margin_mode": pl.String, "position_count": pl.Int64})
    return account_health(frame, 0.75).collect().to_dicts()[0]


@pytest.mark.parametrize("mode, im", [("isolated", 300.0), ("cross", 200.0), ("portfolio", 100.0), (None, 300.0)])
def test_im_by_margin_mode(mode, im):
    got = health(margin_mode=mode, gross_im=300.0, net_im=200.0, portfolio_im=100.0, collateral_value_usd=1000.0)
    assert got["im"] == im and got["mm"] == im * 0.75
    assert got["netting_benefit"] == 300.0 - im


def test_unknown_mode_takes_the_maximum_of_three():
    got = health(margin_mode=None, gross_im=100.0, net_im=50.0, portfolio_im=400.0, collateral_value_usd=1000.0)
    assert got["im"] == 400.0 and got["netting_benefit"] == -300.0


def test_equity_excess_and_ratio():
    got = health(gross_im=400.0, collateral_value_usd=900.0, position_value_usd=100.0)
    # equity 900 + 100 = 1000; excess 1000 − 400 = 600; mm 300; ratio 300 / 1000
    assert (got["equity"], got["excess"], got["mm"], got["margin_ratio"]) == (1000.0, 600.0, 300.0, 0.3)
    assert got["status"] == "ok"


@pytest.mark.parametrize(
    "position_count, im, equity, status, ratio",
    [
        (0, 0.0, -1.0, "deficit", None),       # flat and owing
        (0, 0.0, 0.0, "ok", None),             # flat, nothing: ratio null as equity ≤ 0
        (0, 0.0, 5.0, "ok", 0.0),              # mm = 0 and equity > 0 → ratio 0
        (1, 0.0, 0.0, "liquidation", None),    # positions, equity ≤ 0
        (1, 0.0, 5.0, "ok", 0.0),
        (0, 200.0, 100.0, "liquidation", 1.5),  # netted flat but im > 0 (isolated): not the flat branch
        (1, 200.0, 149.0, "liquidation", 150.0 / 149.0),  # equity < mm = 150
        (1, 200.0, 150.0, "margin_call", 1.0),  # equity = mm: not below it
        (1, 200.0, 199.0, "margin_call", 150.0 / 199.0),
        (1, 200.0, 200.0, "ok", 0.75),          # equity = im
        (1, 200.0, -10.0, "liquidation", None),
    ],
)
def test_status(position_count, im, equity, status, ratio):
    got = health(position_count=position_count, gross_im=im, collateral_value_usd=equity)
    assert got["status"] == status
    assert got["margin_ratio"] == (None if ratio is None else pytest.approx(ratio, rel=REL))


def test_equity_counts_option_and_spot_marks_only():
    results = margin(
        ("E", "BTC", 2.0), ("E", "BTC-0328-50000-C", 1.0), ("E", "BTC-PERP", 1.0), ("E", "BTC-0328", 1.0),
        ("N", "BTC-0314-45000-C", 1.0),
        collateral=[("E", "USDC", 1000.0)],
        accounts=[("E", None, "isolated"), ("N", None, "portfolio", "LEI-N")],
        instruments={"BTC-0314-45000-C": ("option", "BTC", "USD", 1.0, AS_OF, 45000.0, "C")},
        prices={"BTC-0314-45000-C": (5200.0, 0.5)},
    )
    got = row(results, "account_margin", account_id="E")
    # spot 2 × 50000 + call 1 × 2000 = 102000; perpetual and future marks excluded
    assert got["position_value_usd"] == 102000.0
    assert got["equity"] == pytest.approx(990.0 + 102000.0, rel=REL)  # USDC 1000 − 1 %
    # isolated: im = gross = 2 × 5000 + 0 + 5010 + 5020 = 20030
    assert got["im"] == pytest.approx(20030.0, rel=REL) and got["position_count"] == 4
    assert got["excess"] == pytest.approx(102990.0 - 20030.0, rel=REL)
    long_option = row(results, "account_margin", account_id="N")
    # long call expiring today: gross 0, portfolio = scan risk 5000 → netting_benefit = 0 − 5000
    assert (long_option["gross_im"], long_option["portfolio_im"], long_option["netting_benefit"]) == (
        0.0, 5000.0, -5000.0)
    assert long_option["lei"] == "LEI-N" and long_option["equity"] == 5200.0
    assert long_option["status"] == "ok" and long_option["binding_status"] == "ok"
