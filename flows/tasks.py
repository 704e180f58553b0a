"""The Prefect tasks and flows: ordinary decorated functions over the plain stages of ``flows.eod``.

Imported only when a command runs through Prefect (``--orchestration``, resolved once by
the CLI in ``flows.orchestration``), because importing Prefect costs seconds:
``flows.eod.run_end_of_day(..., use_tasks=True)`` and the CLI import this module then.  The scheduled deployment
(``margin serve``) serves ``eod_margin`` from here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional, Union

from flows.settings import DEFAULT_DB, DEFAULT_INPUTS, configure_prefect

configure_prefect()  # before Prefect is imported

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NONE as NO_CACHE  # noqa: E402

from flows import eod  # noqa: E402
from flows.loading import LoadedInputs  # noqa: E402
from flows.partitioned import DayResults, PartitionOutcome, compute_partition_to_files  # noqa: E402
from flows.progress import say  # noqa: E402
from transforms.resolve import MarginInputs, SharedDay  # noqa: E402


@task(name="load inputs", cache_policy=NO_CACHE, **eod.IO_RETRIES)
def load_inputs_task(inputs_root: str, as_of: dt.date) -> LoadedInputs:
    return eod.load_step(inputs_root, as_of)


@task(name="compute margin", cache_policy=NO_CACHE)
def compute_margin_task(loaded: LoadedInputs, scratch: str, partitions: int = 1,
                        dask_address: Optional[str] = None, publication=None) -> DayResults:
    return eod.compute_step(loaded, scratch, partitions, dask_address, publication)


@task(name="margin partition", cache_policy=NO_CACHE)
def margin_partition_task(shared: SharedDay, partition: MarginInputs, index: int, out_dir: str) -> PartitionOutcome:
    """One margin-group partition (submitted to a Dask cluster by ``flows.partitioned.on_dask``)."""
    return compute_partition_to_files(shared, partition, index, Path(out_dir))


@task(name="save results", cache_policy=NO_CACHE, **eod.IO_RETRIES)
def save_results_task(db: str, as_of: dt.date, run_id: str, results: DayResults, record: dict) -> str:
    return eod.save_step(db, as_of, run_id, results, record)


@task(name="publish", cache_policy=NO_CACHE, **eod.IO_RETRIES)
def publish_task(db: str, as_of: dt.date, run_id: str, saved: str, record: dict, lock_timeout: Optional[float],
                 publication=None) -> None:
    eod.publish_step(db, as_of, run_id, saved, record, lock_timeout, publication)


@task(name="export", cache_policy=NO_CACHE, **eod.IO_RETRIES)
def export_task(db: str, as_of: dt.date, fmt: str, out: str, reporting_time: dt.datetime, allow_partial: bool,
                inputs: str) -> dict:
    return eod.export_step(db, as_of, fmt, out, reporting_time, allow_partial, inputs)


@flow(name="eod-margin", log_prints=False)
def eod_margin(
    as_of: str = "today",
    inputs: str = str(DEFAULT_INPUTS),
    db: str = str(DEFAULT_DB),
    strict: bool = False,
    timezone: str = "UTC",
    lock_timeout: Optional[float] = None,
    max_quarantined_share: Optional[float] = None,
    partitions: Union[int, str] = "auto",
    dask_address: Optional[str] = None,
) -> dict:
    """End-of-day margin for one business date: load, compute, save, publish.

    ``as_of`` is an ISO date or ``today`` (the scheduled date in ``timezone``, used by
    ``margin serve``); ``lock_timeout`` bounds the wait for the warehouse lock
    (default ``MARGIN_LOCK_TIMEOUT`` or 60 s); ``max_quarantined_share`` overrides the
    policy's quarantine guard; ``partitions`` is a number or ``auto``; ``dask_address``
    runs the partitions on a Dask cluster (``local``: a temporary one)."""
    day = eod.resolve_as_of(as_of, timezone)
    record = eod.run_end_of_day(day, Path(inputs), Path(db), strict, lock_timeout=lock_timeout,
                                max_quarantined_share=max_quarantined_share, partitions=partitions,
                                dask_address=dask_address)
    eod.markdown_artifact(record, Path(db))
    return {k: record[k] for k in ("run_id", "as_of_date", "status", "row_counts", "timings")}


@flow(name="backfill", log_prints=False)
def backfill(
    start: str,
    end: str,
    inputs: str = str(DEFAULT_INPUTS),
    db: str = str(DEFAULT_DB),
    strict: bool = False,
    lock_timeout: Optional[float] = None,
    max_quarantined_share: Optional[float] = None,
    partitions: Union[int, str] = "auto",
    dask_address: Optional[str] = None,
) -> dict:
    """Every business date in [start, end] with inputs, in order; a failed date is reported, the rest continue."""
    return eod.backfill_dates(
        dt.date.fromisoformat(start), dt.date.fromisoformat(end), Path(inputs), Path(db), strict, lock_timeout,
        max_quarantined_share=max_quarantined_share, partitions=partitions, dask_address=dask_address,
    )


@flow(name="export-reports", log_prints=False)
def export_reports(
    as_of: str,
    formats: list[str],
    out: str,
    db: str = str(DEFAULT_DB),
    reporting_time: Optional[str] = None,
    allow_partial: bool = False,
    inputs: str = str(DEFAULT_INPUTS),
) -> dict:
    """The regulatory and analyst exports of a published date (SPEC §10), one task per format.

    ``reporting_time`` (ISO, UTC; default: now, to the second) is the same for every
    format of this flow run, so the files agree with each other.  Raises
    ``ExportRefused`` after trying every format if one was not written."""
    day = dt.date.fromisoformat(as_of)
    when = (
        dt.datetime.fromisoformat(reporting_time.replace("Z", "+00:00")).astimezone(dt.timezone.utc)
        if reporting_time
        else dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    )
    outcome = {fmt: export_task(db, day, fmt, out, when, allow_partial, inputs) for fmt in formats}
    for fmt, summary in outcome.items():
        say(f"{as_of} export {fmt:<9} {summary['records']:,} records, {summary['rejected']} rejected → {out}")
    refused = [fmt for fmt, summary in outcome.items() if not summary["written"]]
    if refused:
        raise eod.ExportRefused(
            f"{as_of}: {', '.join(refused)} not written (records rejected; see the rejections file)"
        )
    return {"as_of_date": as_of, "reporting_time": when.isoformat(), "formats": outcome}
