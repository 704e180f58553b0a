"""Stress tests and the liquidation ladder per counterparty (SPEC §11).

A *counterparty* is a margin group (its group book, pooled collateral and ``group_mm``)
or an account outside any group (its own book, collateral and ``mm``; accounts missing
from ``accounts`` included), identified by (``book_type``, ``book_id``).

Stresses are full revaluations, computed once per instrument × stress
(``stress_unit_pnl``) and applied to the netted positions like the scenario grid: one
``pnl|i`` column per stress, gathered by instrument code.  Collateral that is an
underlying moves with it and is haircut again with the same tiers
(``transforms.collateral.tiered_haircut``).  The stresses are columns of one frame: the
only Python loops build expressions.

Determinism (SPEC §8): every sum over a counterparty's rows is taken in an order fixed
by the data (``ordered_sums``: rows sorted by book then instrument or asset, summed
run by run), so the figures do not depend on threads or on how the day is partitioned.
A partition (groups never span partitions) emits its below-mm counterparty × stress
rows (``stress_breaches``, ladder rungs included); the day's ``stress_summary`` is
computed once from all of them, sorted by key (``stress_summary``).
"""

from __future__ import annotations

import polars as pl

from transforms import contract
from transforms.collateral import tiered_haircut, tiers_side_by_side
from transforms.summation import add_runs, run_layout, run_starts
from transforms.valuation import black76_value

#: Every underlying not listed under the same ``stress_id``.
ALL_UNDERLYINGS = "*"
LADDER_PREFIX = "ladder"
ACCOUNT_BOOK, GROUP_BOOK = "account", "group"

STRESS_SCENARIO_COLUMNS = ("stress_id", "underlying", "price_move", "vol_move", "description")
STRESS_RESULTS_COLUMNS = contract.result_columns("stress_results")
STRESS_SUMMARY_COLUMNS = contract.result_columns("stress_summary")
LIQUIDATION_DISTANCE_COLUMNS = contract.result_columns("liquidation_distance")
STRESS_RESULTS_SCHEMA = pl.Schema(contract.RESULT_SCHEMAS["stress_results"])
STRESS_SUMMARY_SCHEMA = pl.Schema(contract.RESULT_SCHEMAS["stress_summary"])
LIQUIDATION_DISTANCE_SCHEMA = pl.Schema(contract.RESULT_SCHEMAS["liquidation_distance"])
SORT_KEYS = {table: contract.RESULT_KEYS[table] for table in contract.STRESS_TABLES}


def pnl_column(index: int) -> str:
    """Wide column of stress ``index`` (position in ``stress_ids``): P&L, USD."""
    return f"pnl|{index}"


def collateral_column(index: int) -> str:
    """Wide column of stress ``index``: collateral change after haircuts, USD."""
    return f"collateral|{index}"


def move_column(index: int) -> str:
    """Wide column of stress ``index``: relative move of an underlying's price."""
    return f"move|{index}"


def stress_ids(stresses: pl.DataFrame) -> list[str]:
    """The stresses of the table, sorted (the order of every wide column ``…|i``)."""
    return sorted(stresses["stress_id"].unique().to_list())


def ladder_rungs(stresses: pl.DataFrame) -> pl.DataFrame:
    """One row per ladder rung: ``stress_id``, ``price_move``.

    A rung is a stress whose ``stress_id`` starts with ``ladder`` and that has exactly one
    row, ``underlying = '*'`` with ``vol_move = 0`` (a uniform move of every underlying).
    """
    return (
        stresses.filter(pl.len().over("stress_id") == 1)
        .filter(
            pl.col("stress_id").str.starts_with(LADDER_PREFIX)
            & (pl.col("underlying") == ALL_UNDERLYINGS)
            & (pl.col("vol_move") == 0)
        )
        .select("stress_id", "price_move")
        .sort("stress_id")
    )


def stress_moves(stresses: pl.DataFrame, underlyings: pl.LazyFrame) -> pl.LazyFrame:
    """One row per stress × underlying: ``stress_id``, ``underlying``, ``price_move`` (m_u),
    ``vol_move`` (v_u).

    The underlying's own row of the stress, else the stress's ``*`` row, else no move
    (``m_u = v_u = 0``).  ``underlyings``: column ``underlying``.
    """
    stress_list = pl.LazyFrame({"stress_id": stress_ids(stresses)}, schema={"stress_id": pl.String})
    listed = stresses.lazy().filter(pl.col("underlying") != ALL_UNDERLYINGS).select(
        "stress_id", "underlying", "price_move", "vol_move"
    )
    every = stresses.lazy().filter(pl.col("underlying") == ALL_UNDERLYINGS).select(
        "stress_id", pl.col("price_move").alias("every_price_move"), pl.col("vol_move").alias("every_vol_move")
    )
    return (
        stress_list.join(underlyings.select("underlying").unique(), how="cross")
        .join(listed, on=["stress_id", "underlying"], how="left")
        .join(every, on="stress_id", how="left")
        .select(
            "stress_id", "underlying",
            pl.coalesce("price_move", "every_price_move", pl.lit(0.0)).alias("price_move"),
            pl.coalesce("vol_move", "every_vol_move", pl.lit(0.0)).alias("vol_move"),
        )
    )


