"""The quarantine guard (SPEC §3): a bad feed must not silently shrink the book.

A quarantined position is margined by nobody.  When the quarantined share of the
``positions`` rows exceeds ``max_quarantined_position_share`` the run fails before
publishing, with one line naming the share, the limit, and the largest reasons with
what caused most of them: the instrument (unknown, expired, no price, no vol, a bad
row), the currency (``missing_fx``) or the underlying (``missing_index``,
``missing_risk_params``).
"""

from __future__ import annotations

import polars as pl

#: What a quarantined position row is blamed on, by reason: ``currency`` and
#: ``underlying`` are its instrument's; everything else is the instrument itself.
CULPRIT_BY_REASON = {"missing_fx": "currency", "missing_index": "underlying", "missing_risk_params": "underlying"}


def quarantine_culprits(quarantine: pl.LazyFrame, instruments: pl.LazyFrame) -> pl.LazyFrame:
    """One row per (``reason``, ``culprit``) of the quarantined ``positions`` rows, with
    ``rows`` (their count), largest first.

    ``quarantine``: the run's quarantine table (``source_table``, ``row_json``,
    ``reason``); ``instruments``: the day's instrument master (the first row of an
    id gives its currency and underlying)."""
    master = instruments.select("instrument_id", "currency", "underlying").unique(
        "instrument_id", keep="first", maintain_order=True)
    blamed = pl.coalesce(
        [pl.when(pl.col("reason") == reason).then(pl.col(column)) for reason, column in CULPRIT_BY_REASON.items()]
    )
    return (
        quarantine.filter(pl.col("source_table") == "positions")
        .select("reason", pl.col("row_json").str.json_path_match("$.instrument_id").alias("instrument_id"))
        .join(master, on="instrument_id", how="left")
        .select("reason", pl.coalesce(blamed, "instrument_id", pl.lit("(no instrument_id)")).alias("culprit"))
        .group_by("reason", "culprit")
        .agg(pl.len().cast(pl.Int64).alias("rows"))
        .sort(["rows", "reason", "culprit"], descending=[True, False, False])
    )


def _percent(share: float, digits: int) -> str:
    return f"{share * 100:.{digits}g} %"


def quarantine_guard(read: int, quarantined: int, limit: float, culprits: pl.LazyFrame | pl.DataFrame,
                     top: int = 3) -> str | None:
    """The guard's one-line reason when ``quarantined / read > limit`` (strictly), else None.

    ``culprits``: ``quarantine_culprits`` (collected only when the guard trips).  Names the ``top`` reasons by rows,
    each with its ``top`` culprits, e.g. ``quarantine guard: 12.5 % of position rows
    quarantined (limit 1 %): missing_price 2,443 (BTC-PERP 2,443); nothing published``."""
    if read == 0 or quarantined / read <= limit:
        return None
    share = quarantined / read
    culprits = culprits.collect() if isinstance(culprits, pl.LazyFrame) else culprits
    digits = 3
    while _percent(share, digits) == _percent(limit, digits) and digits < 12:
        digits += 1  # 1.004 % against a 1 % limit must not read "1 % (limit 1 %)"
    by_reason = (
        culprits.group_by("reason").agg(pl.col("rows").sum())
        .sort(["rows", "reason"], descending=[True, False]).head(top)
    )
    parts = []
    for reason, rows in by_reason.iter_rows():
        causes = culprits.filter(pl.col("reason") == reason).head(top)
        named = ", ".join(f"{culprit} {count:,}" for culprit, count in causes.select("culprit", "rows").iter_rows())
        more = culprits.filter(pl.col("reason") == reason).height - causes.height
        parts.append(f"{reason} {rows:,} ({named}{f', {more:,} more' if more > 0 else ''})")
    return (
        f"quarantine guard: {_percent(share, digits)} of position rows quarantined "
        f"(limit {_percent(limit, digits)}): {', '.join(parts)}; nothing published"
    )
