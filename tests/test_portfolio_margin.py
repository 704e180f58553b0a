"""Scenario portfolio margin (SPEC §5.2): unit P&L, scan risk and worst scenario,
calendar buckets, short option minimum, inter-underlying credits, R_u.

Market and scenarios: tests/books.py.  S_BTC = 50000 (BTC-PERP marks 50100),
S_ETH = 2000 (ETH-PERP 2001); BTC price_scan 0.1, vol_scan 0.1, spread_rate 0.02,
short_option_min_rate 0.01; ETH price_scan 0.2, spread 0.03, min rate 0.02.
Scenario price moves (id: move): 1,2: 0; 3,4: +1; 5,6: −1 (cover 1); 7: +2, 8: −2
(cover 0.35); vol moves +1 on odd ids 1–5, −1 on even ids 2–6, 0 on 7–8.
"""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from books import AS_OF, EXP_0328, margin, row
from transforms import portfolio_margin

REL = 1e-9
VOL_FLOOR = 0.45

EXTRA = dict(
    instruments={
        "BTC-0328-50000-C-V30": ("option", "BTC", "USD", 1.0, EXP_0328, 50000.0, "C"),
        "BTC-0328-52000-C": ("option", "BTC", "USD", 1.0, EXP_0328, 52000.0, "C"),
        "BTC-0314-45000-C": ("option", "BTC", "USD", 1.0, AS_OF, 45000.0, "C"),
        "BTC-0314-40000-P": ("option", "BTC", "USD", 1.0, AS_OF, 40000.0, "P"),
    },
    prices={
        "BTC-0328-50000-C-V30": (1200.0, 0.3), "BTC-0328-52000-C": (1200.0, 0.5),
        "BTC-0314-45000-C": (5200.0, 0.5), "BTC-0314-40000-P": (1.0, 0.5),
    },
)


@pytest.fixture(scope="module")
def results():
    return margin(
        ("P1", "BTC-PERP", 1.0),
        ("P2", "BTC-0328-50000-C", -1.0),
        ("P3", "BTC-0328-50000-C-V30", -1.0),
        ("T0", "BTC-0314-45000-C", 1.0),
        ("C1", "BTC", 1.0), ("C1", "BTC-PERP", -1.0),
        ("C2", "BTC-0328", 2.0), ("C2", "BTC-0328-50000-C", -1.0), ("C2", "BTC-0425", -10.0),
        ("C3", "BTC-0328-50000-C", -2.0), ("C3", "BTC-0328-50000-P", -3.0), ("C3", "BTC-0328-40000-P", -1.0),
        ("C3", "BTC-0328-52000-C", 5.0),
        ("K1", "BTC-PERP", 1.0), ("K1", "ETH-PERP", -20.0),
        ("K3", "BTC-PERP", 1.0), ("K3", "ETH-PERP", 20.0),
        ("K4", "BTC-PERP", 0.1), ("K4", "BTC-0314-40000-P", -1.0), ("K4", "ETH-PERP", -2.0),
        ("Z", "BTC-PERP", 1.0), ("Z", "BTC-PERP", -1.0),
        vol_floor=VOL_FLOOR,
        **EXTRA,
    )


def risk(results, account, underlying="BTC"):
    return row(results, "underlying_risk", account_id=account, underlying=underlying)


def test_linear_scenario_losses_and_worst_scenario_lowest_id_on_ties(results):
    got = risk(results, "P1")
    # pnl_unit_k = 1 × 50100 × move_k × 0.1 × 1 = 5010 × move_k (the instrument's mark, not the index)
    # loss_k = −cover_k × 1 × pnl_unit_k; scenario 7: −0.35 × 10020 = −3507
    assert got["scenario_losses"] == pytest.approx([0.0, 0.0, -5010.0, -5010.0, 5010.0, 5010.0, -3507.0, 3507.0],
                                                   rel=REL)
    assert got["scan_risk"] == pytest.approx(5010.0, rel=REL)
    assert got["worst_scenario"] == 5  # 5 and 6 tie at 5010: the lowest id
    assert (got["calendar_charge"], got["short_option_min"], got["inter_credit"]) == (0.0, 0.0, 0.0)
    assert got["risk"] == pytest.approx(5010.0, rel=REL)


