"""One way to compute a day: a resolved partition in, SPEC §8 tables out.

``transforms.resolve`` turns the raw tables into a ``ResolvedDay`` (checked, encoded);
``margin_plan`` composes the concept modules into LazyFrames over it and
``margin_partition`` collects them into a ``MarginResults``.  A day is one or more
margin-group partitions (``flows.partitioned``), the whole book being one partition;
``compute_margin(inputs)`` is the whole book as one partition in memory, with the shared
tables' quarantine and counts (the worked books, tests, and callers computing a subset
of accounts: see ``transforms.resolve``).  No I/O happens here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from transforms import collateral as coll
from transforms import contract
from transforms.contract import INPUT_TABLES, METHODOLOGY_TABLES, RESULT_TABLES  # noqa: F401 (re-exported)
from transforms import encoding
from transforms import groups, netting, portfolio_margin, rule_margin, stress, summation, valuation
from transforms.account_health import account_health
from transforms.resolve import MarginInputs, ResolvedDay, SharedDay, day_counts, resolve_day, resolve_shared  # noqa: F401

POSITION_MARGIN_COLUMNS = contract.result_columns("position_margin")
#: Columns of a valued position before the scan (``worst_scenario_loss`` needs the scan's worst scenario).
VALUED_POSITION_COLUMNS = POSITION_MARGIN_COLUMNS[1:-1]
#: Columns of a valued position the scan reads besides the ``position_margin`` ones.
SCAN_POSITION_COLUMNS = ("option_type", "multiplier")
UNDERLYING_RISK_COLUMNS = contract.result_columns("underlying_risk")
COLLATERAL_VALUATION_COLUMNS = contract.result_columns("collateral_valuation")
ACCOUNT_MARGIN_COLUMNS = contract.result_columns("account_margin")
GROUP_MARGIN_COLUMNS = contract.result_columns("group_margin")
QUARANTINE_COLUMNS = contract.result_columns("quarantine")
#: Order of each output table (``margin_plan`` sorts by it).
SORT_KEYS = contract.RESULT_KEYS
#: SPEC §11 tables (empty when the day has no stress table).
STRESS_TABLES = contract.STRESS_TABLES
#: Computed once for the day from every partition's breaches, never per partition.
DAY_TABLES = ("stress_summary",)
#: The tables each partition computes (``margin_partition``).
PARTITION_TABLES = tuple(name for name in RESULT_TABLES if name not in DAY_TABLES)


@dataclass
class MarginResults:
    """Collected output tables of SPEC §8 (without as_of_date / run_id), row counts per
    input table, and data-quality warnings: of one partition (``margin_partition``, no
    day tables) or of a whole in-memory book (``compute_margin``)."""

    tables: dict[str, pl.DataFrame]
    counts: pl.DataFrame
    warnings: pl.DataFrame
    scenario_ids: list[int] = field(default_factory=list)
    #: Every below-mm counterparty × stress, ladder rungs included (``stress.stress_breaches``):
    #: the day's ``stress_summary`` is computed from all partitions' rows together (``day_stress_summary``).
    stress_breaches: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=stress.STRESS_RESULTS_SCHEMA))


#: Applied to every intermediate frame that several outputs share.
Materialize = Callable[[pl.LazyFrame], pl.LazyFrame]


def keep_lazy(frame: pl.LazyFrame) -> pl.LazyFrame:
    """One plan end to end (for inspection: ``margin_plan(inputs)[name].explain()``)."""
    return frame


def materialized(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Collect a shared intermediate once, so no consumer recomputes it.

    One ``collect_all`` of the whole plan re-executes shared sub-plans, several times
    slower than the staged run (docs/performance.md, "Engine choices").
    """
    return frame.collect().lazy()


