"""The end-of-day run: load → compute (resolve, margin by partitions) → check → save → publish.

``run_end_of_day`` runs the stages, each a plain function here (``load_step``,
``compute_step``, ``save_step``, ``publish_step``); with ``use_tasks`` it calls their
Prefect tasks instead, defined in ``flows.tasks`` (imported only then: the Prefect
import costs seconds), which also holds the flows (``eod_margin``, ``backfill``,
``export_reports``).  The methodology is ``transforms`` (one path: ``flows.partitioned.
compute_day`` over ``transforms.resolve`` and ``transforms.pipeline.margin_partition``);
I/O is in ``flows.loading``, ``flows.results_store`` and ``flows.warehouse``.  Only I/O
tasks retry.  Every parameter comes from the caller (the CLI or a flow run), never from
the environment.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import Union
from zoneinfo import ZoneInfo

from flows.settings import PROJECT_ROOT, default_lock_timeout, results_dir_for

import duckdb
import polars as pl

from flows import orchestration, partitioned, results_store, run_lock, warehouse
from flows.input_layout import input_dates
from flows.loading import LoadedInputs, StructuralError, load_inputs
from flows.partitioned import DayResults
from flows.progress import StageTimer, say
from flows.warehouse import fault_point
from transforms.quarantine_guard import quarantine_culprits, quarantine_guard

class RunFailed(RuntimeError):
    """The run did not publish; the message is the one-line reason."""


@functools.cache
def code_version() -> str:
    """Package version plus the git commit of the checkout, when there is one."""
    try:
        version = metadata.version("margin-aggregation")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    try:
        commit = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no", "--", "flows", "transforms", "sql"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        return f"{version}+g{commit}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return version


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def warnings_summary(warnings: pl.DataFrame, sample: int = 10) -> dict:
    """code → {count, sample account ids} for the run record."""
    summary = {}
    for (code,), rows in warnings.group_by("code", maintain_order=True):
        ids = rows["account_id"].drop_nulls().head(sample).to_list()
        summary[code] = {"count": rows.height, "sample": ids, "detail": rows["detail"][0]}
    return dict(sorted(summary.items()))


def _transient_io_error(task, task_run, state) -> bool:
    """Retry condition of the I/O tasks: only errors that another attempt can cure.

    A structural input error, a failed identity check or a warehouse still locked after
    its bounded wait is final (retrying would only multiply the wait)."""
    try:
        state.result()
    except (StructuralError, warehouse.WarehouseLocked):
        return False
    except (OSError, duckdb.IOException):
        return True
    except BaseException:
        return False
    return False


IO_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": _transient_io_error}


def load_step(inputs_root: str, as_of: dt.date) -> LoadedInputs:
    """The day's inputs; positions and collateral stay lazy scans of their files, read by
    the compute (whole, or streamed into partitions)."""
    return load_inputs(Path(inputs_root), as_of, scan=partitioned.STREAMED_TABLES)


#: ``--partitions``: a number ≥ 1, or ``auto`` (by the day's position rows).
Partitions = Union[int, str]


def partition_count(partitions: Partitions, loaded: LoadedInputs, dask_address: str | None = None) -> int:
    """``partitions`` as a number: ``auto`` by the day's position rows
    (``partitioned.auto_partitions``); at least 2 on a Dask cluster."""
    if str(partitions).strip().lower() == "auto":
        rows = loaded.margin_inputs.positions.select(pl.len()).collect().item()
        count = partitioned.auto_partitions(rows)
    else:
        try:
            count = int(partitions)
        except ValueError:
            count = 0
        if count < 1:
            raise RunFailed(f"--partitions {partitions!r}: use a number ≥ 1 or auto")
    return max(count, 2) if dask_address else count


def compute_step(loaded: LoadedInputs, scratch: str, partitions: int = 1, dask_address: str | None = None,
                 publication: warehouse.Publication | None = None) -> DayResults:
    """The day as ``partitions`` margin-group partitions (the whole book as one when 1), on
    the Dask cluster at ``dask_address`` (``local``: a temporary one) or in this process;
    result tables are written under ``scratch``, each handed to ``publication`` (in
    process) as soon as it is written."""
    on_written = publication.insert_file if publication is not None and not dask_address else None
    runner = functools.partial(partitioned.run_in_process, on_written=on_written)
    if dask_address:
        runner = partitioned.on_dask(address=None if dask_address == "local" else dask_address)
    return partitioned.compute_day(loaded.margin_inputs, partitions, Path(scratch), runner, on_written)


#: The publish transaction is opened before computing only for a day of at most this many
#: partitions (10M position rows with ``auto``): it holds the warehouse's write lock, so
#: analysts' new sessions wait from the end of the load to the commit (about 20 s at 10M
#: rows).  Larger days publish their saved files at the end, holding the lock only then.
EARLY_PUBLISH_MAX_PARTITIONS = 2


def begin_publication(db: Path, as_of: dt.date, run_id: str) -> warehouse.Publication | None:
    """The date's publish transaction, opened before computing when the warehouse is free
    now, so DuckDB loads each result file while the run computes, writes and checks the
    rest; the run commits it at the end (SPEC §8: still one transaction, nothing visible
    before COMMIT).  ``None`` when the warehouse cannot be opened at once (an analyst's
    session holds it): the run then publishes from its saved files at the end, waiting
    for the lock as before."""
    try:
        return warehouse.Publication(db, as_of, run_id, lock_timeout=0)
    except (warehouse.WarehouseLocked, duckdb.Error, OSError):
        return None


def save_step(db: str, as_of: dt.date, run_id: str, results: DayResults, record: dict) -> str:
    return str(results_store.save_results(results_dir_for(Path(db)), as_of, run_id, results.tables, record))


def publish_step(db: str, as_of: dt.date, run_id: str, saved: str, record: dict, lock_timeout: float | None,
                 publication: warehouse.Publication | None = None) -> None:
    """Commit the date's ``publication`` (filled while the run computed) or, without one (or
    once it has failed: a retry), load the saved Parquet of the date (``saved``) into the
    warehouse in one transaction."""
    tables = results_store.table_files(Path(saved), run_id=run_id)
    if publication is not None:
        if publication.holds(tables):
            try:
                publication.commit(record)
                return
            except warehouse.InsertFailed as error:  # nothing committed: the saved files are complete
                say(f"[yellow]{_one_line(error)}; publishing the saved results instead[/yellow]")
        publication.abort()  # never leave this run's own transaction open beside the one below
    warehouse.publish_date(Path(db), as_of, run_id, tables, record, lock_timeout=lock_timeout)


def run_end_of_day(
    as_of: dt.date,
    inputs: Path,
    db: Path,
    strict: bool = False,
    *,
    use_tasks: bool = True,
    lock_timeout: float | None = None,
    max_quarantined_share: float | None = None,
    partitions: Partitions = "auto",
    dask_address: str | None = None,
) -> dict:
    """One date end to end; returns the run record.  Raises ``RunFailed`` with a one-line reason.

    The run record is appended to the run log at the start (``running``) and at the end
    (``succeeded`` / ``failed``); the warehouse ``runs`` table receives it with the
    publish, or at the next publish when the warehouse could not be written.
    ``use_tasks=False`` runs the same stages as plain calls (no Prefect run).
    ``max_quarantined_share`` (``--max-quarantined-share``) overrides the policy's
    ``max_quarantined_position_share`` (SPEC §3); ``strict`` wins over both.
    ``lock_timeout``: seconds to wait for the warehouse (``None``: ``MARGIN_LOCK_TIMEOUT``
    or 60); ``partitions``: a number, or ``auto`` (by the day's position rows);
    ``dask_address``: run the partitions on a Dask cluster (``local``: a temporary one).
    """
    if use_tasks:
        from flows import tasks

        load, compute, save, publish = (
            tasks.load_inputs_task, tasks.compute_margin_task, tasks.save_results_task, tasks.publish_task
        )
    else:
        load, compute, save, publish = load_step, compute_step, save_step, publish_step
    run_id = f"{as_of.isoformat()}-{uuid.uuid4().hex[:12]}"
    timer = StageTimer(as_of.isoformat())
    record: dict = {
        "run_id": run_id,
        "as_of_date": as_of.isoformat(),
        "started_at": _utcnow().isoformat(),
        "finished_at": None,
        "status": "running",
        "error": None,
        "code_version": code_version(),
        "parameters": {"inputs": str(inputs), "db": str(db), "strict": strict,
                       "max_quarantined_share": max_quarantined_share},
        "input_checksums": {},
        "row_counts": {},
        "timings": timer.timings,
        "warnings": {},
        "process": run_lock.this_process(),
    }
    try:
        warehouse.append_run_log(db, record)
    except OSError as error:
        raise RunFailed(f"cannot write the run log beside the warehouse {db}: {_one_line(error)}") from error
    stage = "load"
    run_serialised = contextlib.ExitStack()  # SPEC §8: one run of the warehouse at a time, load to publish
    publication: warehouse.Publication | None = None
    try:
        stage = "lock"
        if lock_timeout is None:
            lock_timeout = default_lock_timeout()
        run_serialised.enter_context(run_lock.hold_run_lock(db, timeout=lock_timeout, run_id=run_id))
        warehouse.check_warehouse_file(db)  # before computing anything
        stage = "load"
        with contextlib.ExitStack() as scratch_stack:
            with timer.stage("load") as note:
                loaded = load(str(inputs), as_of)
                note["note"] = f"{len(loaded.files)} files"
            partition_total = partition_count(partitions, loaded, dask_address)
            record["parameters"].update({"partitions": partition_total, "dask_address": dask_address})
            fault_point("load")
            record["input_checksums"] = loaded.checksums
            record["parameters"].update(
                {k: loaded.policy[k] for k in ("maintenance_ratio", "vol_floor", "reporting_lei", "collateralisation_category",
                                               "max_quarantined_position_share")}
            )
            guard_limit = (loaded.policy["max_quarantined_position_share"] if max_quarantined_share is None
                           else max_quarantined_share)
            instruments = loaded.margin_inputs.instruments
            record["parameters"]["files"] = loaded.files
            if not dask_address and partition_total <= EARLY_PUBLISH_MAX_PARTITIONS:
                publication = begin_publication(db, as_of, run_id)
            stage = "compute"
            with timer.stage("compute") as note:
                # The result tables are written here as each partition is computed (and
                # handed to the publication, which loads them meanwhile).
                scratch = str(scratch_stack.enter_context(
                    results_store.scratch_folder(results_dir_for(db), as_of, run_id)))
                if publication is not None:  # rolled back (unless committed) before its files are removed
                    scratch_stack.callback(publication.abort)
                results = compute(loaded, scratch, partition_total, dask_address, publication)
                del loaded  # no day-sized frame is held from here on
                counts = {r["table"]: {k: r[k] for k in ("read", "used", "quarantined")} for r in results.counts.to_dicts()}
                result_rows = dict(results.rows)
                timer.timings.update({f"compute_{k}": v for k, v in results.timings.items()})
                note["note"] = (
                    f"{counts['positions']['read']:,} position rows, {result_rows['account_margin']:,} accounts, "
                    f"{result_rows['quarantine']:,} quarantined, {partition_total} partition(s)"
                )
            fault_point("compute")
            record["row_counts"] = counts
            record["warnings"] = warnings_summary(results.warnings)
            stage = "check"
            with timer.stage("check") as note:
                problems = results.problems
                note["note"] = "each partition's identities (checked as it ran) and the day's row counts"
            if problems:
                raise RunFailed("identity check failed: " + "; ".join(problems[:3]))
            quarantined = result_rows["quarantine"]
            if strict and quarantined:
                detail = ", ".join(f"{r}={n}" for r, n in results.quarantine_reasons().iter_rows())
                raise RunFailed(f"--strict: {quarantined} rows quarantined ({detail})")
            guard = quarantine_guard(  # SPEC §3: a bad feed must not silently shrink the book
                counts["positions"]["read"], counts["positions"]["quarantined"], guard_limit,
                quarantine_culprits(results.quarantine_rows(), instruments),
            )
            if guard:
                raise RunFailed(guard)
            record["status"] = "succeeded"
            total_rows = sum(result_rows.values())
            stage = "save"
            with timer.stage("save") as note:
                record["finished_at"] = _utcnow().isoformat()
                saved = save(str(db), as_of, run_id, results, _final(record))
                note["note"] = f"{total_rows:,} rows in {len(results.tables)} Parquet tables"
            del results
            # Inside the scratch folder's lifetime: the publication reads the files written there.
            stage = "publish"
            with timer.stage("publish") as note:
                record["finished_at"] = _utcnow().isoformat()
                publish(str(db), as_of, run_id, saved, _final(record), lock_timeout, publication)
                note["note"] = f"{total_rows:,} rows → {db}"
        record["timings"]["total"] = round(timer.total, 4)
        say(f"[green]{as_of} published[/green] run {run_id} in {timer.total:.2f}s")
        return _final(record)
    except BaseException as error:
        if publication is not None:
            with contextlib.suppress(Exception):
                publication.abort()  # rolled back; the warehouse is free for the run record
        reason = _one_line(error, as_of)
        record["status"] = "failed"
        record["error"] = f"{stage}: {reason}"
        record["finished_at"] = _utcnow().isoformat()
        record["timings"]["total"] = round(timer.total, 4)
        try:
            warehouse.append_run_log(db, _final(record))
        except OSError as log_error:
            say(f"[yellow]run record not written:[/yellow] {_one_line(log_error)}")
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        try:  # the failed attempt reaches ``runs`` now, or with the next publish
            warehouse.record_runs(db, lock_timeout=2.0)
        except Exception as recording_error:
            say(f"[yellow]run record kept in the run log:[/yellow] {_one_line(recording_error, as_of)}")
        if isinstance(error, RunFailed):
            raise
        raise RunFailed(reason) from error
    finally:
        if publication is not None:
            with contextlib.suppress(Exception):
                publication.abort()
        run_serialised.close()


def _final(record: dict) -> dict:
    return {**record, "timings": dict(record["timings"])}


def _one_line(error: BaseException, as_of: dt.date | None = None) -> str:
    if isinstance(error, StructuralError):
        return f"structural error: {error}"
    if isinstance(error, (run_lock.RunLockBusy, RunFailed, warehouse.NotAWarehouse)):
        return str(error)
    if isinstance(error, warehouse.WarehouseLocked):
        return (
            f"{error}; results are saved as Parquet, finish with "
            f"`margin publish --date {as_of.isoformat() if as_of else 'D'}` once it is free"
        )
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def resolve_as_of(as_of: str, timezone: str = "UTC") -> dt.date:
    """An ISO date, or ``today``: the date, in ``timezone``, of the flow run's scheduled
    start (a scheduled run that starts late still computes the day it was meant for;
    outside a flow run, now)."""
    if as_of != "today":
        return dt.date.fromisoformat(as_of)
    from prefect.runtime import flow_run

    scheduled = flow_run.scheduled_start_time
    return dt.datetime.fromisoformat(scheduled.isoformat()).astimezone(ZoneInfo(timezone)).date()


def backfill_dates(
    start: dt.date,
    end: dt.date,
    inputs: Path,
    db: Path,
    strict: bool = False,
    lock_timeout: float | None = None,
    *,
    use_tasks: bool = True,
    max_quarantined_share: float | None = None,
    partitions: Partitions = "auto",
    dask_address: str | None = None,
) -> dict:
    """Every business date in [start, end] with inputs, in order; a failed date is
    reported (``failed``: date → one-line reason) and the rest continue."""
    dates = input_dates(Path(inputs), start, end)
    outcome: dict = {"succeeded": [], "failed": {}}
    for day in dates:
        try:
            record = run_end_of_day(day, Path(inputs), Path(db), strict, use_tasks=use_tasks, lock_timeout=lock_timeout,
                                    max_quarantined_share=max_quarantined_share, partitions=partitions,
                                    dask_address=dask_address)
            outcome["succeeded"].append(record["as_of_date"])
            if use_tasks:
                markdown_artifact(record, Path(db))
        except RunFailed as error:
            say(f"[red]{day} failed[/red]: {error}")
            outcome["failed"][day.isoformat()] = str(error)
    return outcome


def use_prefect(mode: str | None = None) -> bool:
    """Whether ``margin run`` / ``backfill`` / ``demo`` go through Prefect flows
    (``--orchestration`` / ``MARGIN_ORCHESTRATION``, resolved by ``flows.orchestration.resolve``):
    ``auto`` (default) when a Prefect API is configured, ``prefect`` always, ``none`` never."""
    try:
        return orchestration.resolve(mode).use_prefect
    except orchestration.OrchestrationError as error:
        raise RunFailed(str(error)) from None


class ExportRefused(RuntimeError):
    """At least one export format was not written (records failed their checks)."""


def export_step(db: str, as_of: dt.date, fmt: str, out: str, reporting_time: dt.datetime, allow_partial: bool,
                inputs: str) -> dict:
    from outputs.exports import export_files

    result = export_files(Path(db), as_of, fmt, Path(out), reporting_time, allow_partial, Path(inputs))
    return {
        "written": result.written,
        "files": [str(path) for path in result.files],
        "manifest": str(result.manifest) if result.manifest else None,
        "records": result.records,
        "rejected": len(result.rejected),
        "warnings": list(result.warnings),
    }


def markdown_artifact(record: dict, db: Path) -> None:
    """A Prefect markdown artifact (key ``margin-<date>``) with the headline figures of the published date."""
    from outputs.summary import day_summary_markdown

    try:
        from prefect.artifacts import create_markdown_artifact

        day = record["as_of_date"]
        create_markdown_artifact(
            markdown=day_summary_markdown(db, dt.date.fromisoformat(day), record),
            key=f"margin-{day}",
            description=f"End-of-day margin {day}",
        )
    except Exception as error:  # an artifact is a convenience, never a reason to fail a published run
        say(f"[yellow]artifact not created:[/yellow] {_one_line(error)}")
