"""Tiny inline books for the methodology tests (SPEC §2–§7).

``book(...)`` builds a ``MarginInputs`` from short Python lists on top of a small
default market, so each test states only what it is about; ``margin(...)`` runs
``compute_margin`` on it; ``row(table, **key)`` picks one output row as a dict.

Default market on D = 2025-03-14 (every number chosen to make hand arithmetic easy):

=================  ==========  ====  ========  ====  ==========  ======  ====  =====
instrument         kind        und.  currency  mult  expiry      strike  type  price
=================  ==========  ====  ========  ====  ==========  ======  ====  =====
BTC                spot        BTC   USD       1                               50000
BTC-PERP           perpetual   BTC   USD       1                               50100
BTC-0328           future      BTC   USD       1     2025-03-28 (T=14/365)     50200
BTC-0425           future      BTC   USD       0.1   2025-04-25 (T=42/365)     50500
BTC-0328-50000-C   option      BTC   USD       1     2025-03-28  50000   C     2000 (vol 0.5)
BTC-0328-50000-P   option      BTC   USD       1     2025-03-28  50000   P     1900 (vol 0.5)
BTC-0328-40000-P   option      BTC   USD       1     2025-03-28  40000   P       10 (vol 0.6)
ETH                spot        ETH   USD       1                                2000
ETH-PERP           perpetual   ETH   USD       1                                2001
ETH-0328           future      ETH   USD       1     2025-03-28                 2010
=================  ==========  ====  ========  ====  ==========  ======  ====  =====

Risk parameters: BTC price_scan 0.1, vol_scan 0.1, im_rate 0.1, spread_rate 0.02,
short_option_min_rate 0.01; ETH 0.2, 0.1, 0.2, 0.03, 0.02.
Scenarios (id: price_move, vol_move, cover): 1: 0,+1,1; 2: 0,−1,1; 3: +1,+1,1;
4: +1,−1,1; 5: −1,+1,1; 6: −1,−1,1; 7: +2,0,0.35; 8: −2,0,0.35.
Offsets: priority 1, BTC:ETH = 1:20, credit_rate 0.5.
FX: BTC 50000, ETH 2000, USDC 1.0, EUR 1.25, MEME 0.01 (USD implied).
Haircuts: USDC 1 % from 0, 5 % from 1,000,000; BTC 10 % from 0, 20 % from 100,000,
50 % from 500,000.  USD and MEME have no haircut row.
Accounts: by default every account id used in positions or collateral, alone, in
``default_mode`` (portfolio).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import polars as pl

from flows.loading import CONTRACT_SCHEMAS

from transforms.pipeline import MarginInputs, MarginResults, compute_margin

AS_OF = dt.date(2025, 3, 14)
EXP_0328 = dt.date(2025, 3, 28)  # 14 days after AS_OF
EXP_0425 = dt.date(2025, 4, 25)  # 42 days after AS_OF

SCHEMAS = CONTRACT_SCHEMAS  # SPEC §2 column types, defined once in flows/loading.py

#: instrument_id → (kind, underlying, currency, multiplier, expiry, strike, option_type)
INSTRUMENTS: dict[str, tuple] = {
    "BTC": ("spot", "BTC", "USD", 1.0, None, None, None),
    "BTC-PERP": ("perpetual", "BTC", "USD", 1.0, None, None, None),
    "BTC-0328": ("future", "BTC", "USD", 1.0, EXP_0328, None, None),
    "BTC-0425": ("future", "BTC", "USD", 0.1, EXP_0425, None, None),
    "BTC-0328-50000-C": ("option", "BTC", "USD", 1.0, EXP_0328, 50000.0, "C"),
    "BTC-0328-50000-P": ("option", "BTC", "USD", 1.0, EXP_0328, 50000.0, "P"),
    "BTC-0328-40000-P": ("option", "BTC", "USD", 1.0, EXP_0328, 40000.0, "P"),
    "ETH": ("spot", "ETH", "USD", 1.0, None, None, None),
    "ETH-PERP": ("perpetual", "ETH", "USD", 1.0, None, None, None),
    "ETH-0328": ("future", "ETH", "USD", 1.0, EXP_0328, None, None),
}
#: instrument_id → (price, implied_vol)
PRICES: dict[str, tuple] = {
    "BTC": (50000.0, None),
    "BTC-PERP": (50100.0, None),
    "BTC-0328": (50200.0, None),
    "BTC-0425": (50500.0, None),
    "BTC-0328-50000-C": (2000.0, 0.5),
    "BTC-0328-50000-P": (1900.0, 0.5),
    "BTC-0328-40000-P": (10.0, 0.6),
    "ETH": (2000.0, None),
    "ETH-PERP": (2001.0, None),
    "ETH-0328": (2010.0, None),
}
FX: dict[str, float] = {"BTC": 50000.0, "ETH": 2000.0, "USDC": 1.0, "EUR": 1.25, "MEME": 0.01}
HAIRCUTS = [
    ("USDC", 0.0, 0.01), ("USDC", 1_000_000.0, 0.05),
    ("BTC", 0.0, 0.10), ("BTC", 100_000.0, 0.20), ("BTC", 500_000.0, 0.50),
]
RISK_PARAMS = [
    ("BTC", 0.1, 0.1, 0.1, 0.02, 0.01),
    ("ETH", 0.2, 0.1, 0.2, 0.03, 0.02),
]
SCENARIOS = [
    (1, 0.0, 1.0, 1.0), (2, 0.0, -1.0, 1.0),
    (3, 1.0, 1.0, 1.0), (4, 1.0, -1.0, 1.0),
    (5, -1.0, 1.0, 1.0), (6, -1.0, -1.0, 1.0),
    (7, 2.0, 0.0, 0.35), (8, -2.0, 0.0, 0.35),
]
OFFSETS = [(1, "BTC", "ETH", 1.0, 20.0, 0.5)]


def frame(table: str, rows: Iterable[Mapping | tuple]) -> pl.DataFrame:
    """A DataFrame of ``table``'s SPEC §2 schema from tuples (column order) or dicts."""
    schema = SCHEMAS[table]
    rows = list(rows)
    if rows and not isinstance(rows[0], Mapping):
        names = list(schema)
        rows = [dict(zip(names, r)) for r in rows]
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def _merged(defaults: dict, overrides: Mapping | None) -> list[tuple]:
    """Default rows keyed by id, with ``overrides`` replacing (value) or removing (None) keys."""
    merged = dict(defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return [(key, *value) if isinstance(value, tuple) else (key, value) for key, value in merged.items()]


def _rows(value, defaults: dict) -> list:
    """A list is taken as the literal rows; a dict (or None) is merged onto the defaults."""
    return list(value) if isinstance(value, list) else _merged(defaults, value)


def book(
    positions: Iterable[tuple] = (),
    *,
    collateral: Iterable[tuple] = (),
    accounts: list | None = None,
    default_mode: str = "portfolio",
    instruments: Mapping | list | None = None,
    prices: Mapping | list | None = None,
    fx_rates: Mapping | list | None = None,
    haircuts: list | None = None,
    risk_params: list | None = None,
    scenarios: list | None = None,
    offsets: list | None = None,
    as_of: dt.date = AS_OF,
    maintenance_ratio: float = 0.75,
    vol_floor: float = 0.01,
    stress_scenarios: list | None = None,
) -> MarginInputs:
    """MarginInputs from inline rows.

    ``positions``: ``(account_id, instrument_id, quantity[, source])``;
    ``collateral``: ``(account_id, asset, amount)``; ``accounts``: ``(account_id,
    margin_group, margin_mode[, lei])`` (None: every account seen, alone, in
    ``default_mode``).  ``instruments``/``prices``/``fx_rates``: a dict merged onto the
    defaults (value None removes a key) or a list of literal rows.
    ``stress_scenarios``: ``(stress_id, underlying, price_move, vol_move)`` rows (None:
    no stress table, SPEC §11).
    """
    positions = [tuple(p) + (None,) * (4 - len(p)) for p in positions]
    collateral = list(collateral)
    if accounts is None:
        seen = dict.fromkeys([p[0] for p in positions] + [c[0] for c in collateral])
        accounts = [(a, None, default_mode, None) for a in seen if a is not None]
    accounts = [tuple(a) + (None,) * (4 - len(a)) for a in accounts]
    return MarginInputs(
        as_of=as_of,
        positions=frame("positions", positions).lazy(),
        prices=frame("prices", _rows(prices, PRICES)).lazy(),
        collateral=frame("collateral", collateral).lazy(),
        fx_rates=frame("fx_rates", _rows(fx_rates, FX)).lazy(),
        instruments=frame("instruments", _rows(instruments, INSTRUMENTS)).lazy(),
        accounts=frame("accounts", accounts).lazy(),
        haircuts=frame("haircuts", HAIRCUTS if haircuts is None else haircuts),
        risk_params=frame("risk_params", RISK_PARAMS if risk_params is None else risk_params),
        scenarios=frame("scenarios", SCENARIOS if scenarios is None else scenarios),
        offsets=frame("offsets", OFFSETS if offsets is None else offsets),
        maintenance_ratio=maintenance_ratio,
        vol_floor=vol_floor,
        stress_scenarios=None if stress_scenarios is None else frame(
            "stress_scenarios", [tuple(r) + (None,) * (5 - len(r)) for r in stress_scenarios]
        ),
    )


def margin(*positions: tuple, **kwargs) -> MarginResults:
    """``compute_margin`` of ``book(positions, **kwargs)``."""
    return compute_margin(book(positions, **kwargs))


def rows(results: MarginResults, table: str, **key) -> list[dict]:
    """Rows of an output table whose columns equal ``key``."""
    selected = results.tables[table]
    for column, value in key.items():
        selected = selected.filter(pl.col(column).is_null() if value is None else pl.col(column) == value)
    return selected.to_dicts()


def row(results: MarginResults, table: str, **key) -> dict:
    """The one row of an output table whose columns equal ``key``."""
    found = rows(results, table, **key)
    assert len(found) == 1, f"{table} {key}: {len(found)} rows"
    return found[0]


def reasons(results: MarginResults, table: str) -> list[tuple[str, dict]]:
    """``(reason, row)`` of the quarantined rows of one input table, sorted."""
    import json

    found = results.tables["quarantine"].filter(pl.col("source_table") == table)
    return sorted(((r["reason"], json.loads(r["row_json"])) for r in found.to_dicts()), key=str)


def counts(results: MarginResults) -> dict[str, tuple[int, int, int]]:
    """``table → (read, used, quarantined)``."""
    return {r["table"]: (r["read"], r["used"], r["quarantined"]) for r in results.counts.to_dicts()}