@dataclass(frozen=True)
class BookPlan:
    """Lazy figures of every book of one kind (accounts, or margin groups)."""

    positions: pl.LazyFrame  # book × instrument, valued, with rule margin
    underlying_risk: pl.LazyFrame  # book × underlying
    summary: pl.LazyFrame  # book: position_count, gross_im, net_im, position_value_usd, portfolio_im, inter_credit


def book_plan(
    positions: pl.LazyFrame,
    instrument_values: pl.LazyFrame,
    instruments_by_code: pl.DataFrame,
    unit_losses: pl.LazyFrame,
    scenario_ids: list[int],
    offsets: pl.DataFrame,
    book_key: str,
    materialize: Materialize = keep_lazy,
    worst_scenario_losses: bool = False,
) -> BookPlan:
    """Netting, valuation, rule margin and portfolio margin of every book keyed by ``book_key``.

    ``instruments_by_code`` is ``instrument_values`` as ``encoding.by_code`` lays it out:
    each position gathers its instrument's values by code instead of a join.
    ``positions`` comes out in (book, instrument) order, as netting leaves it.
    ``worst_scenario_losses``: ``positions`` gets ``worst_scenario_loss`` (SPEC §5.2;
    published for accounts, not for group books).
    """
    netted = materialize(netting.net_positions(positions, book_key))  # in (book, instrument) order
    # Only the columns the outputs and the scan read are gathered and kept; the scan
    # takes its per-instrument keys and parameters from the instrument table.
    valued = materialize(rule_margin.rule_margin(
        valuation.value_positions(netted, instruments_by_code)
    ).select(book_key, *VALUED_POSITION_COLUMNS, *SCAN_POSITION_COLUMNS))
    scan = portfolio_margin.underlying_scan(valued, instrument_values, unit_losses, scenario_ids, book_key)
    risk = materialize(portfolio_margin.underlying_risk(scan, offsets, book_key))
    summary = position_summary(valued, book_key).join(
        portfolio_margin.portfolio_margin(risk, book_key), on=book_key, how="left"
    )
    if worst_scenario_losses:
        valued = materialize(portfolio_margin.worst_scenario_loss(valued, risk, unit_losses, scenario_ids, book_key))
    return BookPlan(positions=valued, underlying_risk=risk, summary=summary)


def position_summary(valued: pl.LazyFrame, book_key: str) -> pl.LazyFrame:
    """One row per book: ``position_count`` (rows with ``net_qty ≠ 0``), ``gross_im``,
    ``net_im`` and ``position_value_usd`` (Σ ``mv_usd`` of option and spot positions).

    ``valued`` is in (book, instrument) order (``netting.net_positions``); each sum adds
    a book's positions in that order (SPEC §8)."""
    marked = pl.col("kind").is_in(["option", "spot"])
    return summation.ordered_sums(
        valued,
        [book_key],
        {
            "position_count": pl.col("net_qty") != 0,
            "gross_im": "gross_im",
            "net_im": "net_im",
            "position_value_usd": pl.when(marked).then(pl.col("mv_usd")).otherwise(0.0),
        },
        presorted=True,
    )


def _collateral_book(collateral_rows: pl.LazyFrame, fx: pl.LazyFrame, haircuts: pl.LazyFrame, book_key: str,
                     materialize: Materialize = keep_lazy):
    balances = coll.collateral_balances(collateral_rows, book_key)
    valuation_rows = materialize(coll.value_collateral(balances, fx, haircuts, book_key))
    return valuation_rows, coll.collateral_value(valuation_rows, book_key)


#: Told of an output table's final plan as soon as the plan is complete: (table, plan).
Ready = Callable[[str, pl.LazyFrame], None]


