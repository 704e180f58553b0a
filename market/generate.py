"""Synthetic inputs for a crypto derivatives venue (SPEC §2 layout).

``generate_day(root, D, n)`` writes ``root/date=D/{positions,prices,collateral,
fx_rates,instruments}.parquet`` and, when absent, the reference tables
(``root/reference/``: the committed methodology defaults plus a synthetic
``accounts.parquet``).

Design, briefly:

* **Market.** Index prices follow a mean-reverting (log Ornstein-Uhlenbeck) walk with
  correlated daily shocks, stepped day by day from ``EPOCH``; the walk depends only on
  the seed, so day ``D`` is deterministic and consecutive days are coherent. ATM
  volatility, futures basis, perpetual premium, stablecoin pegs and two small tokens
  (``MEME``; ``PEPE``, which has no haircut row and is therefore ineligible) move too.
* **Listings.** Futures expire on the last Friday of the month (the next 2 months and
  the next 3 quarters), options on Fridays (next 2 weeklies, 3 monthlies, 2 quarterlies),
  always after ``D``. An expiry's strike grid is fixed when it is listed (from the index
  on its listing date), so a held strike keeps its id while the expiry lives. Options
  are priced with the engine's Black-76 (``transforms.valuation``: F = index, zero rates,
  T = days/365) off a volatility smile.
* **Book.** Every account has a fixed plan drawn from the seed only: a strategy
  (directional, delta-hedged option seller, calendar spread, basis trade, BTC/ETH pair,
  option buyer, multi-leg market maker, or collateral only), a size, a margin mode, a
  margin group, an LEI and "legs" expressed relative to the calendar (e.g. "the
  second monthly future", "the ATM+2 call of the next quarterly"). A day resolves legs
  to that day's instruments, so books are stable and roll at expiries; a few legs are
  temporarily closed or resized each day and option sellers re-hedge their delta
  daily. Each leg is split over 1-3 ``source`` values (sometimes with opposite signs).
* **Collateral** is sized from a rough margin estimate times an account multiplier, so
  most accounts are healthy, a few % are in margin call and a few % in liquidation.

Everything is vectorised (numpy / polars); loops run only over underlyings, expiries
and strategies. The same (seed, date, n_accounts) gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from market import reference_defaults as refdef
from transforms.valuation import black76_value, option_greeks

REFERENCE_SOURCE_DIR = Path(__file__).resolve().parent.parent / "data" / "reference"

EPOCH = dt.date(2015, 1, 1)

# --- market constants --------------------------------------------------------------
UNDERLYINGS = ("BTC", "ETH", "SOL", "DOGE")
N_UND = len(UNDERLYINGS)
OPTION_UNDERLYINGS = ("BTC", "ETH", "SOL")  # DOGE has no options
N_OPT_UND = len(OPTION_UNDERLYINGS)
NOMINAL_SPOT = np.array([62_000.0, 3_100.0, 150.0, 0.16])
DAILY_VOL = np.array([0.025, 0.032, 0.045, 0.05])
ATM_VOL = np.array([0.55, 0.65, 0.85])
PERP_CCY = ("USD", "USD", "USDT", "USDT")
FUT_MULT = np.array([0.1, 1.0, 10.0, 1000.0])
OPT_MULT = np.array([1.0, 1.0, 10.0])
STRIKE_LOG_STEP = np.array([0.06, 0.07, 0.09])
STRIKE_TICK = np.array([500.0, 25.0, 1.0])
OPTION_MIN_PRICE = np.array([5.0, 0.5, 0.01])  # minimum mark (USD), never 0
N_STRIKES = 15
ATM_J = N_STRIKES // 2
# lots (contracts) per kind [spot, perp, future, option] and underlying
LOT = np.array(
    [
        [0.0001, 0.001, 0.01, 1.0],  # spot (units)
        [0.001, 0.01, 0.1, 1.0],  # perpetual
        [1.0, 1.0, 1.0, 1.0],  # future (contracts)
        [0.01, 0.1, 1.0, 1.0],  # option (contracts; DOGE unused)
    ]
)
SPOT, PERP, FUT, OPT = 0, 1, 2, 3
KIND_NAMES = ("spot", "perpetual", "future", "option")

# expiry classes: 0 weekly (every Friday), 1 monthly (last Friday), 2 quarterly
WEEKLY, MONTHLY, QUARTERLY = 0, 1, 2
FUT_SLOTS = ((MONTHLY, 0), (MONTHLY, 1), (QUARTERLY, 0), (QUARTERLY, 1), (QUARTERLY, 2))
FUT_SLOT_P = (0.35, 0.20, 0.25, 0.12, 0.08)
OPT_SLOTS = (
    (WEEKLY, 0), (WEEKLY, 1), (MONTHLY, 0), (MONTHLY, 1), (MONTHLY, 2),
    (QUARTERLY, 0), (QUARTERLY, 1),
)
OPT_SLOT_P = (0.20, 0.10, 0.25, 0.15, 0.10, 0.12, 0.08)
LISTING_DAYS = {WEEKLY: 21, MONTHLY: 100, QUARTERLY: 200}

# collateral assets (order matters: columns of the holdings matrix)
ASSETS = ("USD", "USDC", "USDT", "BTC", "ETH", "SOL", "MEME", refdef.INELIGIBLE_ASSET)
N_ASSETS = len(ASSETS)
I_USD, I_USDC, I_USDT, I_BTC, I_ETH, I_SOL, I_MEME, I_PEPE = range(N_ASSETS)
ASSET_DECIMALS = np.array([2, 2, 2, 8, 8, 6, 0, 0])
NOMINAL_MEME, NOMINAL_PEPE = 0.012, 0.000011

SOURCES = ("binance", "okx", "deribit", "cme", None)

# strategies
DIRECTIONAL, OPTION_SELLER, CALENDAR, BASIS, PAIRS, OPTION_BUYER, MARKET_MAKER, COLLATERAL_ONLY = range(8)
STRATEGY_NAMES = (
    "directional", "option_seller", "calendar", "basis", "pairs", "option_buyer",
    "market_maker", "collateral_only",
)
STRATEGY_P = (0.26, 0.12, 0.09, 0.09, 0.07, 0.14, 0.19, 0.04)
# preference for portfolio margining (higher = more likely portfolio)
STRATEGY_MODE_SCORE = (0.0, 1.2, 0.8, 0.8, 0.8, 0.3, 1.5, 0.5)
MODES = ("isolated", "cross", "portfolio")
MODE_P = (0.30, 0.40, 0.30)

LOU_PREFIXES = ("5493", "2138", "9695", "8945", "7245", "3912", "2549", "6354")
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# =====================================================================================
# small helpers
# =====================================================================================
def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *stream])


def _exact_labels(rng: np.random.Generator, n: int, probs) -> np.ndarray:
    """Labels 0..k-1 with counts as close as possible to n*probs (largest remainder),
    each label at least once when n >= k, in random order."""
    probs = np.asarray(probs, dtype=float)
    probs = probs / probs.sum()
    k = len(probs)
    raw = probs * n
    counts = np.floor(raw).astype(np.int64)
    if n >= k:
        counts = np.maximum(counts, 1)
    while counts.sum() > n:
        counts[np.argmax(counts)] -= 1
    rem = raw - counts
    while counts.sum() < n:
        i = int(np.argmax(rem))
        counts[i] += 1
        rem[i] = -np.inf
    labels = np.repeat(np.arange(k, dtype=np.int8), counts)
    rng.shuffle(labels)
    return labels


def _exact_mask(rng: np.random.Generator, n: int, frac: float, minimum: int = 1) -> np.ndarray:
    k = min(n, max(minimum, int(round(frac * n))))
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=k, replace=False)] = True
    return mask


def option_value_and_greeks(F, K, T, sigma, is_call) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Black-76 value, delta, gamma and vega (per 1.00 vol) with zero rates, as numpy
    arrays: the engine's own pricing (``transforms.valuation``, SPEC §4) applied to a
    small frame of the given forwards, strikes, years, vols and call flags."""
    F, K, T, sigma, is_call = np.broadcast_arrays(
        *(np.asarray(a, dtype=float) for a in (F, K, T, sigma)), np.asarray(is_call, dtype=bool)
    )
    options = pl.DataFrame({
        "forward": F.ravel(), "strike": K.ravel(), "years": np.maximum(T, 0.0).ravel(), "sigma": sigma.ravel(),
        "option_type": np.where(is_call.ravel(), "C", "P"),
    })
    forward, strike, years, vol, option_type = (
        pl.col(c) for c in ("forward", "strike", "years", "sigma", "option_type")
    )
    delta, gamma, vega_per_point, _theta = option_greeks(forward, strike, vol, years, option_type)
    priced = options.select(
        black76_value(forward, strike, vol, years, option_type).alias("value"), delta, gamma,
        (vega_per_point * 100.0).alias("vega"),
    )
    return tuple(priced.get_column(c).to_numpy().reshape(F.shape) for c in ("value", "delta", "gamma", "vega"))


