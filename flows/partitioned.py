"""Every day is computed one way: as margin-group partitions, the whole book being one.

A margin group is margined as one book (SPEC §7) and an account without a group is its
own book, so every figure of an account depends only on the rows of its *partition
key*: its margin group when its valid ``accounts`` row names one, else its own id.
Rows are assigned to ``hash(partition key) mod N``; all rows of one account id
(positions, collateral and every ``accounts`` row, quarantined copies included) land
in the same partition, so duplicate detection and ``complete`` flags are unchanged.

``compute_day(inputs, partitions, out_dir, runner)``:

1. ``transforms.resolve.resolve_shared``: prices, FX rates and instruments checked once
   (their quarantine rows and counts recorded once), the instrument market valued once;
2. with more than one partition, positions and collateral (lazy scans of their files)
   are split by partition: up to ``FILTERED_MAX_PARTITIONS`` each partition reads the
   files itself, keeping its own rows; beyond, they are streamed once into one Parquet
   file per partition (``.spill``); with one, the partition is the day's inputs as they
   are;
3. each partition, in this process (``run_in_process``) or as a Prefect task on a Dask
   cluster (``on_dask``), is ``margin_partition(resolve_day(part, shared))``: its
   identities are checked and its tables written as ``<table>/part-NNNNN.parquet``
   before the next starts; only small figures come back (``PartitionOutcome``);
4. the day tables are computed once from every partition's small figures
   (``stress_summary`` from the partitions' breaches, ``pipeline.day_stress_summary``);
5. the day is a ``DayResults``: the part files of each table (plus the shared tables'
   quarantine file and the day tables' files), the day's counts, warnings, row counts
   and identity problems — the one kind of result the save and the publish take.

Peak memory is one partition's, whatever the size of the day.  Results are bit-identical
whatever the partition count (SPEC §8; ``tests/test_bit_identical.py``).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from flows.progress import say
from flows.results_store import write_durably
from transforms import validation
from transforms.contract import RESULT_TABLES
from transforms.identities import count_violations, identity_violations
from transforms.pipeline import DAY_TABLES, PARTITION_TABLES, day_stress_summary, margin_partition
from transforms.resolve import (
    PARTITIONED_TABLES, MarginInputs, ResolvedDay, SharedDay, day_counts, resolve_day, resolve_shared,
)

#: The large daily tables, streamed from their files into partitions by ``compute_day``.
STREAMED_TABLES = ("positions", "collateral")
PARTITION_SEED = 20_261_116
#: ``--partitions auto``: one partition per this many position rows (about 2.8 GB peak each;
#: a day up to this size is one partition, computed without any split).  A 10M-row
#: day in two partitions peaks at about 3.4 GB instead of 5.1 GB in one, in about the same
#: time: the split (then a 1.6 s spill pass, now 0.74 s a partition) is paid back by the
#: publish loading partition 1 while partition 2 computes (docs/performance.md, issue 16).
ROWS_PER_PARTITION = 5_000_000
#: Up to this many partitions, each partition reads the day's position and collateral
#: files itself and keeps its own rows (a pass over the files per partition) instead of
#: one spill pass writing a file per partition: at 10M rows the spill pass cost as much
#: as four filtered passes (2.9 s against 0.74 s a pass; docs/performance.md, issue 16).
FILTERED_MAX_PARTITIONS = 3


def auto_partitions(position_rows: int) -> int:
    """Partitions for a day of ``position_rows`` (``--partitions auto``): the whole book as
    one partition up to ``ROWS_PER_PARTITION`` rows, else one per ``ROWS_PER_PARTITION``."""
    return max(1, -(-int(position_rows) // ROWS_PER_PARTITION))


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


def split_day(inputs: MarginInputs, partitions: int, spill_dir: Path) -> list[MarginInputs]:
    """One ``MarginInputs`` per partition: ``inputs`` itself for one partition; otherwise
    the accounts split in memory and positions and collateral split lazily: up to
    ``FILTERED_MAX_PARTITIONS`` each partition's tables are its rows of ``inputs``' own
    (``partition_rows``, read when the partition is computed), beyond that they are
    streamed (one pass each) into one Parquet file per partition under ``spill_dir`` and
    each partition's tables are lazy scans of its files.  The shared tables are passed on
    unchanged (resolved once)."""
    if partitions < 1:
        raise ValueError("partitions must be ≥ 1")
    if partitions == 1:
        return [inputs]
    keys = partition_keys(inputs.accounts).collect().lazy()
    accounts = with_partition(inputs.accounts, keys, partitions).collect()
    pieces = {
        "accounts": {k[0]: frame.drop("partition").lazy() for k, frame in accounts.partition_by(
            "partition", as_dict=True, maintain_order=True).items()},
    }
    for table in STREAMED_TABLES:
        rows = getattr(inputs, table)
        if partitions <= FILTERED_MAX_PARTITIONS:
            pieces[table] = {index: partition_rows(rows, keys, partitions, index) for index in range(partitions)}
        else:
            pieces[table] = spill_partitions(rows, keys, partitions, Path(spill_dir) / table)
    return [
        dataclasses.replace(inputs, **{
            table: pieces[table].get(index, getattr(inputs, table).clear()) for table in PARTITIONED_TABLES
        })
        for index in range(partitions)
    ]


def partition_rows(rows: pl.LazyFrame, keys: pl.LazyFrame, partitions: int, index: int) -> pl.LazyFrame:
    """The rows of ``rows`` in partition ``index`` of ``partitions`` (lazy: read when collected)."""
    return with_partition(rows, keys, partitions).filter(pl.col("partition") == index).drop("partition")


def spill_partitions(rows: pl.LazyFrame, keys: pl.LazyFrame, partitions: int, folder: Path) -> dict[int, pl.LazyFrame]:
    """Stream ``rows`` into ``folder/partition=<i>/*.parquet`` in one pass; a scan per non-empty partition."""
    # Uncompressed: the spill files are read back once, at once (lz4/zstd cost CPU on the critical path).
    with_partition(rows, keys, partitions).sink_parquet(
        pl.PartitionBy(folder, key="partition", include_key=False), mkdir=True, compression="uncompressed"
    )
    schema = rows.collect_schema()
    return {
        index: pl.scan_parquet(folder / f"partition={index}" / "*.parquet", schema=schema)
        for index in range(partitions)
        if (folder / f"partition={index}").is_dir()
    }


def merge_warnings(part_warnings: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Every partition's warnings in one order fixed by their values (code, account, then the
    rest), so the run record's samples do not depend on the partition count (SPEC §8)."""
    warnings = pl.concat(part_warnings)
    rest = [name for name in warnings.columns if name not in ("code", "account_id")]
    return warnings.sort("code", "account_id", *rest, nulls_last=True)


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


@dataclasses.dataclass
class DayResults:
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

    def quarantine_rows(self) -> pl.LazyFrame:
        """The day's quarantine rows (a scan of the files)."""
        return pl.scan_parquet(self.tables["quarantine"])


#: Told of each result file as soon as it is written and fsynced: (table, path).  ``flows.eod``
#: passes the day's open ``warehouse.Publication`` here, so DuckDB loads each file while the
#: run writes the next and checks the identities.
OnWritten = Callable[[str, Path], None]


def compute_partition_to_files(shared: SharedDay, partition: MarginInputs, index: int, out_dir: Path,
                               on_written: OnWritten | None = None,
                               resolved: ResolvedDay | None = None) -> PartitionOutcome:
    """``margin_partition`` of one partition, each table written to
    ``out_dir/<table>/part-<index>.parquet`` (fsynced; ``on_written`` is told of each) as
    soon as it is final, its identities checked; the frames are then dropped.
    ``resolved``: the partition already resolved (``resolve_day(partition, shared)``)."""
    rows = {}

    def write(table: str, frame: pl.DataFrame) -> None:  # as soon as the table is final
        path = Path(out_dir) / table / PART_FILE.format(index=index)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(frame, path)
        rows[table] = frame.height
        if on_written is not None:
            on_written(table, path)

    results = margin_partition(resolved if resolved is not None else resolve_day(partition, shared), on_table=write)
    problems = [f"partition {index}: {p}" for p in identity_violations(results.tables, results.counts)]
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
    )


#: Maps [(index, partition inputs)] to their outcomes (in process, or on a Dask cluster).
PartitionRunner = Callable[[SharedDay, list[tuple[int, MarginInputs]], Path], list[PartitionOutcome]]


def run_in_process(shared: SharedDay, parts: list[tuple[int, MarginInputs]], out_dir: Path,
                   on_written: OnWritten | None = None) -> list[PartitionOutcome]:
    """One partition after the other in this process (peak memory: the largest partition,
    plus the next one's resolved rows).  While a partition computes, the next one is
    resolved (read, checked, encoded: ``resolve_day``) on a second thread: that work needs
    nothing of the partition before it, and fills the cores while the computing one runs
    its sorts and numpy sums (docs/performance.md, issue 16)."""
    outcomes = []
    with ThreadPoolExecutor(1, thread_name_prefix="resolve-next") as ahead:
        upcoming = ahead.submit(resolve_day, parts[0][1], shared) if parts else None
        for done, (index, part) in enumerate(parts, start=1):
            resolved = upcoming.result()
            upcoming = ahead.submit(resolve_day, parts[done][1], shared) if done < len(parts) else None
            outcome = compute_partition_to_files(shared, part, index, out_dir, on_written, resolved=resolved)
            del resolved
            say(f"[dim]  partition {done}/{len(parts)}: {outcome.rows['account_margin']:,} accounts, "
                f"{outcome.rows['position_margin']:,} positions[/dim]")
            outcomes.append(outcome)
    return outcomes


def compute_day(
    inputs: MarginInputs,
    partitions: int,
    out_dir: Path,
    run_partitions: PartitionRunner = run_in_process,
    on_written: OnWritten | None = None,
) -> DayResults:
    """The day as ``partitions`` margin-group partitions, results written as files under ``out_dir``.

    Positions and collateral may be lazy scans (``load_inputs(..., scan=STREAMED_TABLES)``)
    or frames; with several partitions they are streamed once into per-partition files
    under ``out_dir/.spill`` (removed afterwards), so neither the inputs nor the results of
    the whole day are ever in memory.  On a real cluster ``out_dir`` must be a folder every
    worker can read and write.  ``on_written`` is told of the files written here (the shared
    tables' quarantine, the day tables); ``run_partitions`` tells it of the partitions' own.
    """
    out_dir = Path(out_dir)
    spill = out_dir / ".spill"
    started = time.perf_counter()
    try:
        shared = resolve_shared(inputs)
        parts = split_day(inputs, partitions, spill)
        split_done = time.perf_counter()
        if partitions > 1:
            say(f"[dim]  split into {partitions} partitions in {split_done - started:.1f}s[/dim]")
        # Empty partitions still run: their (empty) counts and tables keep the day uniform.
        outcomes = sorted(run_partitions(shared, list(enumerate(parts)), out_dir), key=lambda o: o.index)
        partitions_done = time.perf_counter()
    finally:
        shutil.rmtree(spill, ignore_errors=True)
    shared_path = out_dir / "quarantine" / SHARED_PART_FILE
    shared_path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(shared.quarantine, shared_path)
    if on_written is not None:
        on_written("quarantine", shared_path)
    day_tables = {"stress_summary": day_stress_summary(shared, [o.stress_breaches for o in outcomes])}
    for table, frame in day_tables.items():
        path = out_dir / table / DAY_PART_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        write_durably(frame, path)
        if on_written is not None:
            on_written(table, path)
    counts = day_counts(shared, [o.counts for o in outcomes])
    quarantined: dict[str, int] = {}
    for outcome in outcomes:
        for table, n in outcome.quarantined.items():
            quarantined[table] = quarantined.get(table, 0) + n
    for table, n in shared.quarantine.group_by("source_table").len().iter_rows():
        quarantined[table] = quarantined.get(table, 0) + n
    rows = {table: sum(o.rows[table] for o in outcomes) for table in PARTITION_TABLES}
    rows["quarantine"] += shared.quarantine.height
    rows.update({table: frame.height for table, frame in day_tables.items()})
    tables = {
        table: [out_dir / table / DAY_PART_FILE] if table in DAY_TABLES
        else [out_dir / table / PART_FILE.format(index=o.index) for o in outcomes]
        + ([shared_path] if table == "quarantine" else [])
        for table in RESULT_TABLES
    }
    return DayResults(
        tables=tables,
        rows=rows,
        counts=counts,
        warnings=merge_warnings([o.warnings for o in outcomes]),
        problems=[p for o in outcomes for p in o.problems] + count_violations(counts, quarantined),
        scenario_ids=shared.scenario_ids,
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


def on_dask(address: str | None = None, workers: int = 2, processes: bool = True) -> PartitionRunner:
    """A ``PartitionRunner`` submitting each partition as a Prefect task (``margin partition``)
    to a Dask cluster: the one at ``address``, or a temporary local one of ``workers``.
    Only the partition's plan travels to the workers (its inputs are lazy scans of the
    day's files filtered to its rows, or of its spill files, with the small table of
    group members) and only its small ``PartitionOutcome`` travels back."""
    from flows.tasks import margin_partition_task  # imports Prefect

    def run(shared: SharedDay, parts: list[tuple[int, MarginInputs]], out_dir: Path) -> list[PartitionOutcome]:
        with dask_task_runner(address, workers, processes) as runner:
            futures = [
                runner.submit(margin_partition_task, parameters={
                    "shared": shared, "partition": part, "index": index, "out_dir": str(out_dir)})
                for index, part in parts
            ]
            return [future.result() for future in futures]

    return run
