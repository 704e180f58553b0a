"""``margin whatif``: margin before and after hypothetical trades (SPEC §12); writes nothing.

Only the accounts named in the trades file and every member of their margin groups are
read (Parquet filter pushdown on ``account_id``) and margined, by the same
``compute_margin`` as the end-of-day run: an account's or group's figures depend only
on its own rows (a margin group is one book, SPEC §7), so the subset gives exactly what
the whole day would.  "After" is the subset with the valid trade rows appended to
``positions`` and, for spot and option trades, the cash appended to ``collateral`` as a
USD row ``−quantity × multiplier × price × fx`` (the trade price, else the mark).  A trade
row that fails SPEC §3 is reported with its reason and not applied.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import polars as pl

from flows.loading import (
    StructuralError, check_methodology, date_folder, locate, read_policy, read_table, scan_table,
)
from transforms import validation
from transforms.pipeline import INPUT_TABLES, METHODOLOGY_TABLES, MarginInputs, compute_margin

TRADE_COLUMNS = {"account_id": pl.String, "instrument_id": pl.String, "quantity": pl.Float64, "price": pl.Float64}
OPTIONAL_TRADE_COLUMNS = ("price",)
#: The ``source`` of appended trade rows (positions) in the "after" book.
TRADE_SOURCE = "whatif"
CASH_ASSET = validation.REPORTING_CURRENCY
#: SPEC §3 magnitude bounds: |quantity| ≤ 1e12, a price in [1e-12, 1e12].
MAX_QUANTITY, MIN_PRICE, MAX_PRICE = 1e12, 1e-12, 1e12
CASH_KINDS = ("spot", "option")
ACCOUNT_FIGURES = ("gross_im", "net_im", "portfolio_im", "im", "mm", "equity", "excess", "status", "binding_status")
GROUP_FIGURES = ("group_im", "group_equity", "group_excess", "status")


@dataclasses.dataclass
class WhatIf:
    """Before / after figures of the named accounts and their groups, and the rejected trade rows."""

    as_of: dt.date
    accounts: pl.DataFrame  # account_id, then <figure>_before, <figure>_after, <figure>_change
    groups: pl.DataFrame  # margin_group, likewise
    rejected: pl.DataFrame  # row (1-based), account_id, instrument_id, quantity, price, reason
    applied: int  # trade rows applied
    accounts_margined: int  # accounts read and margined (named accounts and their groups' members)

    def to_dict(self) -> dict:
        def nested(frame: pl.DataFrame, key: str, figures: tuple[str, ...]) -> list[dict]:
            return [
                {key: row[key], **{side: {f: row[f"{f}_{side}"] for f in figures} for side in ("before", "after", "change")}}
                for row in frame.iter_rows(named=True)
            ]

        return {
            "as_of_date": self.as_of.isoformat(),
            "trades_applied": self.applied,
            "accounts_margined": self.accounts_margined,
            "accounts": nested(self.accounts, "account_id", ACCOUNT_FIGURES),
            "groups": nested(self.groups, "margin_group", GROUP_FIGURES),
            "rejected": self.rejected.to_dicts(),
        }


def read_trades(path: Path) -> pl.DataFrame:
    """The trades file (CSV or Parquet) as ``row`` (1-based), ``account_id``, ``instrument_id``,
    ``quantity``, ``price`` (null: the mark).  A value that is not a number becomes null and is
    rejected later (``invalid_value``); a missing required column is a structural error."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            raw = pl.read_parquet(path)
        else:
            raw = pl.read_csv(path, infer_schema=False)
    except FileNotFoundError as error:
        raise StructuralError(path, None, "file not found") from error
    except Exception as error:  # unreadable CSV / Parquet
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StructuralError(path, None, f"not a readable CSV or Parquet file ({first[:200]})") from error
    columns = []
    for column, dtype in TRADE_COLUMNS.items():
        if column not in raw.columns:
            if column in OPTIONAL_TRADE_COLUMNS:
                columns.append(pl.lit(None, dtype=dtype).alias(column))
                continue
            raise StructuralError(path, column, "required column is missing")
        value = pl.col(column)
        if dtype == pl.String:
            text = value.cast(pl.String)
            columns.append(pl.when(text.str.strip_chars() == "").then(None).otherwise(text).alias(column))
        else:
            text = value.cast(pl.String).str.strip_chars() if raw.schema[column] == pl.String else value
            columns.append(text.cast(dtype, strict=False).alias(column))
    return raw.select(pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("row"), *columns)


