"""Stress tests and the liquidation ladder (SPEC §11): each formula given / expect, then
hand-computed books end to end (an option, a BTC balance and a debt; a margin group).

Default market (tests/books.py): BTC index 50,000, BTC-PERP 50,100, BTC-0328 50,200,
BTC-0328-50000-C (vol 0.5, T = 14/365); BTC haircut 10 % to 100,000, 20 % to 500,000,
50 % above; USD no row (0 %), MEME no row (ineligible).
"""

from __future__ import annotations

import math

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from books import AS_OF, book, margin, row
from flows.loading import StructuralError, check_stress_scenarios
from transforms import stress
from transforms.pipeline import compute_margin

REL = 1e-9
T_0328 = 14 / 365


def black76(forward: float, strike: float, sigma: float, years: float, option_type: str) -> float:
    """An independent Black-76 (zero rates) with math.erf, the oracle for the option P&L."""
    n = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    d1 = (math.log(forward / strike) + 0.5 * sigma * sigma * years) / (sigma * math.sqrt(years))
    d2 = d1 - sigma * math.sqrt(years)
    if option_type == "C":
        return forward * n(d1) - strike * n(d2)
    return strike * n(-d2) - forward * n(-d1)


# ---------------------------------------------------------------- formulas, given / expect

def stress_table(rows) -> pl.DataFrame:
    return pl.DataFrame(
        [tuple(r) + (None,) * (5 - len(r)) for r in rows], schema=stress.STRESS_SCENARIO_COLUMNS, orient="row"
    ).cast({"stress_id": pl.String, "underlying": pl.String, "price_move": pl.Float64, "vol_move": pl.Float64,
            "description": pl.String})


def test_ladder_rungs_are_single_star_rows_without_vol_move():
    given = stress_table([
        ("ladder_down_10", "*", -0.1, 0.0),
        ("ladder_up_10", "*", 0.1, 0.0),
        ("ladder_vol", "*", -0.1, 0.1),       # a vol move: not a rung
        ("ladder_btc", "BTC", -0.1, 0.0),     # not every underlying: not a rung
        ("ladder_two", "*", -0.1, 0.0), ("ladder_two", "ETH", -0.2, 0.0),  # two rows: not a rung
        ("crash", "*", -0.3, 0.0),            # not named ladder…: not a rung
    ])
    expect = pl.DataFrame({"stress_id": ["ladder_down_10", "ladder_up_10"], "price_move": [-0.1, 0.1]})
    assert_frame_equal(stress.ladder_rungs(given), expect)


def test_stress_moves_own_row_then_star_then_no_move():
    given = stress_table([("crash", "BTC", -0.3, 0.3), ("crash", "*", -0.5, 0.2), ("btc_only", "BTC", -0.25, 0.15)])
    got = stress.stress_moves(given, pl.LazyFrame({"underlying": ["BTC", "ETH"]})).collect().sort("stress_id", "underlying")
    expect = pl.DataFrame({
        "stress_id": ["btc_only", "btc_only", "crash", "crash"],
        "underlying": ["BTC", "ETH", "BTC", "ETH"],
        "price_move": [-0.25, 0.0, -0.3, -0.5],  # ETH in btc_only: no row, no '*': unmoved
        "vol_move": [0.15, 0.0, 0.3, 0.2],
    })
    assert_frame_equal(got, expect)


def test_stress_unit_pnl_linear_and_option_full_revaluation():
    instruments = pl.LazyFrame({
        "instrument_id": [0, 1], "underlying": ["BTC", "BTC"], "kind": ["perpetual", "option"],
        "multiplier": [1.0, 2.0], "price": [50_100.0, 2_000.0], "fx": [1.0, 1.0], "index_price": [50_000.0] * 2,
        "implied_vol": [None, 0.5], "strike": [None, 50_000.0], "years": [0.0, T_0328], "option_type": [None, "C"],
    })
    moves = pl.LazyFrame({"stress_id": ["down"], "underlying": ["BTC"], "price_move": [-0.2], "vol_move": [0.1]})
    got = stress.stress_unit_pnl(instruments, moves, vol_floor=0.01).collect().sort("instrument_id")
    # perpetual: 1 × 50,100 × −0.2 × 1 = −10,020 (the mark, not the index, and no scan range)
    # option: 2 × 1 × (B(40,000, 0.6) − B(50,000, 0.5))
    option = 2.0 * (black76(40_000.0, 50_000.0, 0.6, T_0328, "C") - black76(50_000.0, 50_000.0, 0.5, T_0328, "C"))
    assert got["pnl_unit"].to_list() == pytest.approx([-10_020.0, option], rel=REL)