def margin_plan(resolved: ResolvedDay, materialize: Materialize = keep_lazy, ready: Ready | None = None
                ) -> dict[str, pl.LazyFrame]:
    """Lazy plans for every output table of one resolved partition, and its warnings.

    ``materialize`` is applied to each shared intermediate (netted books, risk, account
    figures): ``keep_lazy`` gives one plan per output, ``materialized`` (what
    ``margin_partition`` uses) collects each shared frame once.  ``ready`` is told of the
    account book's tables (``position_margin``, ``underlying_risk``) as soon as the
    account book is computed, before the groups, collateral and accounts.
    """
    shared = resolved.shared
    scenario_ids = shared.scenario_ids
    haircuts = shared.haircuts.lazy()
    fx = shared.fx.lazy()
    account_ids, instrument_ids = resolved.account_ids, shared.instrument_ids
    account_code = pl.col(encoding.ACCOUNT_CODE).alias("account_id")
    checked = {table: frame.lazy() for table, frame in resolved.checked.items()}
    positions = resolved.positions.lazy()
    collateral_rows = resolved.collateral.lazy()
    accounts = resolved.accounts.lazy()
    instrument_values = shared.instrument_values.lazy()
    unit_losses = materialize(portfolio_margin.scenario_unit_losses(
        instrument_values.join(positions.select("instrument_id").unique(), on="instrument_id", how="semi"),
        shared.scenarios.lazy(),
        scenario_ids,
        shared.vol_floor,
    ))

    # Accounts.
    # Instrument values laid out by code (row i = instrument code i): positions gather them.
    instruments_by_code = encoding.by_code(shared.instrument_values, "instrument_id", instrument_ids.len())
    account_book = book_plan(
        positions, instrument_values, instruments_by_code, unit_losses, scenario_ids, shared.offsets, "account_id",
        materialize, worst_scenario_losses=True,
    )
    account_id = encoding.decode(account_ids, "account_id")
    account_tables = {
        # Already in (account, instrument) order (netting's order).
        "position_margin": account_book.positions.select(POSITION_MARGIN_COLUMNS)
        .with_columns(account_id, encoding.decode(instrument_ids, "instrument_id")),
        # (account, underlying) order by one integer key: codes rank the ids and names.
        "underlying_risk": account_book.underlying_risk.sort(encoding.composite_key("account_id", "underlying_code"))
        .select(UNDERLYING_RISK_COLUMNS).with_columns(account_id),
    }
    if ready is not None:
        for name, table in account_tables.items():
            ready(name, table)
    collateral_valuation, account_collateral = _collateral_book(
        collateral_rows, fx, haircuts, "account_id", materialize
    )

    # Margin groups.
    membership = materialize(groups.group_membership(accounts))
    group_book = book_plan(
        groups.group_rows(positions, membership), instrument_values, instruments_by_code, unit_losses, scenario_ids,
        shared.offsets, "margin_group", materialize,
    )
    group_collateral_valuation, group_collateral = _collateral_book(
        groups.group_rows(collateral_rows, membership), fx, haircuts, "margin_group", materialize
    )
    group_figures = (
        membership.select("margin_group").unique()
        .join(group_book.summary.select("margin_group", "position_count", "position_value_usd",
                                        pl.col("portfolio_im").alias("group_im")), on="margin_group", how="left")
        .join(group_collateral, on="margin_group", how="left")
    )

    # Every account: valid accounts rows plus every id seen in positions or collateral.
    # The usable rows' ids are taken from their (smaller) netted frames: the account book's
    # positions are in account order, so their distinct ids are the first row of each run.
    held_ids = account_book.positions.select("account_id").filter(
        pl.col("account_id").ne_missing(pl.col("account_id").shift())
    )
    quarantined_ids = [
        checked[t].filter(pl.col("reason").is_not_null()).select(account_code) for t in ("positions", "collateral")
    ]
    seen_ids = pl.concat(
        [accounts.select("account_id"), held_ids, collateral_valuation.select("account_id"), *quarantined_ids]
    ).filter(pl.col("account_id").is_not_null()).unique()
    incomplete_ids = pl.concat(
        [
            checked[t].filter(pl.col("reason").is_not_null()).select(account_code)
            for t in ("positions", "collateral", "accounts")
        ]
    ).filter(pl.col("account_id").is_not_null()).unique().with_columns(pl.lit(False).alias("complete"))
    zero_filled = ["position_count", "gross_im", "net_im", "position_value_usd", "portfolio_im", "inter_credit",
                   "collateral_value_usd", "haircut_usd"]
    account_figures = (
        seen_ids.join(accounts, on="account_id", how="left")
        .join(account_book.summary, on="account_id", how="left")
        .join(account_collateral, on="account_id", how="left")
        .join(incomplete_ids, on="account_id", how="left")
        .with_columns(pl.col(zero_filled).fill_null(0), pl.col("complete").fill_null(True))
    )
    account_margin_core = materialize(account_health(account_figures, shared.maintenance_ratio))
    group_margin = groups.group_margin(membership, group_figures, account_margin_core, shared.maintenance_ratio)
    account_margin = account_margin_core.join(
        group_margin.select("margin_group", pl.col("status").alias("group_status")), on="margin_group", how="left"
    ).with_columns(pl.coalesce("group_status", "status").alias("binding_status"))

    stress_plans = stress_plan(
        shared, membership, account_book.positions, group_book.positions, collateral_valuation,
        group_collateral_valuation, account_margin_core, group_margin, account_ids, materialize,
    )

    # Sorted by each table's key on the codes (the same order as the ids), then decoded.
    warnings = data_quality_warnings(
        account_margin_core, checked["accounts"].with_columns(account_code), account_book.positions, collateral_valuation
    )
    return {
        **account_tables,
        "collateral_valuation": collateral_valuation.select(COLLATERAL_VALUATION_COLUMNS)
        .sort(SORT_KEYS["collateral_valuation"]).with_columns(account_id),
        "account_margin": account_margin.select(ACCOUNT_MARGIN_COLUMNS).sort(SORT_KEYS["account_margin"])
        .with_columns(account_id),
        "group_margin": group_margin.select(GROUP_MARGIN_COLUMNS).sort(SORT_KEYS["group_margin"]),
        "quarantine": resolved.quarantine.lazy().select(QUARANTINE_COLUMNS),
        **stress_plans,
        "warnings": warnings.sort("code", "account_id", nulls_last=True).with_columns(account_id),
    }


