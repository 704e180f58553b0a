"""Synthetic inputs (market/generate.py) and shipped reference defaults (data/reference)."""

from __future__ import annotations

import datetime as dt
import math
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stdnum import lei as stdnum_lei

from market import generate as gen
from market import reference_defaults as refdef
from transforms.valuation import black76_value
from flows.loading import CONTRACT_SCHEMAS

REFERENCE = Path(__file__).resolve().parent.parent / "data" / "reference"
EXAMPLE_SCENARIOS = (
    Path(__file__).resolve().parent / "data" / "examples" / "book_a_12_accounts" / "inputs" / "reference"
    / "scenarios.parquet"
)
D1 = dt.date(2025, 3, 13)  # Thursday: a weekly/monthly/quarterly expiry falls on 2025-03-28
D2 = dt.date(2025, 3, 14)
N = 50
SEED = 7
INPUT_FILES = ("positions", "prices", "collateral", "fx_rates", "instruments")

SCHEMAS = CONTRACT_SCHEMAS  # SPEC §2 column types, defined once in flows/loading.py


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("book")
    folders = gen.generate_book(root, D1, 2, N, SEED)
    assert [f.name for f in folders] == [f"date={D1}", f"date={D2}"]
    return root


@pytest.fixture(scope="module")
def clean_day(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    return gen.generate_day(root, D2, N, SEED, bad_rows=False)


def read(folder: Path, name: str) -> pl.DataFrame:
    return pl.read_parquet(folder / f"{name}.parquet")


# --------------------------------------------------------------------------------------
# reference defaults
# --------------------------------------------------------------------------------------
def test_reference_files_have_spec_dtypes():
    for name in ("haircuts", "risk_params", "scenarios", "offsets"):
        assert dict(read(REFERENCE, name).schema) == SCHEMAS[name], name


def test_reference_defaults_are_reproducible(tmp_path):
    refdef.write_defaults(tmp_path)
    for name in refdef.DEFAULT_FILES:
        assert (tmp_path / name).read_bytes() == (REFERENCE / name).read_bytes(), name


def test_risk_params_calibration():
    rp = read(REFERENCE, "risk_params")
    assert rp["underlying"].to_list()[:3] == ["BTC", "ETH", "SOL"]
    assert rp["im_rate"].to_list() == rp["price_scan"].to_list()
    scan = dict(zip(rp["underlying"], rp["price_scan"]))
    assert scan["BTC"] == 0.15 and scan["ETH"] == 0.20 and scan["SOL"] == 0.30
    assert rp.filter((pl.col("price_scan") <= 0) | (pl.col("price_scan") >= 1)).is_empty()
    assert rp.filter((pl.col("vol_scan") < 0.10) | (pl.col("vol_scan") > 0.20)).is_empty()
    for col in ("spread_rate", "short_option_min_rate"):
        assert rp.filter((pl.col(col) < 0) | (pl.col(col) > 0.05)).is_empty()
    max_move = read(REFERENCE, "scenarios")["price_move"].abs().max()
    assert (rp["price_scan"] * max_move).max() < 1.0
    assert rp["underlying"].n_unique() == rp.height


def test_scenarios_are_the_span16_grid():
    sc = read(REFERENCE, "scenarios")
    assert sc["scenario_id"].to_list() == list(range(1, 17))
    third = 1.0 / 3.0
    expected_moves = [0, 0, third, third, -third, -third, 2 * third, 2 * third, -2 * third, -2 * third,
                      1, 1, -1, -1, 2, -2]
    assert sc["price_move"].to_list() == pytest.approx(expected_moves, abs=1e-15)
    assert sc["vol_move"].to_list() == [1.0, -1.0] * 7 + [0.0, 0.0]
    assert sc["cover"].to_list() == [1.0] * 14 + [0.35, 0.35]
    if EXAMPLE_SCENARIOS.exists():  # same order and values as the worked examples
        assert sc.equals(pl.read_parquet(EXAMPLE_SCENARIOS))


def test_haircut_tiers():
    hc = read(REFERENCE, "haircuts")
    assert hc.filter((pl.col("haircut") < 0) | (pl.col("haircut") > 1)).is_empty()
    firsts = hc.group_by("asset").agg(pl.col("tier_start_usd").min(), pl.col("tier_start_usd").n_unique().alias("u"),
                                       pl.len())
    assert firsts.filter(pl.col("tier_start_usd") != 0).is_empty()
    assert firsts.filter(pl.col("u") != pl.col("len")).is_empty()
    rate = {(a, s): h for a, s, h in hc.iter_rows()}
    assert rate[("USD", 0.0)] == 0.0
    assert rate[("USDC", 0.0)] <= 0.02 and rate[("USDT", 0.0)] <= 0.02
    assert rate[("BTC", 0.0)] == 0.05 and rate[("BTC", 1e6)] == 0.08 and rate[("BTC", 1e7)] == 0.15
    assert rate[("MEME", 0.0)] >= 0.5
    for asset, group in hc.sort("tier_start_usd").group_by("asset"):
        assert group["haircut"].is_sorted(), asset  # rising with size
    assert refdef.INELIGIBLE_ASSET not in hc["asset"].to_list()
    assert refdef.INELIGIBLE_ASSET in gen.ASSETS


def test_offsets_and_policy():
    off = read(REFERENCE, "offsets")
    assert off["priority"].is_unique().all()
    first = off.sort("priority").row(0, named=True)
    assert (first["underlying_a"], first["underlying_b"], first["ratio_a"], first["ratio_b"]) == ("BTC", "ETH", 1, 20)
    assert off.filter((pl.col("credit_rate") < 0) | (pl.col("credit_rate") > 1)).is_empty()
    assert off.filter((pl.col("ratio_a") <= 0) | (pl.col("ratio_b") <= 0)).is_empty()
    policy = tomllib.loads((REFERENCE / "policy.toml").read_text())
    assert policy["maintenance_ratio"] == 0.75
    assert policy["vol_floor"] == 0.01
    assert policy["collateralisation_category"] == "OWC2"
    assert stdnum_lei.is_valid(policy["reporting_lei"]) and len(policy["reporting_lei"]) == 20


# --------------------------------------------------------------------------------------
# layout, dtypes, determinism
# --------------------------------------------------------------------------------------
def test_files_and_dtypes(book):
    ref = book / "reference"
    for name in (*refdef.DEFAULT_FILES, "accounts.parquet"):
        assert (ref / name).is_file(), name
    for name in refdef.DEFAULT_FILES:  # copies of the committed defaults
        assert (ref / name).read_bytes() == (REFERENCE / name).read_bytes()
    assert dict(read(ref, "accounts").schema) == SCHEMAS["accounts"]
    for day in (D1, D2):
        folder = book / f"date={day}"
        for name in INPUT_FILES:
            assert dict(read(folder, name).schema) == SCHEMAS[name], (day, name)


def test_same_seed_same_bytes(tmp_path, book):
    other = gen.generate_day(tmp_path / "again", D2, N, SEED)
    for name in INPUT_FILES:
        assert (other / f"{name}.parquet").read_bytes() == (book / f"date={D2}" / f"{name}.parquet").read_bytes()
    assert (tmp_path / "again" / "reference" / "accounts.parquet").read_bytes() == (
        book / "reference" / "accounts.parquet").read_bytes()
    different = gen.generate_day(tmp_path / "seed8", D2, N, seed=8)
    assert not read(different, "positions").equals(read(book / f"date={D2}", "positions"))


def test_ensure_reference_never_overwrites(tmp_path):
    ref = tmp_path / "reference"
    ref.mkdir()
    (ref / "policy.toml").write_text('maintenance_ratio = 0.5\n')
    custom = pl.DataFrame({"account_id": ["X"], "margin_group": [None], "margin_mode": ["cross"], "lei": [None]},
                          schema=SCHEMAS["accounts"])
    custom.write_parquet(ref / "accounts.parquet")
    gen.ensure_reference(tmp_path, 10, SEED)
    assert (ref / "policy.toml").read_text() == 'maintenance_ratio = 0.5\n'
    assert pl.read_parquet(ref / "accounts.parquet").equals(custom)
    assert (ref / "haircuts.parquet").read_bytes() == (REFERENCE / "haircuts.parquet").read_bytes()


# --------------------------------------------------------------------------------------
# market content
# --------------------------------------------------------------------------------------
def test_prices_move_between_days(book):
    p1 = read(book / f"date={D1}", "prices")
    p2 = read(book / f"date={D2}", "prices")
    for u in ("BTC", "ETH", "SOL"):
        a = p1.filter(instrument_id=u)["price"].item()
        b = p2.filter(instrument_id=u)["price"].item()
        assert a != b and abs(math.log(b / a)) < 0.3, u
    common = p1.join(p2, on="instrument_id").filter(pl.col("price").is_finite())
    assert (common["price"] != common["price_right"]).mean() > 0.9


def test_instrument_universe(clean_day):
    ins = read(clean_day, "instruments")
    px = read(clean_day, "prices")
    fx = read(clean_day, "fx_rates")
    assert ins["instrument_id"].is_unique().all() and px["instrument_id"].is_unique().all()
    assert set(ins["instrument_id"]) == set(px["instrument_id"])
    assert set(ins["kind"]) == {"spot", "perpetual", "future", "option"}
    for u in ("BTC", "ETH", "SOL"):
        spot = ins.filter(instrument_id=u).row(0, named=True)
        assert (spot["kind"], spot["underlying"], spot["currency"], spot["multiplier"]) == ("spot", u, "USD", 1.0)
        assert ins.filter(instrument_id=f"{u}-PERP", kind="perpetual").height == 1
        futs = ins.filter(underlying=u, kind="future")
        assert futs["expiry"].n_unique() >= 3
        assert all(f"{u}-{e:%Y%m%d}" == i for i, e in zip(futs["instrument_id"], futs["expiry"]))
        opts = ins.filter(underlying=u, kind="option")
        assert opts["expiry"].n_unique() >= 3 and opts["strike"].n_unique() >= 10
        assert opts.filter(pl.col("strike").is_null() | pl.col("option_type").is_null()).is_empty()
    # nothing listed has expired (bad rows are off here)
    assert ins.filter(pl.col("expiry") <= D2).is_empty()
    assert ins.filter(pl.col("expiry").is_null() & pl.col("kind").is_in(["future", "option"])).is_empty()
    # spot index = fx rate of the coin; USD and stablecoins
    rate = dict(fx.iter_rows())
    assert rate["USD"] == 1.0 and abs(rate["USDC"] - 1) < 0.002 and abs(rate["USDT"] - 1) < 0.002
    for u in ("BTC", "ETH", "SOL"):
        assert rate[u] == px.filter(instrument_id=u)["price"].item()
    assert set(gen.ASSETS) <= set(rate)
    assert px.filter(pl.col("price") <= 0).is_empty()


def test_option_marks_are_black76_of_the_smile(clean_day):
    ins = read(clean_day, "instruments").filter(kind="option")
    px = read(clean_day, "prices")
    spot = px.filter(pl.col("instrument_id").is_in(["BTC", "ETH", "SOL"])).rename({"instrument_id": "underlying",
                                                                                   "price": "S"})
    df = ins.join(px, on="instrument_id").join(spot.select("underlying", "S"), on="underlying")
    assert df.filter(pl.col("implied_vol").is_null() | (pl.col("implied_vol") <= 0)).is_empty()
    T = np.array([(e - D2).days / 365.0 for e in df["expiry"]])
    value = df.select(black76_value(pl.col("S"), pl.col("strike"), pl.col("implied_vol"), pl.lit(T),
                                    pl.col("option_type"))).to_series().to_numpy()
    floor = np.array([gen.OPTION_MIN_PRICE[gen.OPTION_UNDERLYINGS.index(u)] for u in df["underlying"]])
    assert np.allclose(df["price"].to_numpy(), np.maximum(value, floor), rtol=1e-6, atol=1e-9)
    # a smile: vol varies with moneyness within an expiry
    per_expiry = df.group_by("underlying", "expiry").agg(pl.col("implied_vol").n_unique().alias("n"))
    assert per_expiry["n"].min() > 5


def test_generator_prices_options_with_the_engines_black76():
    # F = K = 100, T = 1, σ = 0.2: d1 = 0.1, d2 = −0.1, n(0.1) = 0.3969525474770118; value = 100 (N(0.1) − N(−0.1)) = 7.965567455405804,
    # delta N(0.1) = 0.539827837277029, gamma n(0.1) / (100 × 0.2) = 0.01984762737385059,
    # vega per 1.00 vol 100 × n(0.1) × 1 = 39.69525474770118; the put at K = 110 expiring today: intrinsic 10, delta −1
    value, delta, gamma, vega = gen.option_value_and_greeks(
        np.array([100.0, 100.0]), np.array([100.0, 110.0]), np.array([1.0, 0.0]), np.array([0.2, 0.3]),
        np.array([True, False]),
    )
    assert value == pytest.approx([7.965567455405804, 10.0], rel=1e-12)
    assert delta == pytest.approx([0.539827837277029, -1.0], rel=1e-12)
    assert gamma == pytest.approx([0.01984762737385059, 0.0], rel=1e-12)
    assert vega == pytest.approx([39.69525474770118, 0.0], rel=1e-12)


# --------------------------------------------------------------------------------------
# book content
# --------------------------------------------------------------------------------------
def _positions_with_instruments(folder: Path) -> pl.DataFrame:
    return read(folder, "positions").join(read(folder, "instruments"), on="instrument_id", how="inner")


def test_strategies_are_present(clean_day):
    pos = _positions_with_instruments(clean_day)
    net = pos.group_by("account_id", "instrument_id", "kind", "underlying", "expiry", "multiplier").agg(
        pl.col("quantity").sum()).filter(pl.col("quantity").abs() > 1e-12)
    # basis: long spot and short perpetual/future on the same underlying
    spot_long = net.filter(kind="spot").filter(pl.col("quantity") > 0).select("account_id", "underlying")
    short_lin = net.filter(pl.col("kind").is_in(["perpetual", "future"]) & (pl.col("quantity") < 0)).select(
        "account_id", "underlying")
    assert spot_long.join(short_lin, on=["account_id", "underlying"]).height > 0
    # calendar: long one future expiry, short another, same underlying
    fut = net.filter(kind="future")
    cal = fut.filter(pl.col("quantity") > 0).join(fut.filter(pl.col("quantity") < 0), on=["account_id", "underlying"])
    assert cal.filter(pl.col("expiry") != pl.col("expiry_right")).height > 0
    # cross-underlying pair: long BTC vs short about 20x ETH in units (or the reverse)
    units = net.filter(pl.col("kind").is_in(["perpetual", "future"])).with_columns(
        (pl.col("quantity") * pl.col("multiplier")).alias("units")).group_by("account_id", "underlying").agg(
        pl.col("units").sum())
    pairs = units.filter(underlying="BTC").join(units.filter(underlying="ETH"), on="account_id").filter(
        (pl.col("units") * pl.col("units_right") < 0)
        & ((-pl.col("units_right") / pl.col("units")).is_between(12, 30)))
    assert pairs.height > 0
    # delta-hedged option seller: short options and an opposite linear hedge
    short_opt = net.filter(kind="option").filter(pl.col("quantity") < 0)["account_id"].unique()
    sellers = net.filter(pl.col("account_id").is_in(short_opt.implode()) & pl.col("kind").is_in(["future", "perpetual"]))
    assert sellers.height > 0
    # long options
    assert net.filter(kind="option").filter(pl.col("quantity") > 0).height > 0
    # about a third of rows are options (between a fifth and a half)
    share = (pos["kind"] == "option").mean()
    assert 0.2 < share < 0.5


def test_sources_split_rows(clean_day):
    pos = read(clean_day, "positions")
    assert pos["source"].null_count() > 0
    assert set(pos["source"].drop_nulls()) == {"binance", "okx", "deribit", "cme"}
    by_key = pos.group_by("account_id", "instrument_id").agg(
        pl.len().alias("rows"), pl.col("source").n_unique().alias("sources"),
        (pl.col("quantity").min() < 0).alias("has_short"), (pl.col("quantity").max() > 0).alias("has_long"))
    assert by_key.filter(pl.col("rows") > 1).height > 0
    assert by_key.filter(pl.col("sources") >= 3).height > 0
    assert by_key.filter(pl.col("has_short") & pl.col("has_long")).height > 0  # opposite venues
    assert pos.height / N > 6  # about 10 rows per account


def test_accounts_modes_groups_leis(book):
    acc = read(book / "reference", "accounts")
    assert acc.height == N and acc["account_id"].is_unique().all()
    assert set(acc["margin_mode"]) == {"isolated", "cross", "portfolio"}
    groups = acc.drop_nulls("margin_group").group_by("margin_group").len()
    assert groups.height >= 1 and groups["len"].min() >= 2 and groups["len"].max() <= 5
    assert acc["margin_group"].null_count() > N * 0.8
    leis = acc["lei"].drop_nulls().to_list()
    assert acc["lei"].null_count() >= 1
    valid = [stdnum_lei.is_valid(x) for x in leis]
    assert all(len(x) == 20 for x in leis)
    assert sum(valid) >= 0.8 * N and not all(valid)


def test_lei_generator_matches_stdnum():
    leis, _ = gen._lei_strings(np.random.default_rng(1), 2000)
    assert len(set(leis.tolist())) == 2000
    assert all(stdnum_lei.is_valid(x) for x in leis.tolist())


def test_collateral(book):
    col = read(book / f"date={D2}", "collateral")
    assert set(gen.ASSETS) <= set(col["asset"])
    assert col.filter(pl.col("amount") < 0).height > 0  # borrowed balances
    per_acct = col.group_by("account_id").agg(pl.col("asset").n_unique().alias("n"))
    assert per_acct["n"].max() >= 3
    acc = read(book / "reference", "accounts")
    assert col["account_id"].n_unique() >= 0.9 * acc.height


def test_books_stable_from_day_to_day(book):
    p1 = read(book / f"date={D1}", "positions").group_by("account_id", "instrument_id").agg(pl.col("quantity").sum())
    p2 = read(book / f"date={D2}", "positions").group_by("account_id", "instrument_id").agg(pl.col("quantity").sum())
    both = p1.join(p2, on=["account_id", "instrument_id"], how="inner")
    assert both.height > 0.8 * max(p1.height, p2.height)
    assert (both["quantity"] == both["quantity_right"]).mean() > 0.7


def test_expiries_roll_forward():
    for day in (dt.date(2025, 3, 27), dt.date(2025, 3, 28), dt.date(2025, 12, 31)):
        lst = gen.build_listing(SEED, day)
        exp = lst.instruments.filter(pl.col("kind").is_in(["future", "option"]))["expiry"]
        assert exp.min() > day
        assert lst.instruments.filter(kind="future", underlying="BTC").height >= 3
        assert lst.instruments.filter(kind="option", underlying="BTC")["expiry"].n_unique() >= 3
        assert all(e.weekday() == 4 for e in exp.unique())


# --------------------------------------------------------------------------------------
# deliberately bad rows
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def large_book(tmp_path_factory) -> Path:
    """Big enough (~5,000 position rows) for every kind of deliberately bad position row."""
    root = tmp_path_factory.mktemp("large")
    gen.generate_day(root, D2, 500, SEED)
    return root


def test_bad_rows_present(large_book):
    book = large_book
    folder = book / f"date={D2}"
    pos = read(folder, "positions")
    ins = read(folder, "instruments")
    px = read(folder, "prices")
    acc = read(book / "reference", "accounts")
    assert pos.join(ins, on="instrument_id", how="anti").height >= 1  # unknown instrument
    expired = ins.filter(pl.col("expiry") < D2)["instrument_id"]
    assert pos.filter(pl.col("instrument_id").is_in(expired.implode())).height >= 1
    assert pos.filter(pl.col("quantity").is_null() | pl.col("quantity").is_nan()).height >= 1
    assert pos.join(acc, on="account_id", how="anti").height >= 1  # account not in accounts
    no_vol = ins.filter(kind="option").join(px, on="instrument_id").filter(pl.col("implied_vol").is_null())
    assert pos.filter(pl.col("instrument_id").is_in(no_vol["instrument_id"].implode())).height >= 1
    assert not px["instrument_id"].is_unique().all()  # a duplicated price
    assert px.filter(pl.col("price").is_nan()).height >= 1
    assert not ins.filter(~pl.col("kind").is_in(["spot", "future", "perpetual", "option"])).is_empty()
    col = read(folder, "collateral")
    assert col.filter(pl.col("amount").is_null()).height >= 1
    assert not set(col["asset"]) <= set(read(folder, "fx_rates")["currency"])
    bad_share = pos.filter(
        ~pl.col("instrument_id").is_in(ins["instrument_id"].implode())
        | pl.col("quantity").is_null() | pl.col("quantity").is_nan()).height / pos.height
    assert bad_share < 0.0025  # a fifth of the quarantine guard's default limit (SPEC §3)


@pytest.mark.parametrize("accounts", [1, 2, 7, 30, 60, 120, 400, 1500])
def test_deliberately_bad_rows_stay_well_inside_the_quarantine_guard(tmp_path, accounts):
    loading = pytest.importorskip("flows.loading")
    pipeline = pytest.importorskip("transforms.pipeline")
    gen.generate_day(tmp_path, D2, accounts, SEED)
    counts = pipeline.compute_margin(loading.load_inputs(tmp_path, D2).margin_inputs).counts
    positions = counts.filter(pl.col("table") == "positions").row(0, named=True)
    assert positions["quarantined"] / positions["read"] <= 0.0025, positions  # limit 0.01


def test_no_bad_rows_when_disabled(clean_day, book):
    pos = read(clean_day, "positions")
    ins = read(clean_day, "instruments")
    px = read(clean_day, "prices")
    col = read(clean_day, "collateral")
    acc = read(book / "reference", "accounts")
    assert pos.join(ins, on="instrument_id", how="anti").is_empty()
    assert pos.filter(pl.col("quantity").is_null() | ~pl.col("quantity").is_finite()).is_empty()
    assert pos.join(acc, on="account_id", how="anti").is_empty()
    assert col.join(acc, on="account_id", how="anti").is_empty()
    assert px["instrument_id"].is_unique().all() and ins["instrument_id"].is_unique().all()
    assert px.filter(~pl.col("price").is_finite() | (pl.col("price") <= 0)).is_empty()
    assert ins.filter(pl.col("expiry") < D2).is_empty()
    assert col.filter(pl.col("amount").is_null()).is_empty()
    assert set(col["asset"]) <= set(read(clean_day, "fx_rates")["currency"])
    assert set(ins["kind"]) <= {"spot", "future", "perpetual", "option"}


# --------------------------------------------------------------------------------------
# through the methodology: most accounts healthy, a few in margin call / liquidation
# --------------------------------------------------------------------------------------
def test_status_mix_through_the_pipeline(tmp_path):
    loading = pytest.importorskip("flows.loading")
    pipeline = pytest.importorskip("transforms.pipeline")
    gen.generate_day(tmp_path, D2, 400, SEED)
    results = pipeline.compute_margin(loading.load_inputs(tmp_path, D2).margin_inputs)
    status = dict(results.tables["account_margin"].group_by("status").len().iter_rows())
    total = sum(status.values())
    assert status.get("ok", 0) > 0.85 * total
    assert 0 < status.get("margin_call", 0) < 0.1 * total
    assert 0 < status.get("liquidation", 0) < 0.1 * total
    reasons = set(results.tables["quarantine"]["reason"])
    assert {"unknown_instrument", "expired_instrument", "invalid_value", "missing_vol", "duplicate_key",
            "missing_price", "missing_fx"} <= reasons
    am = results.tables["account_margin"]
    # hedged books: portfolio margin below rule-based margin overall
    assert am["portfolio_im"].sum() < am["net_im"].sum() <= am["gross_im"].sum()


# --------------------------------------------------------------------------------------
# shipped stresses (SPEC §11) and the extended grid (SPEC §2)
# --------------------------------------------------------------------------------------
def test_shipped_stresses_are_the_ladder_and_the_named_stresses():
    from flows.loading import check_stress_scenarios
    from transforms.stress import ladder_rungs

    stresses = read(REFERENCE, "stress_scenarios")
    assert dict(stresses.schema) == SCHEMAS["stress_scenarios"]
    check_stress_scenarios(stresses, REFERENCE / "stress_scenarios.parquet")
    rungs = ladder_rungs(stresses)
    assert sorted(rungs["price_move"].to_list()) == pytest.approx(
        sorted([-s / 100 for s in range(5, 55, 5)] + [s / 100 for s in range(5, 55, 5)]))
    named = set(stresses["stress_id"]) - set(rungs["stress_id"])
    assert named == {"crypto_crash", "squeeze_rally", "vol_crush", "btc_decouple"}
    crash = {r["underlying"]: (r["price_move"], r["vol_move"]) for r in
             stresses.filter(pl.col("stress_id") == "crypto_crash").iter_rows(named=True)}
    assert crash == {"BTC": (-0.30, 0.30), "ETH": (-0.40, 0.30), "*": (-0.50, 0.30)}


def test_generate_copies_the_stresses_and_installs_a_grid(tmp_path):
    gen.ensure_reference(tmp_path, 10, SEED)
    assert (tmp_path / "reference" / "stress_scenarios.parquet").read_bytes() == (
        REFERENCE / "stress_scenarios.parquet").read_bytes()
    installed = gen.install_scenario_grid(tmp_path, "extended")
    assert installed.read_bytes() == (REFERENCE / "scenarios_extended.parquet").read_bytes()


def test_extended_grid_runs_on_a_generated_book(tmp_path):
    """The Deribit-style grid: the 16 rows plus +3/+5/+10 scan ranges and two vol shocks,
    selected by copying it as reference/scenarios.parquet; a run uses all 21 scenarios."""
    loading = pytest.importorskip("flows.loading")
    pipeline = pytest.importorskip("transforms.pipeline")
    grid = read(REFERENCE, "scenarios_extended")
    assert grid.height == 21 and grid["scenario_id"].to_list() == list(range(1, 22))
    assert grid.head(16).equals(read(REFERENCE, "scenarios"))
    assert sorted(grid.filter(pl.col("scenario_id") > 16)["price_move"].to_list()) == [0.0, 0.0, 3.0, 5.0, 10.0]
    gen.install_scenario_grid(tmp_path, "extended")
    gen.generate_day(tmp_path, D2, 60, SEED)
    results = pipeline.compute_margin(loading.load_inputs(tmp_path, D2).margin_inputs)
    assert results.scenario_ids == list(range(1, 22))
    risk = results.tables["underlying_risk"]
    assert risk["scenario_losses"].list.len().unique().to_list() == [21]
    assert set(risk["worst_scenario"].drop_nulls()) & {17, 18, 19}  # the upside rows bind for some shorts


def test_extended_grid_upward_row_binds_for_a_short_by_hand():
    """tests/books.py market (BTC scan 0.1, BTC-PERP 50,100) with the extended grid:
    short 1 perp: +1 scan range (id 11) loses 5,010; +2 × 0.35 (id 15) 3,507; +10 × 0.15
    (id 19) 0.15 × 10 × 0.1 × 50,100 = 7,515: the extended row binds.  Long 1 perp: the
    −1 scan range (id 13), 5,010, as on the default grid (no extended downward rows)."""
    from books import margin, row

    grid = [tuple(r) for r in read(REFERENCE, "scenarios_extended").iter_rows()]
    results = margin(("S", "BTC-PERP", -1.0), ("L", "BTC-PERP", 1.0), scenarios=grid)
    short = row(results, "underlying_risk", account_id="S", underlying="BTC")
    assert (short["worst_scenario"], short["scan_risk"]) == (19, pytest.approx(7_515.0, rel=1e-9))
    long = row(results, "underlying_risk", account_id="L", underlying="BTC")
    assert (long["worst_scenario"], long["scan_risk"]) == (13, pytest.approx(5_010.0, rel=1e-9))


def test_generate_command_selects_a_grid(tmp_path):
    from conftest import margin_cli

    done = margin_cli("generate", "--date", D2.isoformat(), "--accounts", "20", "--out", str(tmp_path),
                      "--scenarios", "extended")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reference" / "scenarios.parquet").read_bytes() == (
        REFERENCE / "scenarios_extended.parquet").read_bytes()
    assert (tmp_path / "reference" / "stress_scenarios.parquet").exists()
    unknown = margin_cli("generate", "--date", D2.isoformat(), "--out", str(tmp_path), "--scenarios", "wide")
    assert unknown.returncode == 1 and "unknown grid" in unknown.stderr and unknown.stderr.count("\n") == 1