def stress_unit_pnl(instrument_values: pl.LazyFrame, moves: pl.LazyFrame, vol_floor: float) -> pl.LazyFrame:
    """P&L of one unit of each instrument in each stress, USD; one row per instrument × stress.

    Full revaluation (no scan range, no cover weight): linear ``multiplier × price × m_u ×
    fx``; option ``multiplier × fx × (B(S_u(1 + m_u), max(σ + v_u, vol_floor)) − B(S_u, σ))``,
    ``B`` Black-76 (SPEC §11).  ``moves``: ``stress_moves``.
    """
    spot, sigma = pl.col("index_price"), pl.col("implied_vol")
    strike, years, option_type = pl.col("strike"), pl.col("years"), pl.col("option_type")
    stressed_spot = spot * (1.0 + pl.col("price_move"))
    stressed_vol = pl.max_horizontal(sigma + pl.col("vol_move"), pl.lit(vol_floor))
    option_pnl = pl.col("multiplier") * pl.col("fx") * (
        black76_value(stressed_spot, strike, stressed_vol, years, option_type)
        - black76_value(spot, strike, sigma, years, option_type)
    )
    linear_pnl = pl.col("multiplier") * pl.col("price") * pl.col("price_move") * pl.col("fx")
    return instrument_values.join(moves, on="underlying", how="inner").select(
        "instrument_id",
        "stress_id",
        pl.when(pl.col("kind") == "option").then(option_pnl).otherwise(linear_pnl).alias("pnl_unit"),
    )


def wide_by_stress(long: pl.LazyFrame, index: str, value: str, ids: list[str], column) -> pl.LazyFrame:
    """``long`` (one row per ``index`` × stress) as one row per ``index`` with ``column(i)`` per stress."""
    wide = long.pivot(on="stress_id", on_columns=ids, index=index, values=value)
    return wide.rename({sid: column(i) for i, sid in enumerate(ids)})


def ordered_sums(frame: pl.DataFrame, key: str, values: dict[str, pl.Expr]) -> pl.DataFrame:
    """One row per run of equal ``key`` in ``frame`` (sorted by it): each ``values`` expression
    summed over the run's rows in row order.

    ``summation.add_runs`` over the runs (``numpy.add.reduceat``'s bits): a sum depends only on its own rows and their
    order, never on threads or on the rows around it (Polars' group-by sums are not
    bit-reproducible, SPEC §8), as ``transforms.summation.run_sums`` but evaluating one
    expression at a time: with one column per stress, evaluating all at once would hold
    positions × stresses floats.
    """
    if not frame.get_column(key).is_sorted():  # a run split in two would give a book two rows
        raise ValueError(f"ordered_sums: rows are not in {key} order")
    starts = run_starts(frame.select(key))
    runs = run_layout(starts, frame.height)
    columns = {key: frame.get_column(key).gather(starts)}
    for name, expression in values.items():
        data = frame.select(expression.cast(pl.Float64)).to_series().to_numpy()
        columns[name] = add_runs(data, runs)
    return pl.DataFrame(columns, schema={key: frame.schema[key], **{name: pl.Float64 for name in values}})


def position_pnl(
    positions: pl.LazyFrame, pnl_by_code: pl.DataFrame, stress_count: int, book_key: str
) -> pl.LazyFrame:
    """One row per book: ``pnl|i = Σ net_qty × pnl_unit_i`` over its netted positions (USD).

    ``positions`` (``book_key``, ``instrument_id`` code, ``net_qty``) must be sorted by
    (book, instrument): the sums are taken in that order (``ordered_sums``).  Row ``c``
    of ``pnl_by_code`` holds instrument code ``c``'s ``pnl|i`` (``encoding.by_code``).
    """
    values = {
        pnl_column(i): pl.col("net_qty")
        * pl.lit(pnl_by_code.get_column(pnl_column(i)).fill_null(0.0)).gather(pl.col("instrument_id"))
        for i in range(stress_count)
    }
    schema = {book_key: positions.collect_schema()[book_key], **{name: pl.Float64 for name in values}}
    return positions.select(book_key, "instrument_id", "net_qty").map_batches(
        lambda frame: ordered_sums(frame, book_key, values), schema=schema
    )