def test_option_scenario_losses_with_vol_floor(results):
    got = risk(results, "P2")
    # short 1 call K = 50000, σ = 0.5, T = 14/365; B(S, σ) = 1952.514053009836
    # loss_k = cover_k × (B(50000(1 + 0.1 move_k), max(0.5 + 0.1 vol_move_k, 0.45)) − B(50000, 0.5))
    # scenario 2: vol 0.4 is floored to 0.45: B(50000, 0.45) − B(50000, 0.5) = −195.11803932013208
    # scenario 3: B(55000, 0.6) − B(50000, 0.5) = 3773.1115264255423 (the worst)
    expect = [390.09110715224233, -195.11803932013208, 3773.1115264255423, 3376.213784247302,
              -1389.8399613726651, -1715.9607541129908, 2839.4973877498815, -677.4142018964582]
    assert got["scenario_losses"] == pytest.approx(expect, rel=REL)
    assert got["scan_risk"] == pytest.approx(3773.1115264255423, rel=REL) and got["worst_scenario"] == 3
    # short_calls = 1: som = 1 × 50000 × 0.01 = 500 < scan risk
    assert got["short_option_min"] == pytest.approx(500.0, rel=REL)


def test_option_base_value_uses_unfloored_vol(results):
    got = risk(results, "P3")
    # σ = 0.3 < floor: base B(50000, 0.3) = 1171.807968787587 is not floored; every shocked vol is
    # max(0.3 ± 0.1 or 0.3, 0.45) = 0.45, so scenarios 1 and 2 tie: B(50000, 0.45) − B(50000, 0.3)
    expect = [585.588044902117, 585.588044902117, 4156.919868469551, 4156.919868469551,
              -935.2546698907418, -935.2546698907418, 3101.766558679692, -407.631790608124]
    assert got["scenario_losses"] == pytest.approx(expect, rel=REL)
    assert got["worst_scenario"] == 3


def test_option_pnl_is_a_model_difference_not_the_mark(results):
    got = risk(results, "T0")
    # long 1 call K = 45000 expiring on D (T = 0, intrinsic): B(S) = max(S − 45000, 0), B(50000) = 5000
    # (the mark 5200 plays no part). pnl: move 0 → 0; +1 → 10000 − 5000; −1 → 0 − 5000; +2 → 15000 − 5000; −2 → −5000
    # loss = −cover × pnl
    assert got["scenario_losses"] == pytest.approx([0.0, 0.0, -5000.0, -5000.0, 5000.0, 5000.0, -3500.0, 1750.0],
                                                   rel=REL)
    assert got["scan_risk"] == 5000.0 and got["worst_scenario"] == 5
    # delta 1 at expiry (F > K), alone in its bucket: no calendar charge
    assert got["net_delta_units"] == 1.0 and got["calendar_charge"] == 0.0


def test_spot_has_its_own_calendar_bucket(results):
    got = risk(results, "C1")
    # buckets: spot +1, perpetual −1 → long 1, short 1: min(1, 1) × 50000 × 1 × 0.02 = 1000
    assert got["calendar_charge"] == pytest.approx(1000.0, rel=REL)
    # losses: −cover × (5000 − 5010) × move = 10 × cover × move → SR 10 at scenario 3
    assert got["scan_risk"] == pytest.approx(10.0, rel=REL) and got["worst_scenario"] == 3
    assert got["risk"] == pytest.approx(1010.0, rel=REL)  # 10 + 1000 − 0


def test_future_and_option_of_one_expiry_share_a_bucket(results):
    got = risk(results, "C2")
    # bucket 2025-03-28: future +2, short call delta −N(d1) = −0.5195251405300984 → +1.4804748594699015
    # bucket 2025-04-25: −10 × 0.1 = −1
    # long 1.48…, short 1 → 1 × 50000 × 0.02 = 1000 (separate buckets would give min(2, 1.5195…) × 1000 = 1519.5…)
    assert got["calendar_charge"] == pytest.approx(1000.0, rel=REL)
    assert got["net_delta_units"] == pytest.approx(2.0 - 0.5195251405300984 - 1.0, rel=REL)
    assert got["short_option_min"] == pytest.approx(500.0, rel=REL)  # one short call × 50000 × 0.01


def test_short_option_minimum_counts_a_straddle_once(results):
    got = risk(results, "C3")
    # short calls: 2 (the long 52000 calls do not offset); short puts: 3 + 1 = 4
    # som = max(2, 4) × 50000 × 1 × 0.01 = 2000
    assert got["short_option_min"] == pytest.approx(2000.0, rel=REL)


