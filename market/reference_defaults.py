"""Shipped methodology defaults (SPEC §2 "Shipped defaults" / "Default scenarios").

The committed files under ``data/reference/`` are produced by this module, so they are
reproducible and reviewable as code::

    uv run python -m market.reference_defaults          # rewrites data/reference/*
    uv run python -m market.reference_defaults --out DIR

``accounts.parquet`` is deliberately *not* a default: it is synthetic and written per
input root by :func:`market.generate.ensure_reference`.

Calibration (see ``data/reference/README.md``):

* ``im_rate_u == price_scan_u`` so a naked linear position costs the same in every
  margin mode; the modes differ only by what they net.
* ``price_scan`` is close to a one-day 99 % move: BTC 15 %, ETH 20 %, SOL 30 %,
  DOGE 35 %. The widest scenario moves the price by 2 x price_scan (0.70 for DOGE) so
  no scenario takes a price to zero.
* Haircuts are marginal by USD tier (like tax brackets); ``PEPE`` deliberately has no
  row so it is an ineligible collateral asset.
* Stress scenarios (SPEC §11): the liquidation ladder every 5 % to ±50 % and four named
  market-wide stresses (``STRESSES``).
* A second scenario grid, ``scenarios_extended.parquet`` (not copied by default; ``margin
  generate --scenarios extended``): the 16 rows plus extended upward moves and vol shocks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "data" / "reference"

# The firm's own LEI (ISO 17442: 18 alphanumerics + 2 MOD 97-10 check digits).
# "5493" is a real LOU prefix; the body is synthetic. Checked by tests with stdnum.
REPORTING_LEI = "549300MRGNVENUE00102"

POLICY = {
    "maintenance_ratio": 0.75,
    "vol_floor": 0.01,
    "reporting_lei": REPORTING_LEI,
    "collateralisation_category": "OWC2",
}

# asset -> [(tier_start_usd, marginal haircut)], first tier at 0.
HAIRCUTS: dict[str, list[tuple[float, float]]] = {
    "USD": [(0.0, 0.0)],
    "USDC": [(0.0, 0.005), (10_000_000.0, 0.02)],
    "USDT": [(0.0, 0.01), (10_000_000.0, 0.025)],
    "BTC": [(0.0, 0.05), (1_000_000.0, 0.08), (10_000_000.0, 0.15)],
    "ETH": [(0.0, 0.07), (1_000_000.0, 0.10), (10_000_000.0, 0.18)],
    "SOL": [(0.0, 0.15), (1_000_000.0, 0.25), (5_000_000.0, 0.40)],
    "DOGE": [(0.0, 0.25), (1_000_000.0, 0.40)],
    "MEME": [(0.0, 0.50), (250_000.0, 0.70), (1_000_000.0, 0.90)],
    # PEPE: no row on purpose -> ineligible collateral (valued, haircut 100 %).
}
INELIGIBLE_ASSET = "PEPE"

# underlying -> (price_scan, vol_scan, spread_rate, short_option_min_rate); im_rate = price_scan
RISK_PARAMS: dict[str, tuple[float, float, float, float]] = {
    "BTC": (0.15, 0.10, 0.010, 0.010),
    "ETH": (0.20, 0.12, 0.0125, 0.0125),
    "SOL": (0.30, 0.15, 0.020, 0.020),
    "DOGE": (0.35, 0.20, 0.025, 0.025),
}

# (priority, a, b, ratio_a, ratio_b, credit_rate): delta units per spread leg.
OFFSETS: list[tuple[int, str, str, float, float, float]] = [
    (1, "BTC", "ETH", 1.0, 20.0, 0.50),
    (2, "BTC", "SOL", 1.0, 400.0, 0.30),
    (3, "ETH", "SOL", 1.0, 20.0, 0.30),
    (4, "BTC", "DOGE", 1.0, 400_000.0, 0.15),
]


#: Named market-wide stresses (SPEC §11): stress_id → [(underlying, price_move, vol_move)],
#: ``*`` = every underlying not listed; the first row carries the description.
STRESSES: dict[str, tuple[str, list[tuple[str, float, float]]]] = {
    "crypto_crash": (
        "market crash: BTC -30 %, ETH -40 %, every other coin -50 %, vols +30 pts",
        [("BTC", -0.30, 0.30), ("ETH", -0.40, 0.30), ("*", -0.50, 0.30)],
    ),
    "squeeze_rally": (
        "short squeeze: BTC +30 %, ETH +40 %, every other coin +60 %, vols +20 pts",
        [("BTC", 0.30, 0.20), ("ETH", 0.40, 0.20), ("*", 0.60, 0.20)],
    ),
    "vol_crush": ("no price move, every implied vol -20 pts", [("*", 0.0, -0.20)]),
    "btc_decouple": ("BTC -25 % with vols +15 pts, other coins unmoved", [("BTC", -0.25, 0.15)]),
}
#: Ladder rungs: every underlying moved by ±5 % … ±50 % (vol unchanged).
LADDER_STEPS = tuple(range(5, 55, 5))

#: Extended grid (Deribit-style): (price_move in scan ranges, vol_move in vol scans, cover)
#: added after the 16 default rows, ids 17 on.
EXTENDED_ROWS: list[tuple[float, float, float]] = [
    (3.0, 1.0, 0.35),   # +3 scan ranges with vol up: a squeeze well past the one-day move
    (5.0, 1.0, 0.25),   # +5
    (10.0, 1.0, 0.15),  # +10 (BTC +150 %, DOGE +350 %): the unbounded upside of a short
    (0.0, 2.0, 1.0),    # vol shock up (two vol scans), price unchanged
    (0.0, -2.0, 1.0),   # vol shock down (floored at vol_floor)
]


def stress_scenarios_frame() -> pl.DataFrame:
    """The shipped stress table: the ladder, then the named stresses (SPEC §11)."""
    rows: list[tuple[str, str, float, float, str | None]] = []
    for step in LADDER_STEPS:
        rows.append((f"ladder_down_{step:02d}", "*", -step / 100.0, 0.0, f"every underlying -{step} %"))
        rows.append((f"ladder_up_{step:02d}", "*", step / 100.0, 0.0, f"every underlying +{step} %"))
    for stress_id, (description, moves) in STRESSES.items():
        for position, (underlying, price_move, vol_move) in enumerate(moves):
            rows.append((stress_id, underlying, price_move, vol_move, description if position == 0 else None))
    return pl.DataFrame(
        rows,
        schema={"stress_id": pl.String, "underlying": pl.String, "price_move": pl.Float64, "vol_move": pl.Float64,
                "description": pl.String},
        orient="row",
    )


def extended_scenarios_frame() -> pl.DataFrame:
    """The 16 default scenarios plus ``EXTENDED_ROWS`` (ids 17–21): a second grid in the
    style of Deribit's portfolio margin, moves in multiples of each underlying's scan range."""
    default = scenarios_frame()
    extra = pl.DataFrame(
        {
            "scenario_id": pl.Series(range(default.height + 1, default.height + 1 + len(EXTENDED_ROWS)),
                                     dtype=pl.Int32),
            "price_move": pl.Series([r[0] for r in EXTENDED_ROWS], dtype=pl.Float64),
            "vol_move": pl.Series([r[1] for r in EXTENDED_ROWS], dtype=pl.Float64),
            "cover": pl.Series([r[2] for r in EXTENDED_ROWS], dtype=pl.Float64),
        }
    )
    return pl.concat([default, extra])


#: Scenario grids a user can select (``margin generate --scenarios NAME``): name → file.
SCENARIO_GRIDS = {"default": "scenarios.parquet", "extended": "scenarios_extended.parquet"}


def scenarios_frame() -> pl.DataFrame:
    """The 16 scenarios of exchange risk arrays, in the order of the worked examples."""
    moves: list[tuple[float, float, float]] = []
    for pm in (0.0, 1.0 / 3.0, -1.0 / 3.0, 2.0 / 3.0, -2.0 / 3.0, 1.0, -1.0):
        moves.append((pm, 1.0, 1.0))
        moves.append((pm, -1.0, 1.0))
    moves.append((2.0, 0.0, 0.35))
    moves.append((-2.0, 0.0, 0.35))
    return pl.DataFrame(
        {
            "scenario_id": pl.Series(range(1, len(moves) + 1), dtype=pl.Int32),
            "price_move": pl.Series([m[0] for m in moves], dtype=pl.Float64),
            "vol_move": pl.Series([m[1] for m in moves], dtype=pl.Float64),
            "cover": pl.Series([m[2] for m in moves], dtype=pl.Float64),
        }
    )


def haircuts_frame() -> pl.DataFrame:
    rows = [(a, s, h) for a, tiers in HAIRCUTS.items() for s, h in tiers]
    return pl.DataFrame(
        {
            "asset": pl.Series([r[0] for r in rows], dtype=pl.String),
            "tier_start_usd": pl.Series([r[1] for r in rows], dtype=pl.Float64),
            "haircut": pl.Series([r[2] for r in rows], dtype=pl.Float64),
        }
    )


def risk_params_frame() -> pl.DataFrame:
    und = list(RISK_PARAMS)
    return pl.DataFrame(
        {
            "underlying": pl.Series(und, dtype=pl.String),
            "price_scan": pl.Series([RISK_PARAMS[u][0] for u in und], dtype=pl.Float64),
            "vol_scan": pl.Series([RISK_PARAMS[u][1] for u in und], dtype=pl.Float64),
            "im_rate": pl.Series([RISK_PARAMS[u][0] for u in und], dtype=pl.Float64),
            "spread_rate": pl.Series([RISK_PARAMS[u][2] for u in und], dtype=pl.Float64),
            "short_option_min_rate": pl.Series(
                [RISK_PARAMS[u][3] for u in und], dtype=pl.Float64
            ),
        }
    )


def offsets_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "priority": pl.Series([o[0] for o in OFFSETS], dtype=pl.Int32),
            "underlying_a": pl.Series([o[1] for o in OFFSETS], dtype=pl.String),
            "underlying_b": pl.Series([o[2] for o in OFFSETS], dtype=pl.String),
            "ratio_a": pl.Series([o[3] for o in OFFSETS], dtype=pl.Float64),
            "ratio_b": pl.Series([o[4] for o in OFFSETS], dtype=pl.Float64),
            "credit_rate": pl.Series([o[5] for o in OFFSETS], dtype=pl.Float64),
        }
    )


def policy_toml() -> str:
    lines = ["# Methodology policy (SPEC §2). Generated by market/reference_defaults.py."]
    for key, value in POLICY.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


DEFAULT_FILES = (
    "haircuts.parquet",
    "risk_params.parquet",
    "scenarios.parquet",
    "offsets.parquet",
    "stress_scenarios.parquet",
    "policy.toml",
)


def write_defaults(out_dir: Path = REFERENCE_DIR) -> list[Path]:
    """Write the default methodology tables to ``out_dir``; returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {
        "haircuts.parquet": haircuts_frame(),
        "risk_params.parquet": risk_params_frame(),
        "scenarios.parquet": scenarios_frame(),
        "offsets.parquet": offsets_frame(),
        "stress_scenarios.parquet": stress_scenarios_frame(),
        SCENARIO_GRIDS["extended"]: extended_scenarios_frame(),
    }
    written = []
    for name, df in frames.items():
        path = out_dir / name
        df.write_parquet(path)
        written.append(path)
    path = out_dir / "policy.toml"
    path.write_text(policy_toml(), encoding="utf-8")
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REFERENCE_DIR)
    args = parser.parse_args(argv)
    for path in write_defaults(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