def stress_plan(
    shared: SharedDay,
    membership: pl.LazyFrame,
    account_positions: pl.LazyFrame,
    group_positions: pl.LazyFrame,
    account_collateral: pl.LazyFrame,
    group_collateral: pl.LazyFrame,
    account_margin_core: pl.LazyFrame,
    group_margin: pl.LazyFrame,
    account_ids: pl.Series,
    materialize: Materialize = keep_lazy,
) -> dict[str, pl.LazyFrame]:
    """SPEC §11 per counterparty: ``stress_breaches`` (every below-mm counterparty × stress,
    rungs included), ``stress_results`` (the published breaches) and ``liquidation_distance``.

    Counterparties: accounts outside any group (``account_positions`` is the account book in
    (account, instrument) order, codes) and margin groups (their netted book, pooled
    collateral, ``group_equity`` and ``group_mm``).  Empty frames without a stress table.
    """
    table = shared.stress_scenarios
    if table is None:
        return {
            "stress_breaches": pl.LazyFrame(schema=stress.STRESS_RESULTS_SCHEMA),
            "stress_results": pl.LazyFrame(schema=stress.STRESS_RESULTS_SCHEMA),
            "liquidation_distance": pl.LazyFrame(schema=stress.LIQUIDATION_DISTANCE_SCHEMA),
        }
    ids = stress.stress_ids(table)
    count = len(ids)
    rungs = stress.ladder_rungs(table)
    # Moves of every underlying of a valid instrument; instruments revalued once per stress.
    moves = materialize(stress.stress_moves(table, shared.valid_underlyings.lazy()))
    unit_pnl = stress.wide_by_stress(
        stress.stress_unit_pnl(shared.instrument_values.lazy(), moves, shared.vol_floor), "instrument_id", "pnl_unit",
        ids, stress.pnl_column,
    )
    pnl_by_code = encoding.by_code(unit_pnl.collect(), "instrument_id", shared.instrument_ids.len())
    asset_moves = stress.wide_by_stress(
        moves.rename({"underlying": "asset"}), "asset", "price_move", ids, stress.move_column
    )
    haircuts = shared.haircuts.lazy()

    def book(figures, positions, collateral, book_key, book_type, book_id):
        pnl = stress.position_pnl(positions, pnl_by_code, count, book_key)
        change = stress.collateral_change(
            stress.stressed_collateral(collateral, asset_moves, haircuts, count, book_key), count, book_key
        )
        return stress.counterparty_stress(figures, pnl, change, count, book_key).select(
            pl.lit(book_type).alias("book_type"), book_id.alias("book_id"), pl.exclude(book_key)
        )

    member = membership.select("account_id")
    accounts = book(
        account_margin_core.filter(pl.col("margin_group").is_null()).select("account_id", "equity", "mm"),
        # Still in (account, instrument) order: an anti join keeping the left order.
        account_positions.join(member, on="account_id", how="anti", maintain_order="left"),
        account_collateral.join(member, on="account_id", how="anti"),
        "account_id", stress.ACCOUNT_BOOK, encoding.decode(account_ids, "account_id"),
    )
    group_figures = group_margin.select(
        "margin_group", pl.col("group_equity").alias("equity"),
        (pl.col("group_im") * shared.maintenance_ratio).alias("mm"),
    )
    # Group books come out of book_plan in (group, instrument) order too.
    group_books = book(
        group_figures, group_positions, group_collateral, "margin_group", stress.GROUP_BOOK, pl.col("margin_group"),
    )
    counterparties = materialize(pl.concat([accounts, group_books], how="vertical"))
    breaches = materialize(stress.stress_breaches(counterparties, ids))
    return {
        "stress_breaches": breaches,
        "stress_results": stress.stress_results(breaches, rungs),
        "liquidation_distance": stress.liquidation_distance(counterparties, ids, rungs),
    }


