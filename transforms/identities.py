"""Accounting identities checked on every run (dbt-style tests on the outputs).

Each returns human-readable violations; an empty list means the identity holds.
"""

from __future__ import annotations

import polars as pl

from transforms.account_health import effective_im
from transforms.pipeline import SORT_KEYS

TOLERANCE = 1e-6


def strictly_increasing(frame: pl.DataFrame, key: list[str]) -> bool:
    """Every row's key greater than the previous row's (lexicographically; no nulls): then no
    key repeats.  A linear scan, where a duplicate check hashes every key."""
    if frame.height < 2:
        return True
    greater, equal = pl.lit(False), pl.lit(True)
    for column in key:
        value, previous = pl.col(column), pl.col(column).shift()
        greater = greater | (equal & (value > previous))
        equal = equal & (value == previous)
    return bool(frame.select(greater.fill_null(False).slice(1).all()).item())


def has_duplicate_key(frame: pl.DataFrame, key: list[str]) -> bool:
    """Some key appears twice (the tables arrive sorted by key, so the linear check usually decides)."""
    return not strictly_increasing(frame, key) and bool(frame.select(key).is_duplicated().any())


def identity_violations(tables: dict[str, pl.DataFrame], counts: pl.DataFrame) -> list[str]:
    """rows_read = rows_used + rows_quarantined per table; quarantine rows match the counts;
    ``collateral_value_usd = Σ value_after_haircut_usd``; ``im`` equals the figure its mode
    selects; ``Σ haircut_usd ≤ Σ value_usd`` of positive balances; one row per key."""
    problems: list[str] = []
    for row in counts.iter_rows(named=True):
        if row["read"] != row["used"] + row["quarantined"]:
            problems.append(f"{row['table']}: read {row['read']} != used {row['used']} + quarantined {row['quarantined']}")
    by_table = tables["quarantine"].group_by("source_table").len()
    quarantined = dict(zip(by_table["source_table"], by_table["len"]))
    for row in counts.iter_rows(named=True):
        if quarantined.get(row["table"], 0) != row["quarantined"]:
            problems.append(f"{row['table']}: {quarantined.get(row['table'], 0)} quarantine rows, counted {row['quarantined']}")

    accounts = tables["account_margin"]
    collateral = tables["collateral_valuation"]
    per_account = collateral.group_by("account_id").agg(
        pl.col("value_after_haircut_usd").sum().alias("expected"),
        pl.col("haircut_usd").sum().alias("haircut"),
        pl.col("value_usd").clip(lower_bound=0.0).sum().alias("positive_value"),
    )
    joined = accounts.join(per_account, on="account_id", how="left").with_columns(
        pl.col("expected", "haircut", "positive_value").fill_null(0.0)
    )
    scale = pl.max_horizontal(pl.col("expected").abs(), 1.0)
    bad = joined.filter((pl.col("collateral_value_usd") - pl.col("expected")).abs() > TOLERANCE * scale)
    if bad.height:
        problems.append(f"collateral_value_usd != Σ value_after_haircut_usd for {bad.height} accounts")
    over = joined.filter(pl.col("haircut") > pl.col("positive_value") * (1 + TOLERANCE) + TOLERANCE)
    if over.height:
        problems.append(f"Σ haircut_usd > Σ positive value_usd for {over.height} accounts")
    # The published im must equal the figure its (published) mode selects: catches a
    # mode or figure lost or shifted between the account plan and the output table.
    mode_figure = effective_im()
    wrong_im = accounts.filter((pl.col("im") - mode_figure).abs() > TOLERANCE * pl.max_horizontal(pl.col("im").abs(), 1.0))
    if wrong_im.height:
        problems.append(f"im differs from its mode's figure for {wrong_im.height} accounts")
    keys = {table: key for table, key in SORT_KEYS.items() if table != "quarantine"}
    for table, key in keys.items():
        if has_duplicate_key(tables[table], key):
            problems.append(f"{table}: duplicate key {key}")
    return problems