def check_trades(trades: pl.DataFrame, market: pl.LazyFrame) -> pl.DataFrame:
    """Trades with ``reason`` (null: usable; SPEC §3 as for a positions row, plus the trade
    price: not finite or outside [1e-12, 1e12] → invalid_value, ≤ 0 → invalid_price) and,
    for usable rows, the instrument's ``kind``, ``multiplier``, mark ``price`` and ``fx``."""
    checked = validation.check_positions(
        trades.lazy().rename({"price": "trade_price"}).with_columns(pl.lit(TRADE_SOURCE).alias("source")), market
    )
    price, quantity = pl.col("trade_price"), pl.col("quantity")
    price_invalid = price.is_not_null() & (~price.is_finite() | ((price > 0) & ((price < MIN_PRICE) | (price > MAX_PRICE))))
    return checked.with_columns(
        pl.when(pl.col("reason") == "invalid_value").then(pl.col("reason"))
        .when(quantity.abs() > MAX_QUANTITY).then(pl.lit("invalid_value"))
        .when(price_invalid).then(pl.lit("invalid_value"))
        .when(price.is_not_null() & (price <= 0)).then(pl.lit("invalid_price"))
        .otherwise(pl.col("reason")).alias("reason")
    ).sort("row").collect()


def trade_cash(usable: pl.DataFrame) -> pl.DataFrame:
    """One USD collateral row per spot or option trade: ``−quantity × multiplier × price × fx``
    (the trade price, else the mark); futures and perpetuals move no cash (SPEC §12)."""
    return usable.filter(pl.col("kind").is_in(CASH_KINDS)).select(
        "account_id",
        pl.lit(CASH_ASSET).alias("asset"),
        (-pl.col("quantity") * pl.col("multiplier") * pl.coalesce("trade_price", "price") * pl.col("fx")).alias("amount"),
    )


def book_accounts(accounts: pl.DataFrame, named: list[str]) -> list[str]:
    """The named accounts and every member of their margin groups (valid accounts rows)."""
    valid = validation.usable_rows(validation.check_accounts(accounts.lazy())).collect()
    groups = valid.filter(pl.col("account_id").is_in(named) & pl.col("margin_group").is_not_null())["margin_group"]
    members = valid.filter(pl.col("margin_group").is_in(groups.implode()))["account_id"]
    return sorted(set(named) | set(members.to_list()))


def load_accounts_subset(inputs_root: Path, as_of: dt.date, named: list[str]) -> MarginInputs:
    """The date's inputs restricted to the ``named`` accounts and their groups' members
    (``book_accounts``): positions, collateral and accounts rows filtered while they are
    read; the shared and methodology tables whole and checked as ``load_inputs`` checks
    them; no checksums (nothing is recorded)."""
    inputs_root = Path(inputs_root)
    if not date_folder(inputs_root, as_of).is_dir():
        raise StructuralError(date_folder(inputs_root, as_of), None, "no input folder for this date")
    paths = {name: locate(inputs_root, as_of, f"{name}.parquet") for name in (*INPUT_TABLES, *METHODOLOGY_TABLES)}
    streamed = ("positions", "collateral")
    tables = {name: read_table(path, name) for name, path in paths.items() if name not in streamed}
    check_methodology(tables, paths)
    policy = read_policy(locate(inputs_root, as_of, "policy.toml"))
    account_ids = book_accounts(tables["accounts"], named)
    wanted = pl.col("account_id").is_in(pl.Series(account_ids, dtype=pl.String).implode())
    subset = MarginInputs(
        as_of=as_of,
        positions=scan_table(paths["positions"], "positions").filter(wanted).collect().lazy(),
        collateral=scan_table(paths["collateral"], "collateral").filter(wanted).collect().lazy(),
        accounts=tables["accounts"].filter(wanted).lazy(),
        **{name: tables[name].lazy() for name in ("prices", "fx_rates", "instruments")},
        **{name: tables[name] for name in METHODOLOGY_TABLES},
        maintenance_ratio=policy["maintenance_ratio"],
        vol_floor=policy["vol_floor"],
    )
    return subset