def data_quality_warnings(
    account_margin: pl.LazyFrame,
    accounts_checked: pl.LazyFrame,
    positions: pl.LazyFrame,
    collateral_valuation: pl.LazyFrame,
) -> pl.LazyFrame:
    """One row per warning: ``code``, ``account_id``, ``detail`` (recorded in the run record, not quarantined).

    ``account_margin``: one row per account (every id seen in positions or collateral,
    usable or not, plus the valid accounts rows), ``margin_mode`` null exactly when the
    id has no valid accounts row; ``positions``: one row per account × instrument held
    (with ``kind``, ``underlying``); ``collateral_valuation``: one row per account × asset.

    - ``account_not_in_accounts``: an id seen in positions or collateral with no valid accounts row;
    - ``account_row_quarantined``: an accounts row that was quarantined;
    - ``asset_in_spot_and_collateral``: the same asset held as a spot position and as collateral.
    """
    missing = account_margin.filter(pl.col("margin_mode").is_null()).select(
        pl.lit("account_not_in_accounts").alias("code"), "account_id",
        pl.lit("margined with margin_mode = null at max(gross_im, net_im, portfolio_im)").alias("detail"),
    )
    quarantined = accounts_checked.filter(pl.col("reason").is_not_null()).select(
        pl.lit("account_row_quarantined").alias("code"), "account_id",
        pl.format("accounts row quarantined: {}", pl.col("reason")).alias("detail"),
    )
    spot_assets = positions.filter(pl.col("kind") == "spot").select("account_id", pl.col("underlying").alias("asset"))
    both = spot_assets.join(collateral_valuation.select("account_id", "asset"), on=["account_id", "asset"],
                            how="semi").unique().select(
        pl.lit("asset_in_spot_and_collateral").alias("code"), "account_id",
        pl.format("{} held both as a spot position and as collateral", pl.col("asset")).alias("detail"),
    )
    return pl.concat([missing, quarantined, both])


