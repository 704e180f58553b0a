"""Scale-out: the end-of-day methodology run as independent margin-group partitions.

A margin group is margined as one book (SPEC §7) and an account without a group is its
own book, so every figure of an account depends only on the rows of its *partition
key*: its margin group when its valid ``accounts`` row names one, else its own id.
Rows are assigned to ``hash(partition key) mod N``; all rows of one account id
(positions, collateral and every ``accounts`` row, quarantined copies included) land
in the same partition, so duplicate detection and ``complete`` flags are unchanged.

The shared tables (instruments, prices, FX) are validated once, here: their
quarantine rows and counts are recorded once, and the partitions receive only their
usable rows (a position on a quarantined instrument, price or currency is then
quarantined for the same reason as in the single-process run: unknown_instrument,
missing_price, missing_fx).  Methodology tables are passed through unchanged.

Partitions run in-process (``compute_margin_partitioned``) or as Prefect tasks on a
Dask cluster (``compute_margin_to_files(..., run_partitions=on_dask(...))``) through prefect-dask's ``DaskTaskRunner``:
a temporary local cluster (``workers=N``) or an existing one (``address="tcp://…:8786"``).

The production path (``margin run --partitions N``, ``compute_margin_to_files``) never
holds the positions and collateral of the whole day: they come as lazy scans of their
files, one streaming pass per table writes them into one Parquet file per partition,
and each partition reads only its own.  Nor does it hold the day's *results*: each partition checks its own identities and writes its
result tables as Parquet (``<out>/<table>/part-NNNNN.parquet``) before the next one
starts, only the small figures (counts, warnings, row counts, violations) come back, and
the save and publish stages take the files (``flows.results_store``, ``flows.warehouse``).
Peak memory is then one partition's, whatever the size of the day.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from flows.progress import say
from flows.results_store import write_durably
from transforms import stress, validation
from transforms.identities import count_violations, identity_violations
from transforms.pipeline import RESULT_TABLES, SORT_KEYS, MarginInputs, MarginResults, compute_margin

SHARED_TABLES = ("prices", "fx_rates", "instruments")
PARTITIONED_TABLES = ("positions", "collateral", "accounts")
#: The large daily tables, streamed from their files into partitions by ``compute_margin_to_files``.
STREAMED_TABLES = ("positions", "collateral")
PARTITION_SEED = 20_261_116


@dataclasses.dataclass
class SharedTables:
    """The once-validated shared tables: usable rows for the partitions, plus their
    quarantine rows and counts for the run record."""

    usable: dict[str, pl.LazyFrame]
    quarantine: pl.DataFrame
    counts: pl.DataFrame


def validate_shared(inputs: MarginInputs) -> SharedTables:
    """Validate prices, FX rates and instruments once (SPEC §3)."""
    checked = {
        "prices": validation.check_prices(inputs.prices),
        "fx_rates": validation.check_fx_rates(inputs.fx_rates),
        "instruments": validation.check_instruments(inputs.instruments),
    }
    frames = dict(zip(checked, pl.collect_all(list(checked.values()))))
    quarantine = pl.concat([validation.quarantine_rows(frames[t].lazy(), t) for t in SHARED_TABLES]).collect()
    counts = pl.concat(
        [
            frames[t].select(
                pl.lit(t).alias("table"),
                pl.len().cast(pl.Int64).alias("read"),
                pl.col("reason").is_null().sum().cast(pl.Int64).alias("used"),
                pl.col("reason").is_not_null().sum().cast(pl.Int64).alias("quarantined"),
            )
            for t in SHARED_TABLES
        ]
    )
    usable = {t: validation.usable_rows(frames[t].lazy()) for t in SHARED_TABLES}
    return SharedTables(usable=usable, quarantine=quarantine, counts=counts)


def partition_keys(accounts: pl.LazyFrame) -> pl.LazyFrame:
    """One row per account id with a valid accounts row naming a group: ``account_id``, ``partition_key``."""
    valid = validation.usable_rows(validation.check_accounts(accounts))
    return valid.filter(pl.col("margin_group").is_not_null()).select(
        "account_id", pl.col("margin_group").alias("partition_key")
    )


def with_partition(rows: pl.LazyFrame, keys: pl.LazyFrame, partitions: int) -> pl.LazyFrame:
    """Adds ``partition`` (0 … N−1): hash of the row's margin group, else of its account id
    (rows without an account id go to partition 0, where they are quarantined)."""
    key = pl.coalesce("partition_key", "account_id")
    return (
        rows.join(keys, on="account_id", how="left", maintain_order="left")
        .with_columns(
            pl.when(key.is_null()).then(0).otherwise(key.hash(PARTITION_SEED) % partitions)
            .cast(pl.Int32).alias("partition")
        )
        .drop("partition_key")
    )


def split_inputs(
    inputs: MarginInputs, partitions: int, spill_dir: Path | None = None
) -> tuple[SharedTables, list[MarginInputs]]:
    """The shared tables validated once, and one ``MarginInputs`` per partition.

    With ``spill_dir``, positions and collateral are streamed (one pass each) into one
    Parquet file per partition under it, and each partition's tables are lazy scans of
    its files; otherwise they are split in memory.
    """
    if partitions < 1:
        raise ValueError("partitions must be ≥ 1")
    shared = validate_shared(inputs)
    keys = partition_keys(inputs.accounts).collect().lazy()
    spilled = STREAMED_TABLES if spill_dir is not None else ()
    in_memory = [t for t in PARTITIONED_TABLES if t not in spilled]
    tagged = pl.collect_all([with_partition(getattr(inputs, t), keys, partitions) for t in in_memory])
    pieces = {
        table: {k[0]: frame.drop("partition") for k, frame in tagged_frame.partition_by(
            "partition", as_dict=True, maintain_order=True).items()}
        for table, tagged_frame in zip(in_memory, tagged)
    }
    for table in spilled:
        pieces[table] = spill_partitions(getattr(inputs, table), keys, partitions, Path(spill_dir) / table)
    parts = []
    for index in range(partitions):
        own = {}
        for table in PARTITIONED_TABLES:
            empty = getattr(inputs, table).clear()
            piece = pieces[table].get(index)
            own[table] = empty if piece is None else piece.lazy()
        parts.append(dataclasses.replace(inputs, **own, **shared.usable))
    return shared, parts


def spill_partitions(rows: pl.LazyFrame, keys: pl.LazyFrame, partitions: int, folder: Path) -> dict[int, pl.LazyFrame]:
    """Stream ``rows`` into ``folder/partition=<i>/*.parquet`` in one pass; a scan per non-empty partition."""
    with_partition(rows, keys, partitions).sink_parquet(
        pl.PartitionBy(folder, key="partition", include_key=False), mkdir=True
    )
    schema = rows.collect_schema()
    return {
        index: pl.scan_parquet(folder / f"partition={index}" / "*.parquet", schema=schema)
        for index in range(partitions)
        if (folder / f"partition={index}").is_dir()
    }


def merge_counts(shared: SharedTables, part_counts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Rows read / used / quarantined per input table for the whole day: the partitioned
    tables summed over partitions, the shared tables counted once, in ``compute_margin``'s order."""
    partitioned = pl.concat(part_counts).filter(pl.col("table").is_in(PARTITIONED_TABLES)).group_by(
        "table", maintain_order=True).agg(pl.col("read", "used", "quarantined").sum())
    methodology = part_counts[0].filter(~pl.col("table").is_in([*PARTITIONED_TABLES, *SHARED_TABLES]))
    order = part_counts[0].select("table").with_row_index("position")
    return (
        pl.concat([partitioned, shared.counts, methodology])
        .join(order, on="table", how="left").sort("position").drop("position")
    )


def merge_warnings(part_warnings: Sequence[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(part_warnings).sort("code", "account_id", nulls_last=True)


#: Computed once for the day from every partition's breaches, never per partition.
DAY_TABLES = ("stress_summary",)


def day_stress_summary(
    part_breaches: Sequence[pl.DataFrame], stress_ids: list[str], ladder_moves: dict[str, float]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The day's breaches (sorted by key) and ``stress_summary`` computed once over them (SPEC §8, §11)."""
    breaches = pl.concat(part_breaches, how="vertical_relaxed").sort(stress.SORT_KEYS["stress_results"])
    return breaches, stress.stress_summary(breaches, stress_ids, ladder_moves)


def merge_results(shared: SharedTables, parts: Sequence[MarginResults]) -> MarginResults:
    """One ``MarginResults`` as ``compute_margin`` would give for the whole book."""
    breaches, summary = day_stress_summary([p.stress_breaches for p in parts], parts[0].stress_ids,
                                           parts[0].ladder_moves)
    tables = {"stress_summary": summary}
    for name in RESULT_TABLES:
        if name in DAY_TABLES:
            continue
        frames = [p.tables[name] for p in parts]
        if name == "quarantine":
            frames = [f.filter(pl.col("source_table").is_in(PARTITIONED_TABLES)) for f in frames]
            frames.append(shared.quarantine)
        tables[name] = pl.concat(frames, how="vertical_relaxed").sort(SORT_KEYS[name])
    return MarginResults(
        tables=tables,
        counts=merge_counts(shared, [p.counts for p in parts]),
        warnings=merge_warnings([p.warnings for p in parts]),
        scenario_ids=parts[0].scenario_ids,
        stress_breaches=breaches,
        stress_ids=parts[0].stress_ids,
        ladder_moves=parts[0].ladder_moves,
    )


def compute_margin_partitioned(
    inputs: MarginInputs,
    partitions: int,
    run_partitions: Callable[[list[MarginInputs]], list[MarginResults]] | None = None,
) -> MarginResults:
    """``compute_margin`` by margin-group partitions; identical results.

    ``run_partitions`` maps the partition inputs to their results (default: one after
    the other in this process, which bounds peak memory by the largest partition's
    intermediates instead of the whole book's).
    """
    shared, parts = split_inputs(inputs, partitions)
    results = run_partitions(parts) if run_partitions else [compute_margin(p) for p in parts]
    return merge_results(shared, results)


PART_FILE = "part-{index:05d}.parquet"
SHARED_PART_FILE = "part-shared.parquet"
DAY_PART_FILE = "part-day.parquet"


@dataclasses.dataclass
class PartitionOutcome:
    """What a partition sends back once its result tables are on disk: small figures only."""

    index: int
    rows: dict[str, int]  # result table → rows written
    quarantined: dict[str, int]  # input table → rows in this partition's quarantine
    counts: pl.DataFrame
    warnings: pl.DataFrame
    problems: list[str]  # identity violations within the partition
    scenario_ids: list[int]
    stress_breaches: pl.DataFrame  # below-mm counterparty × stress rows, for the day's stress_summary
    stress_ids: list[str]
    ladder_moves: dict[str, float]


@dataclasses.dataclass
class StoredResults:
    """A day's results as Parquet files, one per partition and table (``tables``: table →
    files), with the figures the run record needs in memory.  ``problems`` are the
    identity violations (each partition's, and the day's row-count identities)."""

    tables: dict[str, list[Path]]
    rows: dict[str, int]
    counts: pl.DataFrame
    warnings: pl.DataFrame
    problems: list[str]
    scenario_ids: list[int]
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # split, partitions, merge (s)

    def quarantine_reasons(self) -> pl.DataFrame:
        """``reason``, ``len``: quarantined rows per reason (read from the files)."""
        return pl.scan_parquet(self.tables["quarantine"]).group_by("reason").len().sort("reason").collect()

    def collect(self) -> MarginResults:
        """The whole day in memory, each table sorted by its key (for small books and tests)."""
        tables = {name: pl.read_parquet(files).sort(SORT_KEYS[name]) for name, files in self.tables.items()}
        return MarginResults(tables=tables, counts=self.counts, warnings=self.warnings,
                             scenario_ids=self.scenario_ids)


def compute_partition_to_files(partition: MarginInputs, index: int, out_dir: Path) -> PartitionOutcome:
    """``compute_margin`` of one partition, its identities checked, its tables written to
    ``out_dir/<table>/part-<index>.parquet`` (fsynced); the frames are then dropped."""
    results = compute_margin(partition)
    problems = [f"partition {index}: {p}" for p in identity_violations(results.tables, results.counts)]
    rows = {}
    for table in RESULT_TABLES:
        if table in DAY_TABLES:
            continue
        frame = results.tables[table]
        if table == "quarantine":  # the shared tables' quarantine is written once, by the caller
            frame = frame.filter(pl.col("source_table").is_in(PARTITIONED_TABLES))
        path = Path(out_dir) / table / PART_FILE.format(index=index)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(frame, path)
        rows[table] = frame.height
    by_table = results.tables["quarantine"].group_by("source_table").len()
    return PartitionOutcome(
        index=index,
        rows=rows,
        quarantined=dict(zip(by_table["source_table"].to_list(), by_table["len"].to_list())),
        counts=results.counts,
        warnings=results.warnings,
        problems=problems,
        scenario_ids=results.scenario_ids,
        stress_breaches=results.stress_breaches,
        stress_ids=results.stress_ids,
        ladder_moves=results.ladder_moves,
    )


#: Maps [(index, partition inputs)] to their outcomes (in process, or on a Dask cluster).
PartitionRunner = Callable[[list[tuple[int, MarginInputs]], Path], list[PartitionOutcome]]


def run_in_process(parts: list[tuple[int, MarginInputs]], out_dir: Path) -> list[PartitionOutcome]:
    """One partition after the other in this process (peak memory: the largest partition)."""
    outcomes = []
    for done, (index, part) in enumerate(parts, start=1):
        outcome = compute_partition_to_files(part, index, out_dir)
        say(f"[dim]  partition {done}/{len(parts)}: {outcome.rows['account_margin']:,} accounts, "
            f"{outcome.rows['position_margin']:,} positions[/dim]")
        outcomes.append(outcome)
    return outcomes


def compute_margin_to_files(
    inputs: MarginInputs,
    partitions: int,
    out_dir: Path,
    run_partitions: PartitionRunner = run_in_process,
) -> StoredResults:
    """The day by margin-group partitions, results written as files under ``out_dir``.

    Positions and collateral (lazy scans from ``load_inputs(..., scan=STREAMED_TABLES)``,
    or frames) are streamed once into per-partition files under ``out_dir/.spill`` (removed
    afterwards), so neither the inputs nor the results of the whole day are ever in memory.
    On a real cluster ``out_dir`` must be a folder every worker can read and write.
    """
    out_dir = Path(out_dir)
    spill = out_dir / ".spill"
    started = time.perf_counter()
    try:
        shared, parts = split_inputs(inputs, partitions, spill_dir=spill)
        split_done = time.perf_counter()
        say(f"[dim]  split into {partitions} partitions in {split_done - started:.1f}s[/dim]")
        # Empty partitions still run: their (empty) counts and tables keep the merge uniform.
        outcomes = sorted(run_partitions(list(enumerate(parts)), out_dir), key=lambda o: o.index)
        partitions_done = time.perf_counter()
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    shared_path = out_dir / "quarantine" / SHARED_PART_FILE
    shared_path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(shared.quarantine, shared_path)
    _, summary = day_stress_summary([o.stress_breaches for o in outcomes], outcomes[0].stress_ids,
                                    outcomes[0].ladder_moves)
    day_files = {"stress_summary": out_dir / "stress_summary" / DAY_PART_FILE}
    day_files["stress_summary"].parent.mkdir(parents=True, exist_ok=True)
    write_durably(summary, day_files["stress_summary"])
    counts = merge_counts(shared, [o.counts for o in outcomes])
    quarantined: dict[str, int] = {}
    for outcome in outcomes:
        for table, n in outcome.quarantined.items():
            if table in PARTITIONED_TABLES:
                quarantined[table] = quarantined.get(table, 0) + n
    for table, n in shared.quarantine.group_by("source_table").len().iter_rows():
        quarantined[table] = quarantined.get(table, 0) + n
    rows = {table: sum(o.rows[table] for o in outcomes) for table in RESULT_TABLES if table not in DAY_TABLES}
    rows["quarantine"] += shared.quarantine.height
    rows["stress_summary"] = summary.height
    tables = {
        table: [out_dir / table / PART_FILE.format(index=o.index) for o in outcomes]
        + ([shared_path] if table == "quarantine" else [])
        for table in RESULT_TABLES
        if table not in DAY_TABLES
    } | {table: [path] for table, path in day_files.items()}
    return StoredResults(
        tables=tables,
        rows=rows,
        counts=counts,
        warnings=merge_warnings([o.warnings for o in outcomes]),
        problems=[p for o in outcomes for p in o.problems] + count_violations(counts, quarantined),
        scenario_ids=outcomes[0].scenario_ids,
        timings={
            "split": round(split_done - started, 4),
            "partitions": round(partitions_done - split_done, 4),
            "merge": round(time.perf_counter() - partitions_done, 4),
        },
    )


def dask_task_runner(address: str | None = None, workers: int = 2, processes: bool = True):
    """A prefect-dask ``DaskTaskRunner``: an existing cluster at ``address``
    (``tcp://scheduler:8786``), or a temporary ``LocalCluster`` of ``workers`` workers,
    one thread each (Polars already uses every core of its worker)."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": processes,
                        "dashboard_address": None}
    )


def _margin_partition_task():
    from flows.settings import configure_prefect

    configure_prefect()
    from prefect import task
    from prefect.cache_policies import NONE as NO_CACHE

    @task(name="margin partition", cache_policy=NO_CACHE)
    def margin_partition(partition: MarginInputs, index: int, out_dir: str) -> PartitionOutcome:
        return compute_partition_to_files(partition, index, Path(out_dir))

    return margin_partition


def on_dask(address: str | None = None, workers: int = 2, processes: bool = True) -> PartitionRunner:
    """A ``PartitionRunner`` submitting each partition as a Prefect task (``margin partition``)
    to a Dask cluster: the one at ``address``, or a temporary local one of ``workers``.
    Only the partition's file paths travel to the workers (its inputs are lazy scans of
    the spill files) and only its small ``PartitionOutcome`` travels back."""
    margin_partition = _margin_partition_task()

    def run(parts: list[tuple[int, MarginInputs]], out_dir: Path) -> list[PartitionOutcome]:
        with dask_task_runner(address, workers, processes) as runner:
            futures = [
                runner.submit(margin_partition, parameters={"partition": part, "index": index, "out_dir": str(out_dir)})
                for index, part in parts
            ]
            return [future.result() for future in futures]

    return run