def _side_by_side(before: pl.DataFrame, after: pl.DataFrame, key: str, figures: tuple[str, ...]) -> pl.DataFrame:
    joined = before.select(key, *figures).join(
        after.select(key, *figures), on=key, how="full", coalesce=True, suffix="_after"
    ).rename({f: f"{f}_before" for f in figures})
    columns = [key]
    for figure in figures:
        b, a = pl.col(f"{figure}_before"), pl.col(f"{figure}_after")
        numeric = joined.schema[f"{figure}_before"].is_numeric()
        change = (a - b) if numeric else pl.when(a.eq_missing(b)).then(pl.lit("")).otherwise(
            pl.concat_str(b.fill_null("–"), pl.lit(" → "), a.fill_null("–")))
        columns += [b, a, change.alias(f"{figure}_change")]
    return joined.select(columns).sort(key)


def what_if(inputs_root: Path, as_of: dt.date, trades_file: Path) -> WhatIf:
    """Margin of the accounts named in ``trades_file`` (and their groups) before and after the trades."""
    trades = read_trades(trades_file)
    named = sorted(set(trades["account_id"].drop_nulls().to_list()))
    before_inputs = load_accounts_subset(inputs_root, as_of, named)
    market = validation.instrument_market(
        validation.usable_rows(validation.check_instruments(before_inputs.instruments)),
        validation.usable_rows(validation.check_prices(before_inputs.prices)),
        validation.usable_fx(validation.check_fx_rates(before_inputs.fx_rates)),
        before_inputs.risk_params.lazy(),
        as_of,
    )
    checked = check_trades(trades, market)
    usable = checked.filter(pl.col("reason").is_null())
    after_inputs = dataclasses.replace(
        before_inputs,
        positions=pl.concat([
            before_inputs.positions,
            usable.lazy().select("account_id", "instrument_id", "quantity", pl.lit(TRADE_SOURCE).alias("source")),
        ]),
        collateral=pl.concat([before_inputs.collateral, trade_cash(usable).lazy()]),
    )
    before, after = compute_margin(before_inputs), compute_margin(after_inputs)

    def named_rows(results) -> pl.DataFrame:
        return results.tables["account_margin"].filter(pl.col("account_id").is_in(named))

    groups = named_rows(after)["margin_group"].drop_nulls().unique()

    def group_rows(results) -> pl.DataFrame:
        return results.tables["group_margin"].filter(pl.col("margin_group").is_in(groups.implode()))

    rejected = checked.filter(pl.col("reason").is_not_null()).select(
        "row", "account_id", "instrument_id", "quantity", pl.col("trade_price").alias("price"), "reason"
    )
    return WhatIf(
        as_of=as_of,
        accounts=_side_by_side(named_rows(before), named_rows(after), "account_id", ACCOUNT_FIGURES),
        groups=_side_by_side(group_rows(before), group_rows(after), "margin_group", GROUP_FIGURES),
        rejected=rejected,
        applied=usable.height,
        accounts_margined=before.tables["account_margin"].height,
    )


def _figure_rows(frame: pl.DataFrame, key: str, figures: tuple[str, ...]) -> pl.DataFrame:
    """One row per book × figure: ``key``, ``figure``, ``before``, ``after``, ``change`` as text."""

    def text(value) -> str:
        if value is None:
            return "–"
        return f"{value:,.2f}" if isinstance(value, float) else str(value)

    rows = [
        {key: row[key], "figure": figure,
         **{side: text(row[f"{figure}_{side}"]) for side in ("before", "after", "change")}}
        for row in frame.iter_rows(named=True) for figure in figures
    ]
    return pl.DataFrame(rows, schema={key: pl.String, "figure": pl.String, "before": pl.String, "after": pl.String,
                                      "change": pl.String})


def render(result: WhatIf, output_format: str = "table") -> str:
    """The what-if as aligned tables (accounts, groups, rejected rows) or one JSON document."""
    import json

    from outputs.sql_console import frame_rows, render_table

    if output_format == "json":
        return json.dumps(result.to_dict(), indent=1, default=str) + "\n"
    parts = [f"what-if on {result.as_of}: {result.applied} trade row(s) applied, "
             f"{result.rejected.height} rejected; {result.accounts_margined} account(s) margined\n"]
    parts.append(render_table(frame_rows(_figure_rows(result.accounts, "account_id", ACCOUNT_FIGURES)), limit=10_000))
    if result.groups.height:
        parts.append(render_table(frame_rows(_figure_rows(result.groups, "margin_group", GROUP_FIGURES)), limit=10_000))
    if result.rejected.height:
        parts.append("rejected trade rows (SPEC §3 reason; not applied):\n")
        parts.append(render_table(frame_rows(result.rejected), limit=10_000))
    return "\n".join(parts)