def stressed_collateral(
    valuation: pl.LazyFrame, asset_moves: pl.LazyFrame, haircuts: pl.LazyFrame, stress_count: int, book_key: str
) -> pl.LazyFrame:
    """One row per book × asset that is an underlying: ``collateral|i`` = its value after
    haircut in stress ``i`` − its value after haircut today (USD).

    ``stressed value_usd = value_usd × (1 + m_u)`` (debts too), haircut again with the
    same tiers (SPEC §6, §11).  ``valuation``: ``book_key``, ``asset``, ``value_usd``,
    ``value_after_haircut_usd``; ``asset_moves``: one row per underlying (as ``asset``)
    with ``move|i``.  Assets that are not underlyings do not move and have no row.
    """
    side_by_side, depth = tiers_side_by_side(haircuts)
    stressed = {i: pl.col("value_usd") * (1.0 + pl.col(move_column(i))) for i in range(stress_count)}
    return (
        valuation.select(book_key, "asset", "value_usd", "value_after_haircut_usd")
        .join(asset_moves, on="asset", how="inner")
        .join(side_by_side, on="asset", how="left")
        .select(
            book_key,
            "asset",
            *[
                ((value - tiered_haircut(value, depth)) - pl.col("value_after_haircut_usd")).alias(collateral_column(i))
                for i, value in stressed.items()
            ],
        )
    )


def collateral_change(stressed: pl.LazyFrame, stress_count: int, book_key: str) -> pl.LazyFrame:
    """One row per book with moving collateral: ``collateral|i`` summed over its assets in asset order."""
    values = {collateral_column(i): pl.col(collateral_column(i)) for i in range(stress_count)}
    schema = {book_key: stressed.collect_schema()[book_key], **{name: pl.Float64 for name in values}}
    return stressed.sort(book_key, "asset").map_batches(
        lambda frame: ordered_sums(frame, book_key, values), schema=schema
    )


def stressed_equity(equity: pl.Expr, position_pnl_usd: pl.Expr, collateral_change_usd: pl.Expr) -> pl.Expr:
    """``stressed_equity = equity + position_pnl_usd + collateral_change_usd`` (USD, SPEC §11)."""
    return equity + position_pnl_usd + collateral_change_usd


def shortfall(stressed_equity_usd: pl.Expr) -> pl.Expr:
    """``shortfall_usd = max(0, −stressed_equity)``: the loss the counterparty's own collateral does not cover."""
    return pl.max_horizontal(-stressed_equity_usd, pl.lit(0.0))


def below_mm(equity: pl.Expr, mm: pl.Expr) -> pl.Expr:
    """``equity < mm`` (the counterparty would be liquidated)."""
    return equity < mm


def counterparty_stress(
    figures: pl.LazyFrame, pnl: pl.LazyFrame, collateral: pl.LazyFrame, stress_count: int, book_key: str
) -> pl.LazyFrame:
    """One row per counterparty of one book type: ``figures`` (``book_key``, ``equity``, ``mm``)
    with ``pnl|i`` and ``collateral|i`` (0 for a book without positions or moving collateral)."""
    wide = [*(pnl_column(i) for i in range(stress_count)), *(collateral_column(i) for i in range(stress_count))]
    return (
        figures.join(pnl, on=book_key, how="left")
        .join(collateral, on=book_key, how="left")
        .with_columns(pl.col(wide).fill_null(0.0))
    )


def stress_breaches(counterparties: pl.LazyFrame, ids: list[str]) -> pl.LazyFrame:
    """One row per counterparty × stress where ``below_mm`` holds (ladder rungs included),
    ``STRESS_RESULTS_COLUMNS``, grouped by stress (not sorted within it).

    ``counterparties``: ``book_type``, ``book_id``, ``equity``, ``mm``, ``pnl|i``,
    ``collateral|i``.  Every counterparty in shortfall is below mm (mm ≥ 0), so these rows
    are all the day's summary needs.
    """
    per_stress = []
    for i, sid in enumerate(ids):
        equity = stressed_equity(pl.col("equity"), pl.col(pnl_column(i)), pl.col(collateral_column(i)))
        per_stress.append(
            counterparties.filter(below_mm(equity, pl.col("mm"))).select(
                "book_type",
                "book_id",
                pl.lit(sid, dtype=pl.String).alias("stress_id"),
                pl.col(pnl_column(i)).alias("position_pnl_usd"),
                pl.col(collateral_column(i)).alias("collateral_change_usd"),
                equity.alias("stressed_equity"),
                shortfall(equity).alias("shortfall_usd"),
                "mm",
            )
        )
    if not per_stress:
        return pl.LazyFrame(schema=STRESS_RESULTS_SCHEMA)
    # In stress order; every consumer (stress_results, stress_summary, the day's merge)
    # sorts by key itself, so the millions of ladder breaches are not sorted here.
    return pl.concat(per_stress)


