"""Dictionary encoding of account and instrument ids (a performance device, no methodology).

Joins and group-bys keyed by a million distinct account-id strings are several times
slower than the same over dense integers (docs/performance.md).  ``margin_plan``
therefore replaces ``account_id`` and ``instrument_id`` by ``UInt32`` codes after
validation and decodes the output tables at the end.  Codes are assigned in sorted
order of the ids, so sorting by code sorts by id, and decoding is one gather.
Quarantine rows keep the raw strings: they are taken from the checked input rows,
which carry the code as an extra column.
"""

from __future__ import annotations

import polars as pl

ACCOUNT_CODE = "account_code"
INSTRUMENT_CODE = "instrument_code"
CODE_TYPE = pl.UInt32


def encode_accounts(tables: dict[str, pl.LazyFrame]) -> tuple[dict[str, pl.LazyFrame], pl.Series]:
    """Adds ``account_code`` to every row of each table (null for a null, empty or blank
    ``account_id``: SPEC §3 counts them as null keys, so they make no account).

    Returns the coded tables (collected once: the code column is aligned with their
    rows) and the sorted distinct ids, ``ids[code] == account_id``.  One dense rank over
    the ids of all tables together, so one code means one id in every table.
    """
    frames = pl.collect_all(list(tables.values()))
    stacked = pl.concat([frame.get_column("account_id") for frame in frames])
    blank = ~stacked.str.contains(r"\S")
    if blank.any():
        stacked = pl.select(pl.when(~blank).then(stacked)).to_series().alias("account_id")
    codes = (stacked.rank("dense") - 1).cast(CODE_TYPE)
    known = codes.is_not_null()
    distinct = int(codes.max()) + 1 if known.any() else 0
    ids = pl.repeat(None, distinct, dtype=pl.String, eager=True).scatter(
        codes.filter(known), stacked.filter(known)
    ).alias("account_id")
    coded, offset = {}, 0
    for name, frame in zip(tables, frames):
        coded[name] = frame.with_columns(codes.slice(offset, frame.height).alias(ACCOUNT_CODE)).lazy()
        offset += frame.height
    return coded, ids


def sorted_ids(frame: pl.LazyFrame, column: str) -> pl.Series:
    """The distinct non-null values of ``column``, sorted (a small table's code book)."""
    return frame.select(pl.col(column).drop_nulls().unique().sort()).collect().get_column(column)


def code_table(ids: pl.Series, code: str) -> pl.LazyFrame:
    """``ids`` with their codes, for a join: columns ``<ids.name>``, ``code``."""
    return ids.to_frame().with_row_index(code).lazy()


def decode(ids: pl.Series, column: str) -> pl.Expr:
    """``column`` (codes) back to the id strings, under the same name."""
    return pl.lit(ids).gather(pl.col(column)).alias(column)


def by_code(frame: pl.DataFrame, code: str, size: int) -> pl.DataFrame:
    """``frame`` (unique ``code`` values below ``size``) with one row per code ``0..size-1``
    in code order, nulls for codes it lacks: row ``i`` is code ``i``, for gathers by code."""
    every_code = pl.DataFrame({code: pl.int_range(size, dtype=CODE_TYPE, eager=True)})
    return every_code.join(frame, on=code, how="left", maintain_order="left")


def composite_key(high: str, low: str) -> pl.Expr:
    """One ``UInt64`` that orders like the two ``UInt32`` codes ``(high, low)`` (one sort key)."""
    return pl.col(high).cast(pl.UInt64) * (1 << 32) + pl.col(low).cast(pl.UInt64)