def _lei_strings(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n valid ISO 17442 LEIs (as a numpy unicode array) and their check digits."""
    prefix_idx = rng.integers(0, len(LOU_PREFIXES), size=n)
    prefixes = np.array([[ALNUM.index(c) for c in p] for p in LOU_PREFIXES], dtype=np.int64)
    body = np.empty((n, 18), dtype=np.int64)
    body[:, :4] = prefixes[prefix_idx]
    body[:, 4:6] = 0
    # entity part: mostly letters and digits (36 symbols)
    body[:, 6:] = rng.integers(0, 36, size=(n, 12))
    # MOD 97-10 over the base-10 expansion (letters are two digits: A=10 .. Z=35)
    r = np.zeros(n, dtype=np.int64)
    for c in range(18):
        v = body[:, c]
        r = np.where(v < 10, (r * 10 + v) % 97, (r * 100 + v) % 97)
    r = (r * 100) % 97
    check = 98 - r
    chars = np.empty((n, 20), dtype=np.uint32)
    alnum_codes = np.array([ord(c) for c in ALNUM], dtype=np.uint32)
    chars[:, :18] = alnum_codes[body]
    chars[:, 18] = ord("0") + check // 10
    chars[:, 19] = ord("0") + check % 10
    return np.ascontiguousarray(chars).view("<U20").reshape(n), check


def _round_to_lot(q: np.ndarray, lot: np.ndarray) -> np.ndarray:
    return np.round(np.round(q / lot) * lot, 8)


def _account_ids(n: int) -> pl.Series:
    width = max(6, len(str(n)))
    idx = pl.Series("account_id", np.arange(n, dtype=np.int64))
    return pl.select(
        pl.concat_str([pl.lit("ACC"), idx.cast(pl.String).str.zfill(width)])
    ).to_series().alias("account_id")


def _account_id(i: int, n: int) -> str:
    return "ACC" + str(i).zfill(max(6, len(str(n))))


# =====================================================================================
# market path
# =====================================================================================
_BLOCK = 1024
_N_SHOCKS = 16


@functools.lru_cache(maxsize=8)
def _market_path(seed: int, n_blocks: int) -> dict[str, np.ndarray]:
    """Daily state from EPOCH for n_blocks*_BLOCK days (extending never changes earlier
    days: each block draws its shocks from its own stream)."""
    base_rng = _rng(seed, 0)
    base_spot = NOMINAL_SPOT * np.exp(0.10 * base_rng.standard_normal(N_UND))
    base_meme = NOMINAL_MEME * math.exp(0.2 * base_rng.standard_normal())
    base_pepe = NOMINAL_PEPE * math.exp(0.2 * base_rng.standard_normal())
    base_atm = ATM_VOL * np.exp(0.08 * base_rng.standard_normal(N_OPT_UND))
    n_days = n_blocks * _BLOCK
    shocks = np.concatenate(
        [_rng(seed, 1, b).standard_normal((_BLOCK, _N_SHOCKS)) for b in range(n_blocks)]
    )
    phi_px, phi_vol, phi_basis = 0.99, 0.97, 0.95
    # correlated crypto shocks: common factor
    common = shocks[:, 0:1]
    eps_spot = DAILY_VOL * (0.75 * common + math.sqrt(1 - 0.75**2) * shocks[:, 1:5])
    eps_meme = 0.08 * (0.5 * common[:, 0] + math.sqrt(0.75) * shocks[:, 5])
    eps_pepe = 0.10 * shocks[:, 6]
    eps_vol = 0.04 * (0.5 * -common + math.sqrt(0.75) * shocks[:, 7:10])  # vol up when px down
    eps_basis = 0.01 * shocks[:, 10:14]
    x = np.zeros((n_days, N_UND))
    xm = np.zeros(n_days)
    xp = np.zeros(n_days)
    v = np.zeros((n_days, N_OPT_UND))
    b = np.zeros((n_days, N_UND))
    # stationary starting points (so day 0 is not special)
    x_t = eps_spot[0] / math.sqrt(1 - phi_px**2)
    xm_t = eps_meme[0] / math.sqrt(1 - phi_px**2)
    xp_t = eps_pepe[0] / math.sqrt(1 - phi_px**2)
    v_t = eps_vol[0] / math.sqrt(1 - phi_vol**2)
    b_t = eps_basis[0] / math.sqrt(1 - phi_basis**2)
    for t in range(n_days):  # loop over days (a few thousand), vectorised over assets
        if t:
            x_t = phi_px * x_t + eps_spot[t]
            xm_t = phi_px * xm_t + eps_meme[t]
            xp_t = phi_px * xp_t + eps_pepe[t]
            v_t = phi_vol * v_t + eps_vol[t]
            b_t = phi_basis * b_t + eps_basis[t]
        x[t], xm[t], xp[t], v[t], b[t] = x_t, xm_t, xp_t, v_t, b_t
    return {
        "spot": base_spot * np.exp(x),
        "meme": base_meme * np.exp(xm),
        "pepe": base_pepe * np.exp(xp),
        "atm": np.clip(base_atm * np.exp(v), 0.2, 2.0),
        "basis": 0.07 + b,  # annualised futures basis
        "premium": 0.0005 * shocks[:, 14:15] * np.ones((1, N_UND)),
        "peg": shocks[:, 15],
        "base_spot": base_spot,
    }


def _day_index(d: dt.date) -> int:
    idx = (d - EPOCH).days
    if idx < 0:
        raise ValueError(f"dates before {EPOCH.isoformat()} are not supported: {d}")
    return idx


def _path_for(seed: int, idx: int) -> dict[str, np.ndarray]:
    return _market_path(int(seed), idx // _BLOCK + 1)


@dataclass(frozen=True)
class Market:
    spot: np.ndarray  # (N_UND,) USD index
    meme: float
    pepe: float
    atm: np.ndarray  # (N_OPT_UND,)
    basis: np.ndarray  # (N_UND,)
    premium: np.ndarray  # (N_UND,)
    usdc: float
    usdt: float
    base_spot: np.ndarray


def market_on(seed: int, d: dt.date) -> Market:
    idx = _day_index(d)
    p = _path_for(seed, idx)
    peg = float(p["peg"][idx])
    return Market(
        spot=p["spot"][idx].copy(),
        meme=float(p["meme"][idx]),
        pepe=float(p["pepe"][idx]),
        atm=p["atm"][idx].copy(),
        basis=p["basis"][idx].copy(),
        premium=p["premium"][idx].copy(),
        usdc=round(0.9998 + 0.0002 * math.tanh(peg), 6),
        usdt=round(1.0002 + 0.0003 * math.tanh(-peg), 6),
        base_spot=p["base_spot"].copy(),
    )


def _spot_on_day_index(seed: int, idx: int) -> np.ndarray:
    idx = max(0, idx)
    return _path_for(seed, idx)["spot"][idx]


# =====================================================================================
# calendar
# =====================================================================================
def _last_friday(year: int, month: int) -> dt.date:
    nxt = dt.date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - 4) % 7)


def _next_fridays(d: dt.date, count: int) -> list[dt.date]:
    first = d + dt.timedelta(days=(4 - d.weekday()) % 7 or 7)
    return [first + dt.timedelta(days=7 * i) for i in range(count)]


def _next_month_ends(d: dt.date, count: int, quarterly: bool) -> list[dt.date]:
    out: list[dt.date] = []
    y, m = d.year, d.month
    while len(out) < count:
        if not quarterly or m % 3 == 0:
            f = _last_friday(y, m)
            if f > d:
                out.append(f)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _expiry_class(f: dt.date) -> int:
    if f == _last_friday(f.year, f.month):
        return QUARTERLY if f.month % 3 == 0 else MONTHLY
    return WEEKLY


def _expiry_number(f: dt.date, cls: int) -> int:
    """Global sequence number of an expiry within its class."""
    if cls == WEEKLY:
        return (f - dt.date(2015, 1, 2)).days // 7  # 2015-01-02 is a Friday
    if cls == MONTHLY:
        return f.year * 12 + f.month - 1
    return f.year * 4 + (f.month - 1) // 3


def _slot_dates(d: dt.date) -> dict[tuple[int, int], dt.date]:
    dates: dict[tuple[int, int], dt.date] = {}
    for k, f in enumerate(_next_fridays(d, 3)):
        dates[(WEEKLY, k)] = f
    for k, f in enumerate(_next_month_ends(d, 3, quarterly=False)):
        dates[(MONTHLY, k)] = f
    for k, f in enumerate(_next_month_ends(d, 3, quarterly=True)):
        dates[(QUARTERLY, k)] = f
    return dates


def _strike_grid(seed: int, u: int, expiry: dt.date) -> np.ndarray:
    """Strikes of one option expiry, fixed at its listing date."""
    listing = expiry - dt.timedelta(days=LISTING_DAYS[_expiry_class(expiry)])
    s_list = float(_spot_on_day_index(seed, (listing - EPOCH).days)[u])
    tick = STRIKE_TICK[u]
    raw = s_list * np.exp((np.arange(N_STRIKES) - ATM_J) * STRIKE_LOG_STEP[u])
    k = np.maximum(np.round(raw / tick) * tick, tick)
    for i in range(1, N_STRIKES):  # strictly increasing
        k[i] = max(k[i], k[i - 1] + tick)
    return k


def _fmt_strike(k: float) -> str:
    return str(int(k)) if float(k).is_integer() else repr(float(k))


@dataclass
class Listing:
    instruments: pl.DataFrame
    prices: pl.DataFrame
    fx_rates: pl.DataFrame
    # per-instrument arrays (row order of instruments)
    ids: list[str]
    kind: np.ndarray
    und: np.ndarray
    mult: np.ndarray
    price: np.ndarray  # instrument currency
    fx: np.ndarray  # USD per unit of instrument currency
    delta: np.ndarray
    gamma: np.ndarray
    vega: np.ndarray  # per 1.00 vol
    strike: np.ndarray
    is_call: np.ndarray
    # lookups
    first_idx: np.ndarray  # (3,) global index of the first live expiry of each class
    spot_idx: np.ndarray  # (N_UND,)
    perp_idx: np.ndarray  # (N_UND,)
    fut_idx: np.ndarray  # (N_UND, 3, 3) by (class, k)
    opt_idx: np.ndarray  # (N_OPT_UND, 3, 3, N_STRIKES, 2) by (class, k, j, C/P)
    market: Market
    slots: dict


def build_listing(seed: int, d: dt.date) -> Listing:
    mkt = market_on(seed, d)
    slots = _slot_dates(d)
    fx_of = {"USD": 1.0, "USDC": mkt.usdc, "USDT": mkt.usdt}
    rows: dict[str, list] = {k: [] for k in (
        "instrument_id", "kind", "underlying", "currency", "multiplier", "expiry", "strike",
        "option_type", "price", "implied_vol", "delta", "gamma", "vega", "und", "kind_code",
    )}

    def add(iid, kind_code, u, ccy, mult, expiry, strike, otype, price, iv, delta, gamma, vega):
        rows["instrument_id"].append(iid)
        rows["kind"].append(KIND_NAMES[kind_code])
        rows["kind_code"].append(kind_code)
        rows["underlying"].append(UNDERLYINGS[u])
        rows["und"].append(u)
        rows["currency"].append(ccy)
        rows["multiplier"].append(float(mult))
        rows["expiry"].append(expiry)
        rows["strike"].append(strike)
        rows["option_type"].append(otype)
        rows["price"].append(float(price))
        rows["implied_vol"].append(iv)
        rows["delta"].append(float(delta))
        rows["gamma"].append(float(gamma))
        rows["vega"].append(float(vega))

    spot_idx = np.full(N_UND, -1, dtype=np.int64)
    perp_idx = np.full(N_UND, -1, dtype=np.int64)
    fut_idx = np.full((N_UND, 3, 3), -1, dtype=np.int64)
    opt_idx = np.full((N_OPT_UND, 3, 3, N_STRIKES, 2), -1, dtype=np.int64)

    fut_dates = sorted({slots[s] for s in FUT_SLOTS})
    opt_dates = sorted({slots[s] for s in OPT_SLOTS})
    for u, name in enumerate(UNDERLYINGS):
        S = float(mkt.spot[u])
        spot_idx[u] = len(rows["instrument_id"])
        add(name, SPOT, u, "USD", 1.0, None, None, None, S, None, 1.0, 0.0, 0.0)
        perp_idx[u] = len(rows["instrument_id"])
        ccy = PERP_CCY[u]
        perp_px = S * (1.0 + mkt.premium[u]) / fx_of[ccy]
        add(f"{name}-PERP", PERP, u, ccy, 1.0, None, None, None, perp_px, None, 1.0, 0.0, 0.0)
        date_to_idx = {}
        for f in fut_dates:
            T = (f - d).days / 365.0
            date_to_idx[f] = len(rows["instrument_id"])
            add(f"{name}-{f:%Y%m%d}", FUT, u, "USD", FUT_MULT[u], f, None, None,
                S * math.exp(mkt.basis[u] * T), None, 1.0, 0.0, 0.0)
        for (c, k) in FUT_SLOTS:
            fut_idx[u, c, k] = date_to_idx[slots[(c, k)]]
        if u >= N_OPT_UND:
            continue
        for f in opt_dates:
            T = (f - d).days / 365.0
            K = _strike_grid(seed, u, f)
            z = np.clip(np.log(K / S) / math.sqrt(T + 0.1), -3.0, 3.0)
            term = 1.0 + 0.08 * math.exp(-T * 12.0) - 0.04 * min(T, 1.0)
            iv = np.round(np.clip(mkt.atm[u] * term - 0.07 * z + 0.05 * z * z, 0.15, 2.5), 6)
            start = len(rows["instrument_id"])
            for cp, otype in enumerate(("C", "P")):
                val, dl, gm, vg = option_value_and_greeks(S, K, T, iv, np.full(N_STRIKES, cp == 0))
                val = np.maximum(val, OPTION_MIN_PRICE[u])
                for j in range(N_STRIKES):
                    add(f"{name}-{f:%Y%m%d}-{_fmt_strike(K[j])}-{otype}", OPT, u, "USD",
                        OPT_MULT[u], f, float(K[j]), otype, val[j], float(iv[j]),
                        dl[j], gm[j], vg[j])
            for (c, k) in OPT_SLOTS:
                if slots[(c, k)] == f:
                    for cp in range(2):
                        opt_idx[u, c, k, :, cp] = start + cp * N_STRIKES + np.arange(N_STRIKES)

    instruments = pl.DataFrame(
        {
            "instrument_id": pl.Series(rows["instrument_id"], dtype=pl.String),
            "kind": pl.Series(rows["kind"], dtype=pl.String),
            "underlying": pl.Series(rows["underlying"], dtype=pl.String),
            "currency": pl.Series(rows["currency"], dtype=pl.String),
            "multiplier": pl.Series(rows["multiplier"], dtype=pl.Float64),
            "expiry": pl.Series(rows["expiry"], dtype=pl.Date),
            "strike": pl.Series(rows["strike"], dtype=pl.Float64),
            "option_type": pl.Series(rows["option_type"], dtype=pl.String),
        }
    )
    prices = pl.DataFrame(
        {
            "instrument_id": pl.Series(rows["instrument_id"], dtype=pl.String),
            "price": pl.Series(rows["price"], dtype=pl.Float64),
            "implied_vol": pl.Series(rows["implied_vol"], dtype=pl.Float64),
        }
    )
    fx_rates = pl.DataFrame(
        {
            "currency": pl.Series(list(ASSETS), dtype=pl.String),
            "usd_rate": pl.Series(_asset_rates(mkt).tolist(), dtype=pl.Float64),
        }
    )
    ccy = np.array(rows["currency"])
    fx = np.select([ccy == "USDC", ccy == "USDT"], [mkt.usdc, mkt.usdt], 1.0)
    return Listing(
        instruments=instruments,
        prices=prices,
        fx_rates=fx_rates,
        ids=rows["instrument_id"],
        kind=np.array(rows["kind_code"], dtype=np.int8),
        und=np.array(rows["und"], dtype=np.int8),
        mult=np.array(rows["multiplier"]),
        price=np.array(rows["price"]),
        fx=fx,
        delta=np.array(rows["delta"]),
        gamma=np.array(rows["gamma"]),
        vega=np.array(rows["vega"]),
        strike=np.array([s if s is not None else np.nan for s in rows["strike"]]),
        is_call=np.array([o == "C" for o in rows["option_type"]]),
        first_idx=np.array([_expiry_number(slots[(c, 0)], c) for c in (WEEKLY, MONTHLY, QUARTERLY)]),
        spot_idx=spot_idx,
        perp_idx=perp_idx,
        fut_idx=fut_idx,
        opt_idx=opt_idx,
        market=mkt,
        slots=slots,
    )


def _asset_rates(mkt: Market) -> np.ndarray:
    """USD rate of each collateral asset, in ASSETS order."""
    return np.array([
        1.0, mkt.usdc, mkt.usdt, mkt.spot[0], mkt.spot[1], mkt.spot[2], mkt.meme, mkt.pepe,
    ])


# =====================================================================================
# account plan (date independent)
# =====================================================================================
@dataclass
class Plan:
    n: int
    account_ids: pl.Series
    strategy: np.ndarray
    size: np.ndarray
    mode: np.ndarray  # 0 isolated, 1 cross, 2 portfolio
    group: np.ndarray  # -1 none, else group number
    lei: np.ndarray  # unicode, "" for null
    lei_state: np.ndarray  # 0 valid, 1 null, 2 invalid
    m_target: np.ndarray  # equity / margin estimate
    holdings: np.ndarray  # (n, N_ASSETS) bool
    asset_w: np.ndarray  # (n, N_ASSETS) weights
    borrow: np.ndarray  # bool
    legs: dict[str, np.ndarray]
    base_spot: np.ndarray  # (N_UND,) fixed sizing prices


class _Legs:
    """Accumulates leg specs of all strategies (column arrays)."""

    FIELDS = {
        "acct": np.int32, "und": np.int8, "kind": np.int8, "cls": np.int8, "k": np.int8,
        "j": np.int8, "cp": np.int8, "sign": np.int8, "frac": np.float32, "hedge": np.int8,
        "base": np.int8,
    }

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []

    def add(self, acct, und, kind, sign, frac, cls=0, k=0, j=ATM_J, cp=0, hedge=0, base=0) -> None:
        acct = np.asarray(acct, dtype=np.int32)
        m = len(acct)
        if m == 0:
            return
        part = {"acct": acct}
        for name, val in (("und", und), ("kind", kind), ("cls", cls), ("k", k), ("j", j),
                          ("cp", cp), ("sign", sign), ("frac", frac), ("hedge", hedge),
                          ("base", base)):
            arr = np.broadcast_to(np.asarray(val), (m,)).astype(self.FIELDS[name])
            part[name] = arr
        self.parts.append(part)

    def concat(self) -> dict[str, np.ndarray]:
        if not self.parts:
            return {f: np.zeros(0, dtype=t) for f, t in self.FIELDS.items()}
        return {f: np.concatenate([p[f] for p in self.parts]) for f in self.FIELDS}


def _pick_idx(rng, probs, size) -> np.ndarray:
    cdf = np.cumsum(np.asarray(probs, dtype=float))
    cdf /= cdf[-1]
    r = rng.random(size)
    idx = np.zeros(size, dtype=np.int64)
    for c in cdf[:-1]:  # a handful of categories
        idx += r >= c
    return idx


def _pick(rng, options, probs, size):
    return np.asarray(options)[_pick_idx(rng, probs, size)]


def _build_legs(seed: int, strategy: np.ndarray, base_spot: np.ndarray) -> dict[str, np.ndarray]:
    L = _Legs()
    und_p = (0.45, 0.30, 0.18, 0.07)
    opt_und_p = (0.55, 0.35, 0.10)
    fut_slots = np.array(FUT_SLOTS)
    opt_slots = np.array(OPT_SLOTS)

    def accounts_of(s):
        return np.flatnonzero(strategy == s)

    def fut_slot(rng, m):
        s = fut_slots[_pick_idx(rng, FUT_SLOT_P, m)]
        return s[:, 0], s[:, 1]

    def opt_slot(rng, m):
        s = opt_slots[_pick_idx(rng, OPT_SLOT_P, m)]
        return s[:, 0], s[:, 1]

    # 1. directional: 1-3 perps/futures, one direction per account
    rng = _rng(seed, 101, DIRECTIONAL)
    A = accounts_of(DIRECTIONAL)
    nl = _pick(rng, (1, 2, 3), (0.45, 0.30, 0.25), len(A))
    direction = np.where(rng.random(len(A)) < 0.7, 1, -1)
    a = np.repeat(A, nl)
    m = len(a)
    is_fut = rng.random(m) < 0.4
    cls, k = fut_slot(rng, m)
    L.add(a, _pick(rng, range(N_UND), und_p, m), np.where(is_fut, FUT, PERP),
          np.repeat(direction, nl), rng.uniform(0.3, 1.0, m), cls, k)

    # 2. delta-hedged option sellers: short strangle(s) + daily hedge
    rng = _rng(seed, 101, OPTION_SELLER)
    A = accounts_of(OPTION_SELLER)
    u = _pick(rng, range(N_OPT_UND), opt_und_p, len(A))
    two = rng.random(len(A)) < 0.5
    near = opt_slots[rng.choice(3, size=len(A))]  # W0, W1, M0
    far = opt_slots[rng.choice(4, size=len(A)) + 3]  # M1, M2, Q0, Q1
    frac = rng.uniform(0.3, 1.0, len(A))
    for which, accts_mask, slot in ((0, np.ones(len(A), bool), near), (1, two, far)):
        sel = accts_mask
        dc = rng.integers(0, 4, len(A))
        dp = rng.integers(0, 4, len(A))
        L.add(A[sel], u[sel], OPT, -1, frac[sel], slot[sel, 0], slot[sel, 1], ATM_J + dc[sel], 0)
        L.add(A[sel], u[sel], OPT, -1, frac[sel], slot[sel, 0], slot[sel, 1], ATM_J - dp[sel], 1)
    hedge_perp = rng.random(len(A)) < 0.5
    L.add(A, u, np.where(hedge_perp, PERP, FUT), 1, 0.0, QUARTERLY, 0, hedge=1)

    # 3. calendar spreads: long one expiry, short another (+ sometimes an option calendar)
    rng = _rng(seed, 101, CALENDAR)
    A = accounts_of(CALENDAR)
    u = _pick(rng, range(N_UND), und_p, len(A))
    sgn = np.where(rng.random(len(A)) < 0.5, 1, -1)
    near = np.array([(MONTHLY, 0), (MONTHLY, 1)])[rng.integers(0, 2, len(A))]
    # the far leg is always beyond the near one: quarterly slot 1 (or 1-2)
    far = np.array([(QUARTERLY, 0), (QUARTERLY, 1)])[rng.integers(0, 2, len(A))]
    frac = rng.uniform(0.4, 1.0, len(A))
    L.add(A, u, FUT, sgn, frac, near[:, 0], near[:, 1])
    L.add(A, u, FUT, -sgn, frac * rng.uniform(0.9, 1.1, len(A)), far[:, 0], far[:, 1], base=1)
    oc = (rng.random(len(A)) < 0.3) & (u < N_OPT_UND)
    j = ATM_J + rng.integers(-2, 3, len(A))
    cp = rng.integers(0, 2, len(A))
    L.add(A[oc], u[oc], OPT, -1, frac[oc] * 0.5, MONTHLY, 0, j[oc], cp[oc])
    L.add(A[oc], u[oc], OPT, 1, frac[oc] * 0.5, QUARTERLY, 0, j[oc], cp[oc], base=1)

    # 4. basis trades: long spot, short perpetual or future (same units)
    rng = _rng(seed, 101, BASIS)
    A = accounts_of(BASIS)
    nl = np.where(rng.random(len(A)) < 0.25, 2, 1)
    a = np.repeat(A, nl)
    m = len(a)
    u = np.empty(m, dtype=np.int64)
    first = np.r_[True, a[1:] != a[:-1]] if m else np.zeros(0, bool)
    u_first = _pick(rng, range(N_UND), und_p, m)
    u = np.where(first, u_first, (u_first + 1 + rng.integers(0, N_UND - 1, m)) % N_UND)
    # make the second pair's underlying differ from the first
    if m:
        prev = np.r_[u[0], u[:-1]]
        u = np.where(~first & (u == prev), (u + 1) % N_UND, u)
    frac = rng.uniform(0.4, 1.0, m)
    short_fut = rng.random(m) < 0.4
    cls, k = fut_slot(rng, m)
    L.add(a, u, SPOT, 1, frac)
    L.add(a, u, np.where(short_fut, FUT, PERP), -1, frac, cls, k)

    # 5. cross-underlying pairs: long BTC vs short ~20x ETH (or the reverse)
    rng = _rng(seed, 101, PAIRS)
    A = accounts_of(PAIRS)
    sgn = np.where(rng.random(len(A)) < 0.6, 1, -1)
    frac = rng.uniform(0.4, 1.0, len(A))
    ratio = 20.0 * rng.uniform(0.8, 1.25, len(A))
    eth_frac = frac * ratio * base_spot[1] / base_spot[0]
    use_fut = rng.random((2, len(A))) < 0.3
    cls, k = fut_slot(rng, len(A))
    L.add(A, 0, np.where(use_fut[0], FUT, PERP), sgn, frac, cls, k)
    L.add(A, 1, np.where(use_fut[1], FUT, PERP), -sgn, eth_frac, cls, k)
    third = rng.random(len(A)) < 0.25
    L.add(A[third], 2, PERP, -sgn[third], frac[third] * 0.3)

    # 6. option buyers: 1-4 long calls/puts, sometimes a perpetual
    rng = _rng(seed, 101, OPTION_BUYER)
    A = accounts_of(OPTION_BUYER)
    nl = _pick(rng, (1, 2, 3, 4), (0.35, 0.3, 0.2, 0.15), len(A))
    a = np.repeat(A, nl)
    m = len(a)
    cls, k = opt_slot(rng, m)
    L.add(a, np.repeat(_pick(rng, range(N_OPT_UND), opt_und_p, len(A)), nl), OPT, 1,
          rng.uniform(0.1, 0.6, m), cls, k, ATM_J + rng.integers(-4, 5, m), rng.integers(0, 2, m))
    wp = rng.random(len(A)) < 0.3
    L.add(A[wp], _pick(rng, range(N_UND), und_p, int(wp.sum())), PERP,
          np.where(rng.random(int(wp.sum())) < 0.5, 1, -1), rng.uniform(0.2, 0.8, int(wp.sum())))

    # 7. market makers / multi-strategy books: many legs, both directions
    rng = _rng(seed, 101, MARKET_MAKER)
    A = accounts_of(MARKET_MAKER)
    nl = rng.integers(12, 41, len(A))
    a = np.repeat(A, nl)
    m = len(a)
    kind = _pick(rng, (OPT, FUT, PERP, SPOT), (0.35, 0.30, 0.25, 0.10), m)
    u_all = _pick(rng, range(N_UND), und_p, m)
    u_opt = _pick(rng, range(N_OPT_UND), opt_und_p, m)
    u = np.where(kind == OPT, u_opt, u_all)
    fc, fk = fut_slot(rng, m)
    oc_, ok_ = opt_slot(rng, m)
    cls = np.where(kind == OPT, oc_, fc)
    k = np.where(kind == OPT, ok_, fk)
    j = np.clip(ATM_J + np.round(rng.normal(0, 2.5, m)), 0, N_STRIKES - 1)
    sgn = np.where(kind == SPOT, 1, np.where(rng.random(m) < 0.5, 1, -1))
    L.add(a, u, kind, sgn, rng.uniform(0.03, 0.25, m), cls, k, j, rng.integers(0, 2, m))

    legs = L.concat()
    # per-leg static randomness
    rng = _rng(seed, 102)
    nleg = len(legs["acct"])
    legs["nsplit"] = _pick(rng, (1, 2, 3), (0.55, 0.30, 0.15), nleg).astype(np.int8)
    legs["opposite"] = ((rng.random(nleg) < 0.12) & (legs["nsplit"] > 1)).astype(np.int8)
    legs["zero_net"] = ((rng.random(nleg) < 0.004) & (legs["nsplit"] > 1)).astype(np.int8)
    legs["src0"] = rng.integers(0, len(SOURCES), nleg).astype(np.int8)
    legs["src_step"] = rng.integers(1, 3, nleg).astype(np.int8)
    legs["f1"] = rng.uniform(0.15, 0.6, nleg).astype(np.float32)  # share of the 2nd row
    legs["f2"] = rng.uniform(0.1, 0.3, nleg).astype(np.float32)  # share of the 3rd row
    # temporary closures: 15% of legs are flat for a stretch of each 180-day cycle
    legs["off_len"] = np.where(rng.random(nleg) < 0.15, rng.integers(5, 60, nleg), 0).astype(np.int16)
    legs["phase"] = rng.integers(0, 180, nleg).astype(np.int16)
    legs["off_len"][legs["hedge"] == 1] = 0  # hedges follow their options
    # expiry cycle: a leg holds its expiry until it expires, then rolls (k+1) periods out
    legs["ephase"] = rng.integers(0, 10_000, nleg).astype(np.int16)
    return legs


@functools.lru_cache(maxsize=2)
def account_plan(n_accounts: int, seed: int) -> Plan:
    n = int(n_accounts)
    if n < 1:
        raise ValueError("n_accounts must be >= 1")
    rng = _rng(seed, 100)
    base_spot = _market_path(int(seed), 1)["base_spot"]
    strategy = _exact_labels(rng, n, STRATEGY_P)
    size = np.clip(20_000.0 * np.exp(1.6 * rng.standard_normal(n)), 500.0, 2.0e8)
    size = np.where(strategy == MARKET_MAKER, size * 5.0, size)

    # margin modes: exact shares, correlated with strategy
    score = np.asarray(STRATEGY_MODE_SCORE)[strategy] + rng.normal(0.0, 0.6, n)
    order = np.argsort(score, kind="stable")
    mode = np.empty(n, dtype=np.int8)
    mode[order] = np.sort(_exact_labels(rng, n, MODE_P))

    # margin groups: ~4% of accounts in groups of 2-5
    group = np.full(n, -1, dtype=np.int64)
    if n >= 2:
        g = min(n, max(2, int(round(0.04 * n))))
        members = rng.choice(n, size=g, replace=False)
        sizes = rng.integers(2, 6, size=g)
        gid = np.repeat(np.arange(g), sizes)[:g]
        if (gid == gid[-1]).sum() == 1 and gid[-1] > 0:
            gid[-1] = gid[-2]  # no singleton group
        group[members] = gid

    # LEIs: ~88% valid, ~10% null, ~2% wrong check digits
    lei, check = _lei_strings(rng, n)
    lei_state = _exact_labels(rng, n, (0.88, 0.10, 0.02))
    bad = lei_state == 2
    if bad.any():
        wrong = (check[bad] - 2 + 1 + rng.integers(0, 95, bad.sum())) % 97 + 2  # != check
        chars = lei[bad].view(np.uint32).reshape(-1, 20).copy()
        chars[:, 18] = ord("0") + wrong // 10
        chars[:, 19] = ord("0") + wrong % 10
        lei[bad] = chars.view("<U20").reshape(-1)
    lei = np.where(lei_state == 1, "", lei)

    # equity / margin-estimate multiplier -> status mix
    status_cls = _exact_labels(rng, n, (0.92, 0.05, 0.03))
    m_ok = 1.25 + np.exp(rng.normal(0.2, 0.6, n))
    m_call = rng.uniform(0.82, 0.96, n)
    m_liq = rng.uniform(0.15, 0.68, n)
    m_target = np.select([status_cls == 0, status_cls == 1], [m_ok, m_call], m_liq)

    # collateral holdings
    holdings = np.zeros((n, N_ASSETS), dtype=bool)
    stable = _pick(rng, (I_USD, I_USDC, I_USDT), (0.3, 0.4, 0.3), n)
    crypto_only = rng.random(n) < 0.12
    holdings[np.arange(n), stable] = ~crypto_only
    holdings[:, I_BTC] = (rng.random(n) < 0.30) | crypto_only
    holdings[:, I_ETH] = rng.random(n) < 0.20
    holdings[:, I_SOL] = rng.random(n) < 0.08
    holdings[:, I_USDC] |= rng.random(n) < 0.10
    holdings[:, I_MEME] = _exact_mask(rng, n, 0.04)
    holdings[:, I_PEPE] = _exact_mask(rng, n, 0.02)
    borrow = _exact_mask(rng, n, 0.03)
    # a borrower owes USDT against crypto: no positive USDT, at least BTC
    holdings[borrow, I_USDT] = False
    holdings[borrow, I_BTC] = True
    # a wallet asset that is also held as a spot position gets a data-quality warning
    # (SPEC §6): accounts trading spot keep that asset out of their wallet
    legs = _build_legs(int(seed), strategy, base_spot)
    spot_leg = (legs["kind"] == SPOT) & (legs["und"] < 3)
    holdings[legs["acct"][spot_leg], I_BTC + legs["und"][spot_leg].astype(np.int64)] = False
    holdings[:, I_USDC] |= ~holdings[:, :I_MEME].any(axis=1)
    asset_w = rng.gamma(2.0, 1.0, (n, N_ASSETS)) * holdings
    asset_w[:, I_MEME] *= 0.3
    asset_w[:, I_PEPE] = 0.0  # ineligible: extra, never counted
    none = asset_w.sum(axis=1) == 0
    asset_w[none, I_USDC] = 1.0
    holdings[none, I_USDC] = True
    asset_w /= asset_w.sum(axis=1, keepdims=True)

    _static_leg_sizes(legs, size, base_spot)
    return Plan(
        n=n, account_ids=_account_ids(n), strategy=strategy, size=size, mode=mode,
        group=group, lei=lei, lei_state=lei_state, m_target=m_target, holdings=holdings,
        asset_w=asset_w, borrow=borrow, legs=legs, base_spot=base_spot,
    )


def accounts_frame(plan: Plan) -> pl.DataFrame:
    width = max(4, len(str(max(int(plan.group.max()), 0))))
    grp = pl.Series("g", plan.group)
    group_col = pl.select(
        pl.when(grp >= 0).then(pl.concat_str([pl.lit("GRP"), grp.cast(pl.String).str.zfill(width)]))
    ).to_series()
    lei = pl.Series("lei", plan.lei, dtype=pl.String)
    return pl.DataFrame(
        {
            "account_id": plan.account_ids,
            "margin_group": group_col.cast(pl.String).alias("margin_group"),
            "margin_mode": pl.Series(np.asarray(MODES)[plan.mode], dtype=pl.String),
            "lei": pl.select(pl.when(lei != "").then(lei)).to_series().cast(pl.String),
        }
    )


# =====================================================================================
# haircut helpers (tiered, marginal)
# =====================================================================================
def _haircut_table(ref_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    path = ref_dir / "haircuts.parquet"
    tiers: dict[str, list[tuple[float, float]]] = {}
    if path.exists():
        for a, s, h in pl.read_parquet(path).select("asset", "tier_start_usd", "haircut").iter_rows():
            tiers.setdefault(a, []).append((float(s), float(h)))
    else:
        tiers = {a: list(t) for a, t in refdef.HAIRCUTS.items()}
    out = {}
    for a, t in tiers.items():
        t = sorted(t)
        out[a] = (np.array([s for s, _ in t]), np.array([h for _, h in t]))
    return out


def _value_for_after_haircut(y: np.ndarray, tiers) -> np.ndarray:
    """Inverse of v -> v - tiered_haircut(v) (monotone piecewise linear)."""
    if tiers is None:
        return y
    starts, hc = tiers
    bps = np.r_[starts, 1e18]
    after = [0.0]
    for i in range(len(starts)):
        after.append(after[-1] + (bps[i + 1] - bps[i]) * (1.0 - hc[i]))
    after = np.array(after)
    if np.any(np.diff(after) <= 0):  # a 100% tier: cap at its start
        return y
    return np.interp(y, after, bps)


def _risk_params(ref_dir: Path) -> dict[str, tuple[float, float, float, float]]:
    path = ref_dir / "risk_params.parquet"
    out = {u: (v[0], v[1], v[0], v[3]) for u, v in refdef.RISK_PARAMS.items()}
    if path.exists():
        for row in pl.read_parquet(path).iter_rows(named=True):
            out[row["underlying"]] = (
                float(row["price_scan"]), float(row["vol_scan"]), float(row["im_rate"]),
                float(row["short_option_min_rate"]),
            )
    return out


# =====================================================================================
# reference
# =====================================================================================
def ensure_reference(input_root: Path, n_accounts: int, seed: int) -> None:
    """Copy the committed methodology defaults into ``input_root/reference/`` and write a
    synthetic ``accounts.parquet``; existing files are never overwritten."""
    ref = Path(input_root) / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    for name in refdef.DEFAULT_FILES:
        target = ref / name
        if target.exists():
            continue
        source = REFERENCE_SOURCE_DIR / name
        if source.exists():
            shutil.copyfile(source, target)
        else:  # installed without data/: build the same defaults from code
            tmp = ref / f".defaults-{seed}"
            refdef.write_defaults(tmp)
            shutil.move(str(tmp / name), target)
            shutil.rmtree(tmp, ignore_errors=True)
    accounts = ref / "accounts.parquet"
    if not accounts.exists():
        _atomic_write(accounts_frame(account_plan(int(n_accounts), int(seed))), accounts)


def install_scenario_grid(input_root: Path, name: str) -> Path:
    """Copy the shipped grid ``name`` (``reference_defaults.SCENARIO_GRIDS``) to
    ``input_root/reference/scenarios.parquet``, replacing the grid there; returns that path."""
    ref = Path(input_root) / "reference"
    ref.mkdir(parents=True, exist_ok=True)
    file_name = refdef.SCENARIO_GRIDS[name]
    source = REFERENCE_SOURCE_DIR / file_name
    target = ref / "scenarios.parquet"
    if source.exists():
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    else:  # installed without data/: build the same grid from code
        grid = refdef.extended_scenarios_frame() if name == "extended" else refdef.scenarios_frame()
        _atomic_write(grid, target)
    return target


def _atomic_write(df: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    df.write_parquet(tmp)
    tmp.replace(path)


# =====================================================================================
# one day
# =====================================================================================
def _resolve_instruments(legs, lst: Listing) -> np.ndarray:
    kind = legs["kind"]
    und = legs["und"].astype(np.int64)
    cls = legs["cls"].astype(np.int64)
    # slot held today: base + ((phase - first live expiry number) mod (k + 1)); it only
    # changes when the held expiry expires
    span = legs["k"].astype(np.int64) + 1
    k = legs["base"] + (legs["ephase"].astype(np.int64) - lst.first_idx[cls]) % span
    out = np.where(kind == SPOT, lst.spot_idx[und], lst.perp_idx[und])
    fut = kind == FUT
    out = np.where(fut, lst.fut_idx[und, np.where(fut, cls, MONTHLY), np.where(fut, k, 0)], out)
    opt = kind == OPT
    u_o = np.minimum(und, N_OPT_UND - 1)
    out = np.where(
        opt,
        lst.opt_idx[u_o, cls, np.where(opt, k, 0), legs["j"].astype(np.int64), legs["cp"].astype(np.int64)],
        out,
    )
    if np.any(out < 0):
        raise AssertionError("leg resolved to no instrument")
    return out


def _static_leg_sizes(legs: dict[str, np.ndarray], size: np.ndarray, base_spot: np.ndarray) -> None:
    """Date-independent per-leg multiplier, lot and quantity (contracts sized from the
    leg's notional at the fixed base price, so quantities are stable from day to day)."""
    und = legs["und"].astype(np.int64)
    kind = legs["kind"]
    mult = np.where(kind == FUT, FUT_MULT[und], 1.0)
    is_opt = kind == OPT
    mult[is_opt] = OPT_MULT[np.minimum(und[is_opt], N_OPT_UND - 1)]
    legs["mult"] = mult
    legs["lot"] = LOT[kind, und]
    legs["qty0"] = legs["sign"] * size[legs["acct"]] * legs["frac"] / (base_spot[und] * mult)


def _day_positions(plan: Plan, lst: Listing, seed: int, day_idx: int):
    legs = plan.legs
    nleg = len(legs["acct"])
    acct = legs["acct"]
    kind = legs["kind"]
    instr = _resolve_instruments(legs, lst)
    mult, lot = legs["mult"], legs["lot"]
    # daily changes: temporary closures and a few legs resized by -20%..+20%
    r = _rng(seed, 200, day_idx).random(nleg)
    active = ((day_idx + legs["phase"]) % 180) >= legs["off_len"]
    factor = np.where(r < 0.05, 0.8 + 8.0 * r, 1.0)
    qty = np.where(active, legs["qty0"] * factor, 0.0)
    lots = np.round(qty / lot)
    lots = np.where(active & (lots == 0) & (legs["hedge"] == 0), np.sign(qty), lots)
    # option sellers re-hedge their option delta every day
    hedge = legs["hedge"] == 1
    if hedge.any():
        opt = np.flatnonzero(kind == OPT)
        per_acct = np.bincount(acct[opt], weights=lots[opt] * lot[opt] * mult[opt] * lst.delta[instr[opt]],
                               minlength=plan.n)
        lots[hedge] = np.round(-per_acct[acct[hedge]] / mult[hedge] / lot[hedge])
    keep = lots != 0
    return instr, lots, lot, mult, keep


def _split_rows(plan: Plan, instr, lots, inv_lot, keep):
    """Split each leg over 1-3 sources; returns (leg, instrument, quantity, source) per row."""
    legs = plan.legs
    idx = np.flatnonzero(keep)
    absl = np.abs(lots[idx])
    sgn = np.sign(lots[idx])
    ns = np.minimum(legs["nsplit"][idx], np.maximum(absl, 1.0))  # never more rows than lots
    a1 = np.where(ns >= 2, np.floor(absl * legs["f1"][idx]), 0.0)
    a2 = np.where(ns >= 3, np.floor(absl * legs["f2"][idx]), 0.0)
    a0 = absl - a1 - a2
    # the same instrument long on one venue and short on another
    opp = (legs["opposite"][idx] == 1) & (ns >= 2)
    extra = np.where(opp, np.ceil(0.3 * absl) + 1.0, 0.0)
    a0 += extra
    a1 -= extra
    # net-zero legs: (+L, -L), or (+1, +2, -3) lots whose float sum leaves a residue
    zero = legs["zero_net"][idx] == 1
    z2 = zero & (ns == 2)
    z3 = zero & (ns == 3)
    a0 = np.where(z2, absl, np.where(z3, 1.0, a0))
    a1 = np.where(z2, -absl, np.where(z3, 2.0, a1))
    a2 = np.where(z3, -3.0, a2)
    out_leg, out_q, out_src = [], [], []
    for p, a in enumerate((a0, a1, a2)):
        sel = a != 0
        leg = idx[sel]
        out_leg.append(leg)
        # lots / (1/lot): exact integer / power of ten -> the nearest double to the decimal
        out_q.append(a[sel] * sgn[sel] / inv_lot[leg])
        out_src.append(((legs["src0"][leg] + p * legs["src_step"][leg]) % len(SOURCES)).astype(np.int8))
    leg_of_row = np.concatenate(out_leg)
    return leg_of_row, instr[leg_of_row], np.concatenate(out_q), np.concatenate(out_src)


def _margin_estimate(plan: Plan, lst: Listing, instr, lots, lot, mult, keep, ref_dir: Path):
    """Rough requirement of each account in its own margin mode (rule based for isolated
    and cross, a delta/gamma/vega scan for portfolio), and its Σ mv of options + spot."""
    rp = _risk_params(ref_dir)
    fallback = (0.5, 0.2, 0.5, 0.05)
    par = np.array([rp.get(name, fallback) for name in UNDERLYINGS])  # scan, vscan, im, somr
    # per-instrument unit figures (small arrays)
    iu = lst.und.astype(np.int64)
    S_i = lst.market.spot[iu]
    is_opt = lst.kind == OPT
    lin_unit = lst.mult * lst.price * lst.fx * par[iu, 2]
    K = np.where(is_opt, np.nan_to_num(lst.strike), 0.0)
    otm = np.where(lst.is_call, np.maximum(K - S_i, 0.0), np.maximum(S_i - K, 0.0))
    short_opt_unit = lst.mult * lst.fx * np.maximum(par[iu, 2] * S_i - otm, par[iu, 3] * S_i)
    rule_unit = np.stack([np.where(is_opt, 0.0, lin_unit), np.where(is_opt, short_opt_unit, lin_unit)], axis=1)
    mv_unit = np.where(is_opt | (lst.kind == SPOT), lst.mult * lst.price * lst.fx, 0.0)
    delta_unit = lst.mult * lst.delta
    gamma_unit = lst.mult * lst.gamma
    vega_unit = lst.mult * lst.vega * par[iu, 1] * lst.fx
    short_unit = np.where(is_opt, lst.mult, 0.0)

    k_idx = np.flatnonzero(keep)
    acct = plan.legs["acct"][k_idx]
    ins = instr[k_idx]
    q = lots[k_idx] * lot[k_idx]
    neg = q < 0
    absq = np.abs(q)
    n = plan.n
    gross = np.bincount(acct, weights=absq * rule_unit[ins, neg.astype(np.int64)], minlength=n)
    mv_os = np.bincount(acct, weights=q * mv_unit[ins], minlength=n)
    key = acct.astype(np.int64) * N_UND + lst.und[ins]
    nk = n * N_UND
    d = np.bincount(key, weights=q * delta_unit[ins], minlength=nk).reshape(n, N_UND)
    g = np.bincount(key, weights=q * gamma_unit[ins], minlength=nk).reshape(n, N_UND)
    v = np.bincount(key, weights=q * vega_unit[ins], minlength=nk).reshape(n, N_UND)
    gd = np.bincount(key, weights=absq * np.abs(delta_unit[ins]), minlength=nk).reshape(n, N_UND)
    sh = np.bincount(key, weights=np.where(neg, absq, 0.0) * short_unit[ins], minlength=nk).reshape(n, N_UND)
    move = lst.market.spot * par[:, 0]
    sr = np.abs(d) * move + 0.5 * np.maximum(-g, 0.0) * move**2 + np.abs(v)
    sr += 0.01 * gd * lst.market.spot  # calendar / basis residue of hedged books
    port = np.maximum(sr, 0.5 * sh * lst.market.spot * par[:, 3]).sum(axis=1)
    est = np.where(plan.mode == 2, port, gross)
    return est, mv_os


def _day_collateral(plan: Plan, lst: Listing, est, mv_os, seed: int, day_idx: int, ref_dir: Path):
    n = plan.n
    rng = _rng(seed, 300, day_idx)
    equity = plan.m_target * est
    needed = equity - mv_os
    no_pos = est <= 0
    floor = 0.1 * equity
    needed = np.where(no_pos, plan.size * rng.uniform(0.05, 0.5, n), np.maximum(needed, floor))
    needed = np.maximum(needed, 50.0)
    debt = np.where(plan.borrow, needed * rng.uniform(0.1, 0.6, n), 0.0)
    rates = _asset_rates(lst.market)
    tiers = _haircut_table(ref_dir)
    amounts = np.zeros((n, N_ASSETS))
    for a, name in enumerate(ASSETS):
        if a == I_PEPE:
            value = needed * rng.uniform(0.02, 0.2, n)
        else:
            y = (needed + debt) * plan.asset_w[:, a]
            value = _value_for_after_haircut(y, tiers.get(name))
        amounts[:, a] = np.where(plan.holdings[:, a], value / rates[a], 0.0)
    amounts[:, I_USDT] -= debt / rates[I_USDT]
    scale = 10.0 ** ASSET_DECIMALS[None, :]
    amounts = np.round(amounts * scale) / scale
    ai, asset = np.nonzero(amounts)
    amt = amounts[ai, asset]
    # some balances arrive as two rows (sub-wallets)
    split = rng.random(len(ai)) < 0.08
    sc = 10.0 ** ASSET_DECIMALS[asset]
    part = np.round(amt * 0.4 * sc) / sc
    rows_a = np.r_[ai, ai[split]]
    rows_asset = np.r_[asset, asset[split]]
    rows_amt = np.r_[np.where(split, amt - part, amt), part[split]]
    order = np.lexsort((rows_asset, rows_a))
    return rows_a[order], rows_asset[order], rows_amt[order]


#: Share of a day's position rows that may be deliberately bad: a fifth of the quarantine
#: guard's default limit (SPEC §3, 1 %), so ``margin demo`` / ``generate`` stay well inside it.
BAD_POSITION_SHARE = 0.002
#: The quarantined bad position rows of ``_bad_rows`` (by index), most telling first: expired,
#: no vol, duplicate price, unknown kind, null quantity, NaN quantity, then more of the same.
BAD_POSITION_PRIORITY = (0, 1, 3, 4, 7, 8, 2, 5, 6)
GHOST_POSITIONS = (9, 10)  # usable rows of an account missing from accounts (a warning)


def _bad_rows(plan: Plan, lst: Listing, d: dt.date, seed: int, day_idx: int, good_positions: int):
    """A handful of rows that validation must quarantine (or warn about).

    At most ``BAD_POSITION_SHARE`` of ``good_positions`` bad position rows (none for a
    book under 500 rows): the bad rows scale with the book, never a fixed count that a
    small book would fail the quarantine guard with."""
    rng = _rng(seed, 400, day_idx)
    n = plan.n

    def acc():
        return plan.account_ids[int(rng.integers(0, n))]

    slots = lst.slots
    s = lst.market.spot
    last_friday = d - dt.timedelta(days=(d.weekday() - 4) % 7 or 7)
    expired_id = f"BTC-{last_friday:%Y%m%d}"
    q1 = slots[(QUARTERLY, 1)]
    m1 = slots[(MONTHLY, 1)]
    w0 = slots[(WEEKLY, 0)]
    k_novol = float(np.round(s[1] * 2.2 / 25) * 25)
    k_dup = float(np.round(s[2] * 0.33))
    k_nan = float(np.round(s[0] * 2.5 / 500) * 500)
    novol_id = f"ETH-{q1:%Y%m%d}-{_fmt_strike(k_novol)}-C"
    dup_id = f"SOL-{m1:%Y%m%d}-{_fmt_strike(k_dup)}-P"
    nan_id = f"BTC-{w0:%Y%m%d}-{_fmt_strike(k_nan)}-C"
    badkind_id = "BTC-SWAP"
    instruments = pl.DataFrame(
        {
            "instrument_id": [expired_id, novol_id, dup_id, nan_id, badkind_id],
            "kind": ["future", "option", "option", "option", "swap"],
            "underlying": ["BTC", "ETH", "SOL", "BTC", "BTC"],
            "currency": ["USD"] * 5,
            "multiplier": [float(FUT_MULT[0]), 1.0, 10.0, 1.0, 1.0],
            "expiry": [last_friday, q1, m1, w0, None],
            "strike": [None, k_novol, k_dup, k_nan, None],
            "option_type": [None, "C", "P", "C", None],
        },
        schema=lst.instruments.schema,
    )
    prices = pl.DataFrame(
        {
            "instrument_id": [expired_id, novol_id, dup_id, dup_id, nan_id, badkind_id, "ADA-PERP"],
            "price": [float(s[0]), 1.5, 0.05, 0.06, float("nan"), float(s[0]), 0.45],
            "implied_vol": [None, None, 1.1, 1.1, 0.9, None, None],
        },
        schema=lst.prices.schema,
    )
    ghost = _account_id(n + 17, n)  # not in accounts.parquet: a warning, not quarantine
    positions = pl.DataFrame(
        {
            "account_id": [acc(), acc(), acc(), acc(), acc(), acc(), acc(), acc(), acc(), ghost, ghost],
            "instrument_id": [expired_id, novol_id, novol_id, dup_id, badkind_id, "XRP-PERP",
                              "BTC-20991231", "BTC-PERP", "ETH-PERP", "BTC-PERP", "ETH"],
            "quantity": [2.0, -5.0, 3.0, 40.0, 1.0, 1000.0, 1.0, None, float("nan"), 0.25, 3.0],
            "source": ["cme", "deribit", "okx", None, "binance", "binance", None, "okx",
                       "deribit", "binance", None],
        },
        schema={"account_id": pl.String, "instrument_id": pl.String, "quantity": pl.Float64,
                "source": pl.String},
    )
    allowed = min(len(BAD_POSITION_PRIORITY), int(good_positions * BAD_POSITION_SHARE))
    positions = positions[[*BAD_POSITION_PRIORITY[:allowed], *GHOST_POSITIONS]]
    # an account holding BTC/ETH/SOL spot that also has it in its wallet: a warning
    spot_legs = np.flatnonzero((plan.legs["kind"] == SPOT) & (plan.legs["und"] < 3))
    if len(spot_legs):
        leg = int(spot_legs[int(rng.integers(0, len(spot_legs)))])
        dual_acct = plan.account_ids[int(plan.legs["acct"][leg])]
        dual_asset = ASSETS[I_BTC + int(plan.legs["und"][leg])]
    else:
        dual_acct, dual_asset = acc(), "USDC"
    collateral = pl.DataFrame(
        {
            "account_id": [ghost, acc(), acc(), dual_acct],
            # XYZ has no fx rate -> missing_fx; a null amount -> invalid_value
            "asset": ["USDC", "XYZ", "USDT", dual_asset],
            "amount": [25_000.0, 1_000.0, None, 0.5],
        },
        schema={"account_id": pl.String, "asset": pl.String, "amount": pl.Float64},
    )
    return instruments, prices, positions, collateral


def generate_day(
    input_root: Path,
    as_of: dt.date,
    n_accounts: int,
    seed: int = 7,
    bad_rows: bool = True,
) -> Path:
    """Write one day of synthetic inputs under ``input_root/date=YYYY-MM-DD/``."""
    input_root = Path(input_root)
    if isinstance(as_of, str):
        as_of = dt.date.fromisoformat(as_of)
    ensure_reference(input_root, n_accounts, seed)
    ref_dir = input_root / "reference"
    seed = int(seed)
    day_idx = _day_index(as_of)
    plan = account_plan(int(n_accounts), seed)
    lst = build_listing(seed, as_of)

    instr, lots, lot, mult, keep = _day_positions(plan, lst, seed, day_idx)
    leg_of_row, row_instr, q, src = _split_rows(plan, instr, lots, np.round(1.0 / lot), keep)
    acct_rows = plan.legs["acct"][leg_of_row]
    order = np.argsort(acct_rows, kind="stable")
    ids = pl.Series("instrument_id", lst.ids, dtype=pl.String)
    sources = pl.Series("source", list(SOURCES), dtype=pl.String)
    positions = pl.DataFrame(
        {
            "account_id": plan.account_ids.gather(acct_rows[order]),
            "instrument_id": ids.gather(row_instr[order]),
            "quantity": pl.Series(q[order], dtype=pl.Float64),
            "source": sources.gather(src[order]),
        }
    )

    est, mv_os = _margin_estimate(plan, lst, instr, lots, lot, mult, keep, ref_dir)
    c_acct, c_asset, c_amt = _day_collateral(plan, lst, est, mv_os, seed, day_idx, ref_dir)
    collateral = pl.DataFrame(
        {
            "account_id": plan.account_ids.gather(c_acct),
            "asset": pl.Series(list(ASSETS), dtype=pl.String).gather(c_asset),
            "amount": pl.Series(c_amt, dtype=pl.Float64),
        }
    )
    instruments, prices, fx_rates = lst.instruments, lst.prices, lst.fx_rates
    if bad_rows:
        b_ins, b_px, b_pos, b_col = _bad_rows(plan, lst, as_of, seed, day_idx, positions.height)
        instruments = pl.concat([instruments, b_ins])
        prices = pl.concat([prices, b_px])
        positions = pl.concat([positions, b_pos])
        collateral = pl.concat([collateral, b_col])

    out = input_root / f"date={as_of.isoformat()}"
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (
        ("instruments", instruments), ("prices", prices), ("fx_rates", fx_rates),
        ("collateral", collateral), ("positions", positions),
    ):
        _atomic_write(df, out / f"{name}.parquet")
    return out


def generate_book(
    input_root: Path,
    start: dt.date,
    days: int,
    n_accounts: int,
    seed: int = 7,
    bad_rows: bool = True,
) -> list[Path]:
    """``days`` consecutive calendar dates from ``start`` (crypto trades every day)."""
    if isinstance(start, str):
        start = dt.date.fromisoformat(start)
    return [
        generate_day(input_root, start + dt.timedelta(days=i), n_accounts, seed, bad_rows)
        for i in range(int(days))
    ]