def stress_results(breaches: pl.LazyFrame, rungs: pl.DataFrame) -> pl.LazyFrame:
    """The published breaches: every below-mm counterparty × stress that is not a ladder rung."""
    return breaches.filter(~pl.col("stress_id").is_in(rungs["stress_id"].implode())).select(
        STRESS_RESULTS_COLUMNS
    ).sort(SORT_KEYS["stress_results"])


def liquidation_distance(counterparties: pl.LazyFrame, ids: list[str], rungs: pl.DataFrame) -> pl.LazyFrame:
    """One row per counterparty: ``move_down`` / ``move_up``, the rung of each side with the
    smallest |price_move| at which ``below_mm`` holds (signed; null when none does; 0 when
    the counterparty is already below mm today).  Empty when the table has no rungs."""
    if rungs.height == 0:
        return pl.LazyFrame(schema=LIQUIDATION_DISTANCE_SCHEMA)
    index = {sid: i for i, sid in enumerate(ids)}
    by_distance = rungs.sort(pl.col("price_move").abs(), "stress_id")

    def nearest(side: pl.DataFrame) -> pl.Expr:
        breached = [
            pl.when(below_mm(stressed_equity(pl.col("equity"), pl.col(pnl_column(index[sid])),
                                             pl.col(collateral_column(index[sid]))), pl.col("mm")))
            .then(pl.lit(move, dtype=pl.Float64))
            for sid, move in side.select("stress_id", "price_move").iter_rows()
        ]
        nearest_rung = pl.coalesce(breached) if breached else pl.lit(None, dtype=pl.Float64)
        return pl.when(below_mm(pl.col("equity"), pl.col("mm"))).then(0.0).otherwise(nearest_rung)

    return counterparties.select(
        "book_type",
        "book_id",
        nearest(by_distance.filter(pl.col("price_move") < 0)).alias("move_down"),
        nearest(by_distance.filter(pl.col("price_move") > 0)).alias("move_up"),
    ).sort(SORT_KEYS["liquidation_distance"])


def ladder_moves(stresses: pl.DataFrame) -> dict[str, float]:
    """Ladder rung → its uniform price move (``ladder_rungs`` as a mapping)."""
    return dict(ladder_rungs(stresses).iter_rows())


def stress_summary(breaches: pl.DataFrame, ids: list[str], rung_moves: dict[str, float]) -> pl.DataFrame:
    """One row per stress (rungs included) over all counterparties, from the day's
    ``stress_breaches`` (every partition's, together):

    ``ladder_move`` (a rung's uniform price move; null for other stresses),
    ``counterparties_below_mm``, ``counterparties_in_shortfall``, ``total_shortfall_usd``
    (summed in (book_type, book_id) order), ``cover1_usd`` (largest shortfall),
    ``cover2_usd`` (the two largest), and the counterparties making them (ties by type
    then id; null when that shortfall is 0).
    """
    ordered = breaches.sort("stress_id", "book_type", "book_id")
    totals = ordered_sums(ordered, "stress_id", {"total_shortfall_usd": pl.col("shortfall_usd")})
    counts = ordered.group_by("stress_id").agg(
        pl.len().cast(pl.Int64).alias("counterparties_below_mm"),
        (pl.col("shortfall_usd") > 0).sum().cast(pl.Int64).alias("counterparties_in_shortfall"),
    )
    ranked = ordered.sort(
        ["stress_id", "shortfall_usd", "book_type", "book_id"], descending=[False, True, False, False]
    ).with_columns(pl.int_range(pl.len()).over("stress_id").alias("rank")).filter(pl.col("rank") < 2)

    def cover(rank: int) -> pl.DataFrame:
        top = ranked.filter((pl.col("rank") == rank) & (pl.col("shortfall_usd") > 0))
        return top.select(
            "stress_id",
            pl.col("shortfall_usd").alias(f"shortfall|{rank}"),
            pl.col("book_type").alias(f"cover{rank + 1}_book_type"),
            pl.col("book_id").alias(f"cover{rank + 1}_book_id"),
        )

    first, second = pl.col("shortfall|0").fill_null(0.0), pl.col("shortfall|1").fill_null(0.0)
    return (
        pl.DataFrame({"stress_id": ids, "ladder_move": [rung_moves.get(sid) for sid in ids]},
                     schema={"stress_id": pl.String, "ladder_move": pl.Float64})
        .join(counts, on="stress_id", how="left")
        .join(totals, on="stress_id", how="left")
        .join(cover(0), on="stress_id", how="left")
        .join(cover(1), on="stress_id", how="left")
        .with_columns(
            pl.col("counterparties_below_mm", "counterparties_in_shortfall").fill_null(0),
            pl.col("total_shortfall_usd").fill_null(0.0),
            first.alias("cover1_usd"),
            (first + second).alias("cover2_usd"),
        )
        .select(STRESS_SUMMARY_COLUMNS)
        .sort("stress_id")
    )