def test_perpetuals_share_one_bucket():
    results = margin(
        ("A", "BTC-PERP", 1.0), ("A", "BTC-PERP2", -1.0),
        instruments={"BTC-PERP2": ("perpetual", "BTC", "USD", 1.0, None, None, None)},
        prices={"BTC-PERP2": (50100.0, None)},
    )
    got = risk(results, "A")
    # both in the perpetual bucket: 1 − 1 = 0 → no calendar charge; identical marks → no scan risk
    assert got["calendar_charge"] == 0.0 and got["scan_risk"] == 0.0 and got["worst_scenario"] is None


def test_inter_underlying_credit(results):
    btc, eth = risk(results, "K1", "BTC"), risk(results, "K1", "ETH")
    # SR_BTC = 5010 (as P1), Δ_BTC = 1 → w_BTC = min(5010 / 1, 0.1 × 50000 × 1) = 5000 (cap binds)
    # ETH-PERP −20: loss = cover × 20 × 2001 × 0.2 × move → SR_ETH = 8004 (scenario 3), Δ_ETH = −20
    # w_ETH = min(8004 / 20, 0.2 × 2000) = min(400.2, 400) = 400
    # offset 1:20, rate 0.5: n = min(1 / 1, 20 / 20) = 1
    # credit_BTC = 0.5 × 1 × 1 × 5000 = 2500; credit_ETH = 0.5 × 1 × 20 × 400 = 4000
    assert eth["scan_risk"] == pytest.approx(8004.0, rel=REL) and eth["worst_scenario"] == 3
    assert btc["inter_credit"] == pytest.approx(2500.0, rel=REL)
    assert eth["inter_credit"] == pytest.approx(4000.0, rel=REL)
    assert btc["risk"] == pytest.approx(2510.0, rel=REL)  # 5010 + 0 − 2500
    assert eth["risk"] == pytest.approx(4004.0, rel=REL)  # 8004 − 4000
    account = row(results, "account_margin", account_id="K1")
    assert account["portfolio_im"] == pytest.approx(6514.0, rel=REL)
    assert account["inter_credit"] == pytest.approx(6500.0, rel=REL)


def test_no_credit_for_same_sign_deltas(results):
    assert risk(results, "K3", "BTC")["inter_credit"] == 0.0 and risk(results, "K3", "ETH")["inter_credit"] == 0.0


def test_short_option_minimum_applies_after_credit(results):
    btc, eth = risk(results, "K4", "BTC"), risk(results, "K4", "ETH")
    # BTC: perp 0.1 → SR = 501; the put expiring today (K = 40000 < every shocked S ≥ 40000) is worthless
    # in every scenario and has delta 0 → Δ_BTC = 0.1, w_BTC = min(5010, 5000) = 5000
    # ETH: −2 → SR = 800.4, w_ETH = min(400.2, 400) = 400; n = min(0.1 / 1, 2 / 20) = 0.1
    # credit_BTC = 0.5 × 0.1 × 5000 = 250; credit_ETH = 0.5 × 0.1 × 20 × 400 = 400
    # som_BTC = 1 × 50000 × 0.01 = 500; R_BTC = max(501 + 0 − 250, 500) = 500; credit still reported 250
    assert btc["scan_risk"] == pytest.approx(501.0, rel=REL)
    assert btc["inter_credit"] == pytest.approx(250.0, rel=REL)
    assert btc["short_option_min"] == pytest.approx(500.0, rel=REL)
    assert btc["risk"] == pytest.approx(500.0, rel=REL)
    assert eth["inter_credit"] == pytest.approx(400.0, rel=REL) and eth["risk"] == pytest.approx(400.4, rel=REL)
    account = row(results, "account_margin", account_id="K4")
    assert account["portfolio_im"] == pytest.approx(900.4, rel=REL)
    assert account["inter_credit"] == pytest.approx(650.0, rel=REL)


def test_flat_underlying_kept_with_zeros(results):
    got = risk(results, "Z")
    assert got["scenario_losses"] == [0.0] * 8
    assert (got["scan_risk"], got["worst_scenario"], got["risk"], got["net_delta_units"]) == (0.0, None, 0.0, 0.0)


