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
Dask cluster (``compute_margin_on_dask``) through prefect-dask's ``DaskTaskRunner``:
a temporary local cluster (``workers=N``) or an existing one (``address="tcp://…:8786"``).

For a book larger than memory, ``compute_margin_from_files`` never holds the positions
and collateral of the whole day: one streaming pass per table writes them into one
Parquet file per partition (``spill_dir``), and each partition reads only its own file,
so peak memory is bounded by the largest partition (plus the accounts table and the
merged results).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from transforms import validation
from transforms.pipeline import RESULT_TABLES, SORT_KEYS, MarginInputs, MarginResults, compute_margin

SHARED_TABLES = ("prices", "fx_rates", "instruments")
PARTITIONED_TABLES = ("positions", "collateral", "accounts")
#: The large daily tables, streamed from their files into partitions by ``compute_margin_from_files``.
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


def merge_results(shared: SharedTables, parts: Sequence[MarginResults]) -> MarginResults:
    """One ``MarginResults`` as ``compute_margin`` would give for the whole book."""
    tables = {}
    for name in RESULT_TABLES:
        frames = [p.tables[name] for p in parts]
        if name == "quarantine":
            frames = [f.filter(pl.col("source_table").is_in(PARTITIONED_TABLES)) for f in frames]
            frames.append(shared.quarantine)
        tables[name] = pl.concat(frames, how="vertical_relaxed").sort(SORT_KEYS[name])
    per_partition = pl.concat([p.counts for p in parts])
    partitioned = per_partition.filter(pl.col("table").is_in(PARTITIONED_TABLES)).group_by(
        "table", maintain_order=True).agg(pl.col("read", "used", "quarantined").sum())
    methodology = parts[0].counts.filter(~pl.col("table").is_in([*PARTITIONED_TABLES, *SHARED_TABLES]))
    order = parts[0].counts.select("table").with_row_index("position")
    counts = (
        pl.concat([partitioned, shared.counts, methodology])
        .join(order, on="table", how="left").sort("position").drop("position")
    )
    warnings = pl.concat([p.warnings for p in parts]).sort("code", "account_id", nulls_last=True)
    return MarginResults(tables=tables, counts=counts, warnings=warnings, scenario_ids=parts[0].scenario_ids)


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


def compute_margin_from_files(
    inputs_root: Path,
    as_of: dt.date,
    partitions: int,
    spill_dir: Path | None = None,
    run_partitions: Callable[[list[MarginInputs]], list[MarginResults]] | None = None,
) -> MarginResults:
    """``compute_margin_partitioned`` straight from the day's files, memory-bounded: positions
    and collateral are never read whole (``flows.loading.load_inputs(..., scan=...)``), but
    streamed into one file per partition under ``spill_dir`` (a temporary folder by default,
    removed afterwards; on a real cluster, a folder every worker can read)."""
    from flows.loading import load_inputs

    inputs = load_inputs(inputs_root, as_of, scan=STREAMED_TABLES).margin_inputs
    with tempfile.TemporaryDirectory(prefix="margin-partitions-", dir=spill_dir) as scratch:
        shared, parts = split_inputs(inputs, partitions, spill_dir=Path(scratch))
        results = run_partitions(parts) if run_partitions else [compute_margin(p) for p in parts]
    return merge_results(shared, results)


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
    def margin_partition(partition: MarginInputs) -> MarginResults:
        return compute_margin(partition)

    return margin_partition


def compute_margin_on_dask(
    inputs: MarginInputs,
    partitions: int,
    address: str | None = None,
    workers: int = 2,
    processes: bool = True,
) -> MarginResults:
    """``compute_margin_partitioned`` with each partition a Prefect task on a Dask cluster."""
    margin_partition = _margin_partition_task()

    def on_dask(parts: list[MarginInputs]) -> list[MarginResults]:
        with dask_task_runner(address, workers, processes) as runner:
            futures = [runner.submit(margin_partition, parameters={"partition": part}) for part in parts]
            return [future.result() for future in futures]

    return compute_margin_partitioned(inputs, partitions, on_dask)