def test_stressed_collateral_moves_underlyings_and_haircuts_again():
    haircuts = pl.LazyFrame({"asset": ["BTC"] * 3, "tier_start_usd": [0.0, 100_000.0, 500_000.0],
                             "haircut": [0.1, 0.2, 0.5]})
    valuation = pl.LazyFrame({
        "account_id": ["A", "A", "B", "C"], "asset": ["BTC", "USD", "BTC", "MEME"],
        "value_usd": [150_000.0, -60_000.0, -50_000.0, 1_000.0],
        "value_after_haircut_usd": [130_000.0, -60_000.0, -50_000.0, 0.0],
    })
    asset_moves = pl.LazyFrame({"asset": ["BTC", "MEME"], "move|0": [-0.2, -0.2], "move|1": [0.1, 0.1]})
    got = stress.stressed_collateral(valuation, asset_moves, haircuts, 2, "account_id").collect().sort("account_id")
    expect = pl.DataFrame({
        "account_id": ["A", "B", "C"], "asset": ["BTC", "BTC", "MEME"],
        # A: 150,000 → 120,000: haircut 10,000 + 4,000 → 106,000 − 130,000 = −24,000;
        #    → 165,000: 10,000 + 13,000 → 142,000 − 130,000 = +12,000.  USD does not move (no row).
        # B (a BTC debt): −50,000 → −40,000 (no haircut on a debt): +10,000; → −55,000: −5,000.
        # C (ineligible MEME, an underlying here): haircut 100 % before and after: 0.
        "collateral|0": [-24_000.0, 10_000.0, 0.0],
        "collateral|1": [12_000.0, -5_000.0, 0.0],
    })
    assert_frame_equal(got, expect, check_exact=False, rel_tol=REL)


def test_ordered_sums_one_row_per_run_each_from_its_own_rows():
    given = pl.DataFrame({"book": [1, 1, 2, 5, 5, 5], "value": [1.0, 2.0, 3.0, 0.1, 0.2, 0.3]})
    got = stress.ordered_sums(given, "book", {"total": pl.col("value")})
    expect = pl.DataFrame({"book": [1, 2, 5], "total": [3.0, 3.0, 0.6]})  # 1 + 2; 3; 0.1 + 0.2 + 0.3
    assert_frame_equal(got, expect, check_exact=False, rel_tol=1e-15)
    # A run's sum is the same bits whatever rows surround it (another partition, other books).
    alone = stress.ordered_sums(given.filter(pl.col("book") == 5), "book", {"total": pl.col("value")})
    assert alone["total"].to_list() == got["total"].tail(1).to_list()
    assert stress.ordered_sums(given.clear(), "book", {"total": pl.col("value")}).height == 0
    with pytest.raises(ValueError, match="not in book order"):  # a book split in two runs is refused
        stress.ordered_sums(given.reverse(), "book", {"total": pl.col("value")})


def test_stressed_equity_shortfall_and_below_mm():
    given = pl.DataFrame({"equity": [100.0, 100.0, 100.0], "pnl": [-30.0, -95.0, -150.0], "change": [-10.0, 0.0, 0.0],
                          "mm": [50.0, 50.0, 50.0]})
    got = given.select(
        stress.stressed_equity(pl.col("equity"), pl.col("pnl"), pl.col("change")).alias("stressed_equity"),
    ).with_columns(stress.shortfall(pl.col("stressed_equity")).alias("shortfall_usd"),
                   stress.below_mm(pl.col("stressed_equity"), given["mm"]).alias("below_mm"))
    # 100 − 30 − 10 = 60 (≥ mm 50); 100 − 95 = 5 (< 50, no shortfall); 100 − 150 = −50 (shortfall 50)
    expect = pl.DataFrame({"stressed_equity": [60.0, 5.0, -50.0], "shortfall_usd": [0.0, 0.0, 50.0],
                           "below_mm": [False, True, True]})
    assert_frame_equal(got, expect)


def breach(book_type, book_id, stress_id, shortfall_usd, stressed_equity=None, mm=10.0):
    equity = -shortfall_usd if stressed_equity is None else stressed_equity
    return (book_type, book_id, stress_id, 0.0, 0.0, equity, shortfall_usd, mm)