def test_offsets_in_ascending_priority_with_remaining_deltas():
    results = margin(
        ("K2", "BTC-PERP", 1.0), ("K2", "ETH-PERP", -20.0), ("K2", "SOL-PERP", -250.0),
        instruments={"SOL": ("spot", "SOL", "USD", 1.0, None, None, None),
                     "SOL-PERP": ("perpetual", "SOL", "USD", 1.0, None, None, None)},
        prices={"SOL": (100.0, None), "SOL-PERP": (100.0, None)},
        risk_params=[("BTC", 0.1, 0.1, 0.1, 0.02, 0.01), ("ETH", 0.2, 0.1, 0.2, 0.03, 0.02),
                     ("SOL", 0.2, 0.1, 0.2, 0.05, 0.05)],
        # file order is not priority order
        offsets=[(2, "BTC", "ETH", 1.0, 20.0, 0.5), (1, "BTC", "SOL", 1.0, 500.0, 0.4)],
    )
    btc, eth, sol = (risk(results, "K2", u) for u in ("BTC", "ETH", "SOL"))
    # SR: BTC 5010 (w 5000), ETH 8004 (w 400), SOL: 250 × 100 × 0.2 = 5000 (w = min(5000/250, 0.2 × 100) = 20)
    # priority 1, BTC:SOL 1:500: n = min(1, 250/500) = 0.5; credit_BTC = 0.4 × 0.5 × 5000 = 1000,
    #   credit_SOL = 0.4 × 0.5 × 500 × 20 = 2000; d_BTC = 0.5, d_SOL = 0
    # priority 2, BTC:ETH 1:20: n = min(0.5, 20/20) = 0.5; credit_BTC += 0.5 × 0.5 × 5000 = 1250 → 2250,
    #   credit_ETH = 0.5 × 0.5 × 20 × 400 = 2000; d_BTC = 0, d_ETH = −10
    assert btc["inter_credit"] == pytest.approx(2250.0, rel=REL)
    assert eth["inter_credit"] == pytest.approx(2000.0, rel=REL)
    assert sol["inter_credit"] == pytest.approx(2000.0, rel=REL)
    assert (btc["risk"], eth["risk"], sol["risk"]) == pytest.approx((2760.0, 6004.0, 3000.0), rel=REL)
    assert row(results, "account_margin", account_id="K2")["portfolio_im"] == pytest.approx(11764.0, rel=REL)


def test_worst_scenario_loss_given_expect():
    """Each position's share of its book × underlying's worst-scenario loss: net_qty × loss_<k*>."""
    # instrument codes (as the run encodes them): 0 BTC-F, 1 BTC-PERP, 2 ETH-PERP, 3 SOL-PERP (held by no one)
    positions = pl.LazyFrame({
        "account_id": ["A", "A", "A", "B", "B"],
        "instrument_id": pl.Series([0, 1, 2, 1, 2], dtype=pl.UInt32),
        "underlying": ["BTC", "BTC", "ETH", "BTC", "ETH"],
        "net_qty": [2.0, -1.0, 3.0, 0.5, 0.0],
    })
    scan = pl.LazyFrame({
        "account_id": ["A", "A", "B", "B"], "underlying": ["BTC", "ETH", "BTC", "ETH"],
        "worst_scenario": pl.Series([7, 3, 7, None], dtype=pl.Int32),
    })
    # unit losses −cover_k × pnl_unit_k of one contract, scenarios 3 and 7
    unit_losses = pl.LazyFrame({
        "instrument_id": pl.Series([2, 0, 1, 3], dtype=pl.UInt32),  # any row order
        "loss_3": [20.0, -100.0, -90.0, 5.0], "loss_7": [-40.0, 350.0, 300.0, 9.0],
    })
    got = portfolio_margin.worst_scenario_loss(positions, scan, unit_losses, [3, 7], "account_id").collect()
    expect = positions.collect().with_columns(pl.Series("worst_scenario_loss", [
        700.0,   # A BTC, k* = 7: 2 × 350
        -300.0,  # A BTC: −1 × 300 (the hedge gains; A's BTC scan risk = 700 − 300 = 400)
        60.0,    # A ETH, k* = 3: 3 × 20
        150.0,   # B BTC, k* = 7: 0.5 × 300
        0.0,     # B ETH: no worst scenario (SR 0) → 0
    ]))
    assert_frame_equal(got, expect)  # row order of the positions kept


