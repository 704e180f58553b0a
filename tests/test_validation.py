"""Validation and quarantine (SPEC §3): every reason code, the first applicable one,
duplicate keys, USD rules, complete flags, the account universe and counts.

One book holds every case; each quarantined position sits in its own account named
after the case, so a failure names the rule.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter

import polars as pl
import pytest

from books import EXP_0328, EXP_0425, FX, INSTRUMENTS, PRICES, RISK_PARAMS, margin, row

NAN, INF = math.nan, math.inf
EXPIRED = dt.date(2025, 3, 1)
EXP_0627 = dt.date(2025, 6, 27)

BAD_INSTRUMENTS = [
    ("I-NULLKIND", None, "BTC", "USD", 1.0, None, None, None),
    ("I-BADKIND", "swap", "BTC", "USD", 1.0, None, None, None),
    ("I-MULT0", "future", "BTC", "USD", 0.0, EXP_0328, None, None),
    ("I-MULTNULL", "perpetual", "BTC", "USD", None, None, None, None),
    ("I-NOUND", "perpetual", None, "USD", 1.0, None, None, None),
    ("I-NOCCY", "perpetual", "BTC", None, 1.0, None, None, None),
    ("I-FUT-NOEXP", "future", "BTC", "USD", 1.0, None, None, None),
    ("I-OPT-NOEXP", "option", "BTC", "USD", 1.0, None, 50000.0, "C"),
    ("I-OPT-NOSTRIKE", "option", "BTC", "USD", 1.0, EXP_0328, None, "C"),
    ("I-OPT-K0", "option", "BTC", "USD", 1.0, EXP_0328, 0.0, "P"),
    ("I-OPT-BADTYPE", "option", "BTC", "USD", 1.0, EXP_0328, 50000.0, "X"),
    ("I-OPT-NOTYPE", "option", "BTC", "USD", 1.0, EXP_0328, 50000.0, None),
    (None, "perpetual", "BTC", "USD", 1.0, None, None, None),
    (None, "perpetual", "BTC", "USD", 1.0, None, None, None),
]
DUPLICATE_INSTRUMENTS = [
    ("I-DUP", "perpetual", "BTC", "USD", 1.0, None, None, None),
    ("I-DUP", "perpetual", "BTC", "USD", 1.0, None, None, None),
    ("I-DUP2", "perpetual", "BTC", "USD", 1.0, None, None, None),   # valid copy → duplicate_key
    ("I-DUP2", None, "BTC", "USD", 1.0, None, None, None),          # invalid copy → invalid_value
]
GOOD_INSTRUMENTS = [
    ("BTC-0301", "future", "BTC", "USD", 1.0, EXPIRED, None, None),
    ("BTC-0301-C", "option", "BTC", "USD", 1.0, EXPIRED, 50000.0, "C"),
    ("BTC-0627", "future", "BTC", "USD", 1.0, EXP_0627, None, None),
    ("BTC-NEG", "perpetual", "BTC", "USD", 1.0, None, None, None),
    ("ETH-0425", "future", "ETH", "USD", 1.0, EXP_0425, None, None),
    ("BTC-C-NOVOL", "option", "BTC", "USD", 1.0, EXP_0328, 55000.0, "C"),
    ("BTC-C-VOL0", "option", "BTC", "USD", 1.0, EXP_0328, 55000.0, "C"),
    ("BTC-C-VOLNAN", "option", "BTC", "USD", 1.0, EXP_0328, 55000.0, "C"),
    ("BTC-C-VOLINF", "option", "BTC", "USD", 1.0, EXP_0328, 55000.0, "C"),
    ("BTC-C-NOVOL-JPY", "option", "BTC", "JPY", 1.0, EXP_0328, 55000.0, "C"),
    ("BTC-JPY", "perpetual", "BTC", "JPY", 1.0, None, None, None),
    ("BTC-CHF", "perpetual", "BTC", "CHF", 1.0, None, None, None),
    ("BTC-GBP", "perpetual", "BTC", "GBP", 1.0, None, None, None),
    ("DOGE-PERP", "perpetual", "DOGE", "USD", 1.0, None, None, None),
    ("DOGE-JPY-PERP", "perpetual", "DOGE", "JPY", 1.0, None, None, None),
    ("ADA", "spot", "ADA", "USD", 1.0, None, None, None),
    ("ADA-PERP", "perpetual", "ADA", "USD", 1.0, None, None, None),
    ("ADA-0328", "future", "ADA", "USD", 1.0, EXP_0328, None, None),
    ("XRP", "spot", "XRP", "JPY", 1.0, None, None, None),
    ("XRP-PERP", "perpetual", "XRP", "USD", 1.0, None, None, None),
    ("LTC", "spot", "LTC", "USD", 1.0, None, None, None),
    ("LTC-PERP", "perpetual", "LTC", "USD", 1.0, None, None, None),
    ("BNB-PERP", "perpetual", "BNB", "USD", 1.0, None, None, None),
]
PRICE_ROWS = [
    ("BTC-NEG", -1.0, None), ("ETH-0425", 2050.0, None), ("ETH-0425", NAN, None),
    ("BTC-C-NOVOL", 100.0, None), ("BTC-C-VOL0", 100.0, 0.0), ("BTC-C-VOLNAN", 100.0, NAN),
    ("BTC-C-VOLINF", 100.0, INF), ("BTC-C-NOVOL-JPY", 100.0, None),
    ("BTC-JPY", 50000.0, None), ("BTC-CHF", 50000.0, None), ("BTC-GBP", 50000.0, None),
    ("DOGE-PERP", 0.1, None), ("DOGE-JPY-PERP", 0.1, None), ("ADA-PERP", 0.5, None), ("XRP", 0.5, None),
    ("XRP-PERP", 0.5, None), ("LTC", 80.0, None), ("LTC-PERP", 80.0, None), ("BNB-PERP", 600.0, None),
    ("GHOST", 1.0, None),                                  # unknown instrument: ignored, counted as used
    ("P-NULL", None, None), ("P-NAN", NAN, None), ("P-INF", INF, None), ("P-ZERO", 0.0, None),
    (None, 5.0, None), (None, -1.0, None),
    ("P-NEG-DUP", -1.0, None), ("P-NEG-DUP", -1.0, None),  # duplicate_key comes before invalid_price
]
FX_ROWS = [
    ("USD", 1.0), ("USD", 1.01),   # 1.01 → invalid_value; the 1.0 copy → duplicate_key; USD stays 1.0
    ("CHF", 0.0), ("GBP", 1.3), ("GBP", 1.3), ("SEK", None), ("NOK", NAN), (None, 2.0),
]
POSITIONS = [
    ("Q-UNKNOWN-DUP", "I-DUP", 1.0), ("Q-UNKNOWN-DUP2", "I-DUP2", 1.0), ("Q-UNKNOWN-BAD", "I-MULT0", 1.0),
    ("Q-UNKNOWN", "NOPE", 1.0),
    ("Q-NULLQTY", "NOPE", None), ("Q-NANQTY", "BTC-PERP", NAN), ("Q-INFQTY", "BTC-PERP", -INF),
    (None, "BTC-PERP", 1.0), ("Q-NULLINSTR", None, 1.0),
    ("Q-EXPIRED", "BTC-0301", 1.0), ("Q-EXPIRED-OPT", "BTC-0301-C", -1.0),
    ("Q-NOPRICE", "BTC-0627", 1.0), ("Q-BADPRICE", "BTC-NEG", 1.0), ("Q-DUPPRICE", "ETH-0425", 1.0),
    ("Q-NOVOL", "BTC-C-NOVOL", -1.0), ("Q-VOL0", "BTC-C-VOL0", -1.0), ("Q-VOLNAN", "BTC-C-VOLNAN", -1.0),
    ("Q-VOLINF", "BTC-C-VOLINF", -1.0), ("Q-NOVOL-JPY", "BTC-C-NOVOL-JPY", -1.0),
    ("Q-FX-JPY", "BTC-JPY", 1.0), ("Q-FX-CHF", "BTC-CHF", 1.0), ("Q-FX-GBP", "BTC-GBP", 1.0),
    ("Q-DOGE-JPY", "DOGE-JPY-PERP", 1.0), ("Q-XRP-SPOT", "XRP", 1.0),
    ("Q-NOIDX", "DOGE-PERP", 1.0), ("Q-NOIDX-PRICE", "ADA-PERP", 1.0), ("Q-NOIDX-FX", "XRP-PERP", 1.0),
    ("Q-NOIDX-NORISK", "BNB-PERP", 1.0),
    ("Q-ADA-SPOT", "ADA", 1.0), ("Q-ADA-FUT", "ADA-0328", 1.0),
    ("Q-NORISK", "LTC-PERP", 1.0), ("Q-NORISK-SPOT", "LTC", 1.0),
    ("OK", "BTC-PERP", 1.0), ("OK-MIXED", "BTC-PERP", 1.0), ("OK-MIXED", "NOPE", 1.0),
    ("A-BADMODE", "BTC-PERP", 1.0),
]
EXPECTED_POSITIONS = {
    "unknown_instrument": ["Q-UNKNOWN-DUP", "Q-UNKNOWN-DUP2", "Q-UNKNOWN-BAD", "Q-UNKNOWN", "OK-MIXED"],
    "invalid_value": ["Q-NULLQTY", "Q-NANQTY", "Q-INFQTY", None, "Q-NULLINSTR"],
    "expired_instrument": ["Q-EXPIRED", "Q-EXPIRED-OPT"],
    "missing_price": ["Q-NOPRICE", "Q-BADPRICE", "Q-DUPPRICE", "Q-ADA-SPOT", "Q-ADA-FUT"],
    "missing_vol": ["Q-NOVOL", "Q-VOL0", "Q-VOLNAN", "Q-VOLINF", "Q-NOVOL-JPY"],
    "missing_fx": ["Q-FX-JPY", "Q-FX-CHF", "Q-FX-GBP", "Q-DOGE-JPY", "Q-XRP-SPOT"],
    "missing_index": ["Q-NOIDX", "Q-NOIDX-PRICE", "Q-NOIDX-FX", "Q-NOIDX-NORISK"],
    "missing_risk_params": ["Q-NORISK", "Q-NORISK-SPOT"],
}
COLLATERAL = [
    ("C-NULLAMT", "USDC", None), ("C-NANAMT", "USDC", NAN), (None, "USDC", 5.0), ("C-NULLASSET", None, 5.0),
    ("C-JPY", "JPY", 100.0), ("C-CHF", "CHF", 100.0), ("C-SEK", "SEK", 100.0),
    ("OK", "USD", 100.0), ("OK", "USDC", 100.0),
]
ACCOUNTS = [
    ("OK", None, "portfolio"), ("A-BADMODE", None, "hedge"), ("A-NULLMODE", None, None), (None, None, "cross"),
    ("A-DUP", None, "cross"), ("A-DUP", None, "cross"),
    ("A-DUP2", None, "cross"), ("A-DUP2", None, "hedge"),
    ("A-LONELY", None, "cross"),
]


@pytest.fixture(scope="module")
def results():
    return margin(
        *POSITIONS,
        collateral=COLLATERAL,
        accounts=ACCOUNTS,
        instruments=[(k, *v) for k, v in INSTRUMENTS.items()] + BAD_INSTRUMENTS + DUPLICATE_INSTRUMENTS
        + GOOD_INSTRUMENTS,
        prices=[(k, *v) for k, v in PRICES.items()] + PRICE_ROWS,
        fx_rates=[*FX.items()] + FX_ROWS,
        risk_params=RISK_PARAMS + [("DOGE", 0.3, 0.1, 0.3, 0.05, 0.05), ("ADA", 0.3, 0.1, 0.3, 0.05, 0.05),
                                   ("XRP", 0.3, 0.1, 0.3, 0.05, 0.05)],
    )


def quarantined(results, table: str, key: str) -> Counter:
    frame = results.tables["quarantine"].filter(pl.col("source_table") == table)
    return Counter((r["reason"], json.loads(r["row_json"])[key]) for r in frame.to_dicts())


def test_position_reasons_first_applicable(results):
    expect = Counter((reason, account) for reason, accounts in EXPECTED_POSITIONS.items() for account in accounts)
    assert quarantined(results, "positions", "account_id") == expect


def test_instrument_reasons(results):
    invalid = [r[0] for r in BAD_INSTRUMENTS] + ["I-DUP2"]
    expect = Counter([("invalid_value", i) for i in invalid] + [("duplicate_key", "I-DUP")] * 2
                     + [("duplicate_key", "I-DUP2")])
    assert quarantined(results, "instruments", "instrument_id") == expect


def test_price_reasons(results):
    expect = Counter([
        ("invalid_price", "BTC-NEG"), ("invalid_value", "ETH-0425"), ("duplicate_key", "ETH-0425"),
        ("invalid_value", "P-NULL"), ("invalid_value", "P-NAN"), ("invalid_value", "P-INF"),
        ("invalid_price", "P-ZERO"), ("invalid_value", None), ("invalid_value", None),
        ("duplicate_key", "P-NEG-DUP"), ("duplicate_key", "P-NEG-DUP"),
    ])
    assert quarantined(results, "prices", "instrument_id") == expect


def test_fx_reasons_and_usd_stays_one(results):
    expect = Counter([
        ("invalid_value", "USD"), ("duplicate_key", "USD"), ("invalid_value", "CHF"),
        ("duplicate_key", "GBP"), ("duplicate_key", "GBP"), ("invalid_value", "SEK"), ("invalid_value", "NOK"),
        ("invalid_value", None),
    ])
    assert quarantined(results, "fx_rates", "currency") == expect
    assert row(results, "collateral_valuation", account_id="OK", asset="USD")["usd_rate"] == 1.0
    assert row(results, "position_margin", account_id="OK", instrument_id="BTC-PERP")["mv_usd"] == 50100.0


def test_collateral_reasons(results):
    expect = Counter([
        ("invalid_value", "C-NULLAMT"), ("invalid_value", "C-NANAMT"), ("invalid_value", None),
        ("invalid_value", "C-NULLASSET"), ("missing_fx", "C-JPY"), ("missing_fx", "C-CHF"), ("missing_fx", "C-SEK"),
    ])
    assert quarantined(results, "collateral", "account_id") == expect


def test_account_reasons(results):
    expect = Counter([
        ("invalid_value", "A-BADMODE"), ("invalid_value", "A-NULLMODE"), ("invalid_value", None),
        ("duplicate_key", "A-DUP"), ("duplicate_key", "A-DUP"), ("duplicate_key", "A-DUP2"),
        ("invalid_value", "A-DUP2"),
    ])
    assert quarantined(results, "accounts", "account_id") == expect


def test_counts_reconcile(results):
    got = {r["table"]: (r["read"], r["used"], r["quarantined"]) for r in results.counts.to_dicts()}
    n_positions = len(POSITIONS)
    n_quarantined = sum(len(v) for v in EXPECTED_POSITIONS.values())
    assert got["positions"] == (n_positions, n_positions - n_quarantined, n_quarantined)
    n_prices = len(PRICES) + len(PRICE_ROWS)
    assert got["prices"] == (n_prices, n_prices - 11, 11)  # GHOST counted as used
    assert got["fx_rates"] == (len(FX) + len(FX_ROWS), len(FX) + 0, 8)
    assert got["collateral"] == (9, 2, 7)
    n_instruments = len(INSTRUMENTS) + len(BAD_INSTRUMENTS) + len(DUPLICATE_INSTRUMENTS) + len(GOOD_INSTRUMENTS)
    assert got["instruments"] == (n_instruments, n_instruments - len(BAD_INSTRUMENTS) - 4, len(BAD_INSTRUMENTS) + 4)
    assert got["accounts"] == (9, 2, 7)
    for read, used, quarantined_rows in got.values():
        assert read == used + quarantined_rows


def test_account_universe_includes_ids_of_quarantined_rows(results):
    ids = set(results.tables["account_margin"]["account_id"])
    seen = {p[0] for p in POSITIONS} | {c[0] for c in COLLATERAL} | {"OK", "A-LONELY"}
    # every valid accounts row and every id seen in positions or collateral; not an id only in a
    # quarantined accounts row (A-NULLMODE, A-DUP, A-DUP2), never a null id
    assert ids == seen - {None}


def test_complete_flags(results):
    complete = dict(results.tables["account_margin"].select("account_id", "complete").iter_rows())
    incomplete = {a for accounts in EXPECTED_POSITIONS.values() for a in accounts if a is not None}
    incomplete |= {"C-NULLAMT", "C-NANAMT", "C-NULLASSET", "C-JPY", "C-CHF", "C-SEK", "A-BADMODE"}
    assert {a for a, ok in complete.items() if not ok} == incomplete
    assert complete["OK"] and complete["A-LONELY"]


def test_account_with_quarantined_accounts_row_is_margined_at_the_maximum(results):
    got = row(results, "account_margin", account_id="A-BADMODE")
    # BTC-PERP +1: gross = net = 5010, portfolio = SR = 5010 → im = max = 5010
    assert got["margin_mode"] is None and got["margin_group"] is None
    assert got["im"] == 5010.0 and got["mm"] == 3757.5
    codes = set(results.warnings.filter(pl.col("account_id") == "A-BADMODE")["code"])
    assert codes == {"account_not_in_accounts", "account_row_quarantined"}


def test_account_seen_only_in_quarantined_rows_has_zero_figures(results):
    got = row(results, "account_margin", account_id="Q-UNKNOWN")
    assert (got["position_count"], got["gross_im"], got["im"], got["equity"], got["status"]) == (0, 0.0, 0.0, 0.0, "ok")
    assert got["complete"] is False