def test_stress_summary_covers_with_ties_by_type_then_id():
    given = pl.DataFrame([
        breach("group", "G", "crash", 100.0),
        breach("account", "B", "crash", 50.0),
        breach("account", "A", "crash", 100.0),
        breach("account", "C", "crash", 0.0, stressed_equity=5.0),  # below mm, no shortfall
        breach("account", "A", "dip", 0.0, stressed_equity=5.0),
    ], schema=stress.STRESS_RESULTS_SCHEMA, orient="row")
    got = stress.stress_summary(given, ["crash", "dip", "quiet"], {"dip": -0.1})
    expect = pl.DataFrame({
        "stress_id": ["crash", "dip", "quiet"],
        "ladder_move": [None, -0.1, None],
        "counterparties_below_mm": [4, 1, 0],
        "counterparties_in_shortfall": [3, 0, 0],
        "total_shortfall_usd": [250.0, 0.0, 0.0],  # 100 + 50 + 0 + 100
        "cover1_usd": [100.0, 0.0, 0.0],
        "cover2_usd": [200.0, 0.0, 0.0],  # the two largest: 100 + 100
        # A tie at 100: account before group; no counterparty when the shortfall is 0
        "cover1_book_type": ["account", None, None], "cover1_book_id": ["A", None, None],
        "cover2_book_type": ["group", None, None], "cover2_book_id": ["G", None, None],
    }, schema=stress.STRESS_SUMMARY_SCHEMA)
    assert_frame_equal(got, expect)


def test_liquidation_distance_nearest_breaching_rung_per_side():
    ids = ["ladder_down_10", "ladder_down_20", "ladder_up_10"]
    rungs = pl.DataFrame({"stress_id": ids, "price_move": [-0.1, -0.2, 0.1]})
    given = pl.LazyFrame({
        "book_type": ["account", "account", "group"], "book_id": ["A", "B", "G"],
        "equity": [100.0, 100.0, 10.0], "mm": [50.0, 50.0, 50.0],
        # pnl per rung: A breaches at −20 % only, B at +10 % only; G is already below mm
        "pnl|0": [-40.0, 0.0, 0.0], "pnl|1": [-60.0, 0.0, 0.0], "pnl|2": [0.0, -70.0, 0.0],
        "collateral|0": [0.0] * 3, "collateral|1": [0.0] * 3, "collateral|2": [0.0] * 3,
    })
    got = stress.liquidation_distance(given, ids, rungs).collect()
    expect = pl.DataFrame({"book_type": ["account", "account", "group"], "book_id": ["A", "B", "G"],
                           "move_down": [-0.2, None, 0.0], "move_up": [None, 0.1, 0.0]})
    assert_frame_equal(got, expect)


# ---------------------------------------------------------------- books end to end

STRESSES = [
    ("down", "BTC", -0.2, 0.1),
    ("up", "*", 0.1, 0.0),
    ("crash", "*", -0.9, 0.0),
    ("ladder_down_10", "*", -0.1, 0.0),
    ("ladder_down_20", "*", -0.2, 0.0),
    ("ladder_up_10", "*", 0.1, 0.0),
]


@pytest.fixture(scope="module")
def single():
    """S: long 1 BTC call and short 1 BTC-PERP, 2 BTC (100,000, haircut 10,000) and an
    81,000 USD debt; equity = 90,000 − 81,000 + 2,000 (the call's mark) = 11,000."""
    return margin(
        ("S", "BTC-0328-50000-C", 1.0), ("S", "BTC-PERP", -1.0),
        collateral=[("S", "BTC", 2.0), ("S", "USD", -81_000.0)],
        stress_scenarios=STRESSES,
    )


def test_single_account_down_stress_by_hand(single):
    account = row(single, "account_margin", account_id="S")
    assert account["equity"] == pytest.approx(11_000.0, rel=REL)
    call = black76(40_000.0, 50_000.0, 0.6, T_0328, "C") - black76(50_000.0, 50_000.0, 0.5, T_0328, "C")
    perp = -1.0 * 50_100.0 * -0.2  # the short perpetual gains 10,020
    collateral = 72_000.0 - 90_000.0  # 2 BTC → 80,000, haircut 8,000; the USD debt does not move
    stressed = 11_000.0 + (call + perp) + collateral  # ≈ 11,000 − 1,97x + 10,020 − 18,000 ≈ 1,04x
    assert 0 < stressed < account["mm"]  # below mm (≈ 1,694.58), no shortfall
    got = row(single, "stress_results", book_type="account", book_id="S", stress_id="down")
    assert got["position_pnl_usd"] == pytest.approx(call + perp, rel=REL)
    assert got["collateral_change_usd"] == pytest.approx(collateral, rel=REL)
    assert got["stressed_equity"] == pytest.approx(stressed, rel=REL)
    assert got["shortfall_usd"] == 0.0 and got["mm"] == account["mm"]