def margin_partition(resolved: ResolvedDay, materialize: Materialize = materialized,
                     on_table: Callable[[str, pl.DataFrame], None] | None = None) -> MarginResults:
    """Every partition table of one resolved partition (each sorted by its table's key), its
    counts (positions, collateral, accounts), warnings and stress breaches.  The quarantine
    holds the partition's own rows; the shared tables' rows and counts are the
    ``SharedDay``'s; the day tables (``stress_summary``) come from ``day_stress_summary``.

    ``materialize`` collects each shared intermediate (``materialized``; the benchmark's
    stage profile passes one that also times it).  ``on_table`` is given each partition
    table as soon as it is final: the account book's two large tables while the rest is
    still being computed (``flows.partitioned`` writes and publishes them meanwhile)."""
    # The final step of the big tables is sorts and gathers over collected frames, where the
    # in-memory engine is faster; the shared intermediates (group-bys and joins) were
    # collected by the streaming engine, and so are the small tables filtered out of them
    # (timings: docs/performance.md, "Engine choices").
    frames: dict[str, pl.DataFrame] = {}

    def ready(name: str, table: pl.LazyFrame) -> None:
        frames[name] = table.collect(engine="in-memory")
        if on_table is not None:
            on_table(name, frames[name])

    plan = margin_plan(resolved, materialize=materialize, ready=ready)
    filtered = ["quarantine", "warnings", "stress_breaches"]
    gathered = [name for name in plan if name not in filtered and name not in frames]
    frames.update(zip(gathered, pl.collect_all([plan[n] for n in gathered], engine="in-memory")))
    if on_table is not None:
        for name in gathered:
            if name in PARTITION_TABLES:
                on_table(name, frames[name])
    frames.update(zip(filtered, pl.collect_all([plan[n] for n in filtered], engine="streaming")))
    if on_table is not None:
        on_table("quarantine", frames["quarantine"])
    return MarginResults(
        tables={name: frames[name] for name in PARTITION_TABLES},
        counts=resolved.counts,
        warnings=frames["warnings"],
        scenario_ids=resolved.shared.scenario_ids,
        stress_breaches=frames["stress_breaches"],
    )


def day_stress_summary(shared: SharedDay, part_breaches: list[pl.DataFrame]) -> pl.DataFrame:
    """The day's ``stress_summary`` (SPEC §11), computed once over every partition's breaches
    (in key order, so the sums do not depend on the partitioning: SPEC §8)."""
    table = shared.stress_scenarios
    if table is None:
        return stress.stress_summary(pl.DataFrame(schema=stress.STRESS_RESULTS_SCHEMA), [], {})
    breaches = pl.concat(part_breaches, how="vertical_relaxed").sort(stress.SORT_KEYS["stress_results"])
    return stress.stress_summary(breaches, stress.stress_ids(table), stress.ladder_moves(table))


def compute_margin(inputs: MarginInputs, materialize: Materialize = materialized) -> MarginResults:
    """The whole book of ``inputs`` as one partition, in memory, with the shared tables'
    quarantine rows, the day's counts and the day tables: what ``margin run`` publishes
    for these inputs (``flows.partitioned.compute_day`` does the same by files)."""
    shared = resolve_shared(inputs)
    results = margin_partition(resolve_day(inputs, shared), materialize)
    tables = dict(results.tables)
    tables["quarantine"] = pl.concat([results.tables["quarantine"], shared.quarantine]).sort(SORT_KEYS["quarantine"])
    tables["stress_summary"] = day_stress_summary(shared, [results.stress_breaches])
    return MarginResults(
        tables={name: tables[name] for name in RESULT_TABLES}, counts=day_counts(shared, [results.counts]),
        warnings=results.warnings, scenario_ids=results.scenario_ids, stress_breaches=results.stress_breaches,
    )