def test_worst_scenario_losses_sum_to_scan_risk(results):
    positions = results.tables["position_margin"]
    for account in ("C1", "C2", "C3", "K4"):
        got = risk(results, account)
        shares = positions.filter((pl.col("account_id") == account) & (pl.col("underlying") == "BTC"))
        assert shares["worst_scenario_loss"].sum() == pytest.approx(got["scan_risk"], rel=1e-9)
    # C1: long 1 BTC spot, short 1 BTC-PERP; k* = 3 (cover 1, move +1 × scan 0.1):
    # spot −1 × 1 × 50000 × 0.1 = −5000, perpetual −(−1) × 50100 × 0.1 = +5010 → SR 10
    c1 = {r["instrument_id"]: r["worst_scenario_loss"] for r in positions.filter(pl.col("account_id") == "C1").to_dicts()}
    assert c1 == pytest.approx({"BTC": -5000.0, "BTC-PERP": 5010.0}, rel=1e-9)
    flat = positions.filter(pl.col("account_id") == "Z")
    assert flat["worst_scenario_loss"].to_list() == [0.0]  # net flat: SR 0


def test_calendar_spread_charge_given_expect():
    """calendar_u = min(Σ max(bucket_delta, 0), Σ max(−bucket_delta, 0)) × S_u × fx_u × spread_rate_u."""
    buckets = pl.DataFrame({
        "account_id": ["A", "A", "A", "B", "B", "C"],
        "underlying": ["BTC", "BTC", "BTC", "ETH", "ETH", "BTC"],
        "bucket": ["spot", "perpetual", "2025-03-28", "2025-03-28", "2025-04-25", "perpetual"],
        "delta_units": [1.5, -0.5, -2.0, 4.0, 10.0, -3.0],
    })
    per_underlying = (
        buckets.group_by("account_id", "underlying", maintain_order=True)
        .agg(term.sum().alias(name) for name, term in portfolio_margin.calendar_terms(pl.col("delta_units")).items())
        .with_columns(
            index_price=pl.Series([50000.0, 2000.0, 50000.0]), index_fx=pl.Series([1.0, 0.5, 1.0]),
            spread_rate=pl.Series([0.02, 0.03, 0.02]),
        )
    )
    got = per_underlying.select("account_id", "underlying", "calendar_long", "calendar_short",
                                portfolio_margin.calendar_spread_charge().alias("calendar_charge"))
    expect = pl.DataFrame({
        "account_id": ["A", "B", "C"], "underlying": ["BTC", "ETH", "BTC"],
        "calendar_long": [1.5, 14.0, 0.0], "calendar_short": [2.5, 0.0, 3.0],
        "calendar_charge": [
            1500.0,  # A: long 1.5 (spot), short 0.5 + 2 = 2.5 → min 1.5 × 50000 × 1 × 0.02
            0.0,     # B: both buckets long → min(14, 0) = 0
            0.0,     # C: one bucket only, short 3 → min(0, 3) = 0
        ],
    })
    assert_frame_equal(got, expect)


def test_short_option_minimum_given_expect():
    """som_u = max(short_calls_u, short_puts_u) × S_u × fx_u × short_option_min_rate_u,
    short_calls = Σ |net_qty| × multiplier over calls with net_qty < 0 (puts likewise)."""
    positions = pl.DataFrame({
        "account_id": ["A", "A", "A", "A", "A", "B", "B"],
        "underlying": ["BTC"] * 5 + ["ETH"] * 2,
        "kind": ["option", "option", "option", "option", "future", "option", "perpetual"],
        "option_type": ["C", "C", "P", "P", None, "P", None],
        "multiplier": [1.0, 1.0, 0.1, 1.0, 1.0, 10.0, 1.0],
        "net_qty": [-2.0, 5.0, -30.0, -0.5, -7.0, 3.0, -4.0],
    })
    terms = positions.select(
        "account_id", "underlying", **portfolio_margin.short_option_terms()
    ).group_by("account_id", "underlying", maintain_order=True).agg(pl.all().sum())
    got = terms.with_columns(
        index_price=pl.Series([50000.0, 2000.0]), index_fx=pl.Series([1.0, 0.5]),
        short_option_min_rate=pl.Series([0.01, 0.02]),
    ).select("account_id", "underlying", "short_calls", "short_puts",
             portfolio_margin.short_option_minimum().alias("short_option_min"))
    expect = pl.DataFrame({
        "account_id": ["A", "B"], "underlying": ["BTC", "ETH"],
        "short_calls": [2.0, 0.0],  # A: the short call 2 (the long call and the short future do not count)
        "short_puts": [3.5, 0.0],   # A: 30 × 0.1 + 0.5 × 1; B: its put is long, its perpetual no option
        "short_option_min": [
            1750.0,  # A: max(2, 3.5) × 50000 × 1 × 0.01 (a short straddle counts once)
            0.0,     # B: no short option → 0 × 2000 × 0.5 × 0.02
        ],
    })
    assert_frame_equal(got, expect)