def test_single_account_crash_is_a_shortfall_by_hand(single):
    account = row(single, "account_margin", account_id="S")
    call = black76(5_000.0, 50_000.0, 0.5, T_0328, "C") - black76(50_000.0, 50_000.0, 0.5, T_0328, "C")
    perp = -1.0 * 50_100.0 * -0.9  # +45,090
    collateral = 9_000.0 - 90_000.0  # 2 BTC → 10,000, haircut 1,000
    stressed = 11_000.0 + (call + perp) + collateral  # ≈ 11,000 − 1,953 + 45,090 − 81,000 ≈ −26,86x
    got = row(single, "stress_results", book_type="account", book_id="S", stress_id="crash")
    assert got["position_pnl_usd"] == pytest.approx(call + perp, rel=REL)
    assert got["collateral_change_usd"] == pytest.approx(collateral, rel=REL)
    assert got["stressed_equity"] == pytest.approx(stressed, rel=REL)
    assert got["shortfall_usd"] == pytest.approx(-stressed, rel=REL)
    assert got["mm"] == account["mm"]
    summary = row(single, "stress_summary", stress_id="crash")
    assert summary["cover1_usd"] == summary["cover2_usd"] == summary["total_shortfall_usd"] == got["shortfall_usd"]
    assert (summary["cover1_book_type"], summary["cover1_book_id"]) == ("account", "S")
    assert summary["cover2_book_id"] is None and summary["counterparties_in_shortfall"] == 1


def test_single_account_liquidation_distance_by_hand(single):
    # −10 %: 11,000 − 9,000 (collateral) + 5,010 (perp) + (B(45,000) − B(50,000) ≈ −1,3xx) ≈ 5,6xx ≥ mm
    # −20 %: 11,000 − 18,000 + 10,020 + (B(40,000, 0.5) − B(50,000, 0.5) ≈ −1,98x) ≈ 1,03x < mm
    # +10 %: collateral +8,000 (110,000 − 12,000 − 90,000), perp −5,010, call gains: above mm
    got = row(single, "liquidation_distance", book_type="account", book_id="S")
    assert (got["move_down"], got["move_up"]) == (-0.2, None)
    assert row(single, "stress_summary", stress_id="ladder_down_20")["counterparties_below_mm"] == 1


def test_ladder_rungs_are_not_in_stress_results(single):
    assert set(single.tables["stress_results"]["stress_id"]) <= {"down", "up", "crash"}
    assert single.tables["stress_summary"]["stress_id"].to_list() == sorted(s[0] for s in STRESSES)


@pytest.fixture(scope="module")
def grouped():
    """G = M1 (long 1 BTC-PERP, 2 BTC) + M2 (short 1 BTC-0328, 1 BTC, 2,000 USD debt); A alone,
    flat, 1 BTC.  Pooled collateral 3 BTC = 150,000: haircut 10,000 + 10,000 → 130,000
    (separately 15,000); group equity 130,000 − 2,000 = 128,000; group_im 1,010 (the
    calendar spread), group_mm 757.5."""
    return margin(
        ("M1", "BTC-PERP", 1.0), ("M2", "BTC-0328", -1.0),
        collateral=[("M1", "BTC", 2.0), ("M2", "BTC", 1.0), ("M2", "USD", -2_000.0), ("A", "BTC", 1.0)],
        accounts=[("M1", "G", "cross"), ("M2", "G", "portfolio"), ("A", None, "portfolio")],
        stress_scenarios=[("down", "BTC", -0.2, 0.0), ("ladder_down_10", "*", -0.1, 0.0),
                          ("wipe", "*", -0.99, 0.0)],
    )


def test_group_is_one_counterparty_with_pooled_collateral(grouped):
    ladder = grouped.tables["liquidation_distance"]
    assert ladder.select("book_type", "book_id").rows() == [("account", "A"), ("group", "G")]  # members are not
    group = row(grouped, "group_margin", margin_group="G")
    assert group["group_equity"] == pytest.approx(128_000.0, rel=REL)
    # wipe: BTC −99 %: perp 50,100 × −0.99 = −49,599; short future +50,200 × 0.99 = 49,698: +99
    # pooled 150,000 → 1,500, haircut 150 → 1,350: change 1,350 − 130,000 = −128,650
    got = row(grouped, "stress_results", book_type="group", book_id="G", stress_id="wipe")
    assert got["position_pnl_usd"] == pytest.approx(99.0, rel=1e-9)
    assert got["collateral_change_usd"] == pytest.approx(-128_650.0, rel=REL)
    assert got["stressed_equity"] == pytest.approx(128_000.0 + 99.0 - 128_650.0, rel=REL)  # −551
    assert got["shortfall_usd"] == pytest.approx(551.0, rel=1e-9)
    assert got["mm"] == pytest.approx(group["group_im"] * 0.75, rel=REL)
    # A (1 BTC, no positions, mm 0): 45,000 → 450 − 45 = 405 ≥ 0 = mm: never below mm
    assert grouped.tables["stress_results"].filter(pl.col("book_id") == "A").height == 0
    assert row(grouped, "liquidation_distance", book_id="A")["move_down"] is None
    # −10 %: 128,000 + 10 − (117,000 − 135,000 … pooled 135,000: haircut 10,000 + 7,000 → 118,000: −12,000) ≫ mm
    assert row(grouped, "liquidation_distance", book_id="G")["move_down"] is None
    summary = row(grouped, "stress_summary", stress_id="wipe")
    assert (summary["cover1_book_type"], summary["cover1_book_id"], summary["counterparties_below_mm"]) == (
        "group", "G", 1)


def test_no_stress_table_no_stress_rows():
    results = margin(("S", "BTC-PERP", 1.0), collateral=[("S", "USD", 1.0)])
    for table in ("stress_results", "stress_summary", "liquidation_distance"):
        assert results.tables[table].height == 0


def test_stress_figures_do_not_depend_on_partitions(single, grouped, tmp_path):
    from flows.partitioned import compute_day
    from transforms.contract import RESULT_KEYS

    inputs = book(
        [("M1", "BTC-PERP", 1.0), ("M2", "BTC-0328", -1.0), ("S", "BTC-0328-50000-C", 1.0), ("S", "BTC-PERP", -1.0),
         ("X", "ETH-PERP", 5.0)],
        collateral=[("M1", "BTC", 2.0), ("M2", "BTC", 1.0), ("S", "BTC", 2.0), ("S", "USD", -81_000.0),
                    ("X", "USD", 1_000.0)],
        accounts=[("M1", "G", "cross"), ("M2", "G", "portfolio"), ("S", None, "portfolio"), ("X", None, "cross")],
        stress_scenarios=STRESSES,
    )
    whole = compute_margin(inputs)
    for partitions in (1, 2, 3):
        day = compute_day(inputs, partitions, tmp_path / str(partitions))
        for table in ("stress_results", "stress_summary", "liquidation_distance"):
            by_files = pl.read_parquet(day.tables[table]).sort(RESULT_KEYS[table])
            assert_frame_equal(by_files, whole.tables[table], check_exact=True)


@pytest.mark.parametrize(("rows", "column"), [
    ([("crash", None, -0.3, 0.0)], "underlying"),
    ([(" ", "*", -0.3, 0.0)], "stress_id"),
    ([("crash", "*", -1.0, 0.0)], "price_move"),
    ([("crash", "*", -0.3, float("nan"))], "vol_move"),
    ([("crash", "*", None, 0.0)], "price_move"),
    ([("crash", "*", -0.3, 0.0), ("crash", "*", -0.4, 0.0)], "stress_id, underlying"),
])
def test_bad_stress_table_is_a_structural_error_naming_the_column(rows, column):
    with pytest.raises(StructuralError) as error:
        check_stress_scenarios(stress_table(rows), "stress_scenarios.parquet")
    assert error.value.column == column
    assert "\n" not in str(error.value)


def test_a_valid_stress_table_passes():
    check_stress_scenarios(stress_table(STRESSES), "stress_scenarios.parquet")
    assert AS_OF  # the books' date


def test_empty_stress_table_and_unknown_underlyings_run():
    """An empty table gives no stress rows; a stress on an underlying nobody holds moves nothing."""
    empty = margin(("S", "BTC-PERP", 1.0), collateral=[("S", "BTC", 1.0)], stress_scenarios=[])
    assert all(empty.tables[t].height == 0 for t in ("stress_results", "stress_summary", "liquidation_distance"))
    other = margin(("S", "BTC-PERP", 1.0), collateral=[("S", "BTC", 1.0)], stress_scenarios=[("doge", "DOGE", -0.5, 0.0)])
    summary = row(other, "stress_summary", stress_id="doge")
    assert (summary["counterparties_below_mm"], summary["total_shortfall_usd"]) == (0, 0.0)
    assert other.tables["liquidation_distance"].height == 0  # no rungs, no ladder
