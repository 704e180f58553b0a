"""The end-of-day flow: load → validate/net/value/margin/collateral/accounts/groups → save → publish.

Tasks are thin wrappers: the methodology is ``transforms.pipeline.compute_margin``;
I/O is in ``flows.loading``, ``flows.results_store`` and ``flows.warehouse``.  Only
I/O tasks retry.  Every flow parameter is a plain JSON-able value.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from collections.abc import Callable
from typing import Optional
from zoneinfo import ZoneInfo

from flows.settings import (
    DEFAULT_DB, DEFAULT_INPUTS, PROJECT_ROOT, compute_partitions, configure_prefect, results_dir_for,
)

import duckdb
import polars as pl

from flows import orchestration, partitioned, results_store, run_lock, warehouse
from flows.orchestration import ORCHESTRATION_ENV, configured_prefect_api_url  # noqa: F401 — the names callers use
from flows.loading import LoadedInputs, StructuralError, load_inputs
from flows.partitioned import StoredResults
from flows.progress import StageTimer, say
from flows.warehouse import fault_point
from transforms.identities import identity_violations
from transforms.pipeline import MarginResults, compute_margin
from transforms.quarantine_guard import quarantine_culprits, quarantine_guard

# Prefect is imported only when a task or flow is first used (``prefect_objects``):
# the import alone costs seconds, and a run without Prefect (MARGIN_ORCHESTRATION)
# should not pay it.  ``flows.eod.eod_margin`` etc. resolve through ``__getattr__``.
_PREFECT_SPECS: dict[str, tuple[str, Callable, dict]] = {}


def _prefect(kind: str, public_name: str, **options) -> Callable[[Callable], Callable]:
    """Register a plain function to become the Prefect task or flow ``public_name`` on first use."""

    def register(fn: Callable) -> Callable:
        fn.__name__ = fn.__qualname__ = public_name  # the deployment entrypoint is flows.eod.<public_name>
        _PREFECT_SPECS[public_name] = (kind, fn, options)
        return fn

    return register


@functools.cache
def prefect_objects() -> dict:
    """The Prefect tasks and flows of this module, built once (imports Prefect)."""
    configure_prefect()
    from prefect import flow, task
    from prefect.cache_policies import NONE as NO_CACHE

    return {
        public_name: task(cache_policy=NO_CACHE, **options)(fn) if kind == "task" else flow(**options)(fn)
        for public_name, (kind, fn, options) in _PREFECT_SPECS.items()
    }


def __getattr__(name: str):
    if name in _PREFECT_SPECS:
        return prefect_objects()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


@_prefect("task", "load_inputs_task", name="load inputs", **IO_RETRIES)
def _load_inputs_step(inputs_root: str, as_of: dt.date, streamed: bool = False) -> LoadedInputs:
    # A partitioned run streams positions and collateral from their files (never read whole).
    return load_inputs(Path(inputs_root), as_of, scan=partitioned.STREAMED_TABLES if streamed else ())


@_prefect("task", "compute_margin_task", name="compute margin")
def _compute_margin_step(
    loaded: LoadedInputs, scratch: str | None = None, partitions: int = 1, dask_address: str | None = None
) -> MarginResults | StoredResults:
    """The whole book in memory, or (with ``scratch``) ``partitions`` margin-group partitions,
    on the Dask cluster at ``dask_address`` (``local``: a temporary one) or in this
    process, whose result tables are written under ``scratch``."""
    if scratch is None:
        return compute_margin(loaded.margin_inputs)
    runner = partitioned.run_in_process
    if dask_address:
        runner = partitioned.on_dask(address=None if dask_address == "local" else dask_address)
    return partitioned.compute_margin_to_files(loaded.margin_inputs, partitions, Path(scratch), runner)


@_prefect("task", "save_results_task", name="save results", **IO_RETRIES)
def _save_results_step(db: str, as_of: dt.date, run_id: str, results: MarginResults | StoredResults,
                       record: dict) -> str:
    return str(results_store.save_results(results_dir_for(Path(db)), as_of, run_id, results.tables, record))


@_prefect("task", "publish_task", name="publish", **IO_RETRIES)
def _publish_step(db: str, as_of: dt.date, run_id: str, saved: str, record: dict, lock_timeout: float | None) -> None:
    """Load the saved Parquet of the date (``saved``) into the warehouse in one transaction."""
    tables = results_store.table_files(Path(saved), run_id=run_id)
    warehouse.publish_date(Path(db), as_of, run_id, tables, record, lock_timeout=lock_timeout)


def _row_counts(results: MarginResults | StoredResults) -> dict[str, int]:
    if isinstance(results, StoredResults):
        return dict(results.rows)
    return {name: frame.height for name, frame in results.tables.items()}


def _identity_problems(results: MarginResults | StoredResults) -> list[str]:
    if isinstance(results, StoredResults):  # checked by each partition, and the day's counts
        return results.problems
    return identity_violations(results.tables, results.counts)


def _quarantine_reasons(results: MarginResults | StoredResults) -> pl.DataFrame:
    if isinstance(results, StoredResults):
        return results.quarantine_reasons()
    return results.tables["quarantine"].group_by("reason").len().sort("reason")


def _quarantine_rows(results: MarginResults | StoredResults) -> pl.LazyFrame:
    if isinstance(results, StoredResults):
        return pl.scan_parquet(results.tables["quarantine"])
    return results.tables["quarantine"].lazy()


def run_end_of_day(
    as_of: dt.date,
    inputs: Path,
    db: Path,
    strict: bool = False,
    *,
    use_tasks: bool = True,
    lock_timeout: float | None = None,
    max_quarantined_share: float | None = None,
) -> dict:
    """One date end to end; returns the run record.  Raises ``RunFailed`` with a one-line reason.

    The run record is appended to the run log at the start (``running``) and at the end
    (``succeeded`` / ``failed``); the warehouse ``runs`` table receives it with the
    publish, or at the next publish when the warehouse could not be written.
    ``use_tasks=False`` runs the same stages as plain calls (no Prefect run).
    ``max_quarantined_share`` (``--max-quarantined-share``) overrides the policy's
    ``max_quarantined_position_share`` (SPEC §3); ``strict`` wins over both.
    """
    tasks = prefect_objects() if use_tasks else None
    call = (lambda step, *a: tasks[step.__name__](*a)) if use_tasks else (lambda step, *a: step(*a))
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
    partitions, dask_address = compute_partitions()
    partitioned_run = partitions > 1 or bool(dask_address)
    if dask_address:
        partitions = max(partitions, 2)
    if partitioned_run:
        record["parameters"].update({"partitions": partitions, "dask_address": dask_address})
    run_serialised = contextlib.ExitStack()  # SPEC §8: one run of the warehouse at a time, load to publish
    try:
        stage = "lock"
        run_serialised.enter_context(run_lock.hold_run_lock(
            db, timeout=warehouse.default_lock_timeout() if lock_timeout is None else lock_timeout, run_id=run_id))
        warehouse.check_warehouse_file(db)  # before computing anything
        stage = "load"
        with contextlib.ExitStack() as scratch_stack:
            scratch = (
                str(scratch_stack.enter_context(results_store.scratch_folder(results_dir_for(db), as_of, run_id)))
                if partitioned_run else None
            )
            with timer.stage("load") as note:
                loaded = call(_load_inputs_step, str(inputs), as_of, partitioned_run)
                note["note"] = f"{len(loaded.files)} files"
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
            stage = "compute"
            with timer.stage("compute") as note:
                results = call(_compute_margin_step, loaded, scratch, partitions, dask_address)
                del loaded  # a partitioned run holds no day-sized frame from here on
                counts = {r["table"]: {k: r[k] for k in ("read", "used", "quarantined")} for r in results.counts.to_dicts()}
                result_rows = _row_counts(results)
                if isinstance(results, StoredResults):
                    timer.timings.update({f"compute_{k}": v for k, v in results.timings.items()})
                note["note"] = (
                    f"{counts['positions']['read']:,} position rows, {result_rows['account_margin']:,} accounts, "
                    f"{result_rows['quarantine']:,} quarantined"
                    + (f", {partitions} partitions" if partitioned_run else "")
                )
            fault_point("compute")
            record["row_counts"] = counts
            record["warnings"] = warnings_summary(results.warnings)
            stage = "check"
            with timer.stage("check") as note:
                problems = _identity_problems(results)
                if isinstance(results, StoredResults):
                    note["note"] = "each partition's identities (checked as it ran) and the day's row counts"
            if problems:
                raise RunFailed("identity check failed: " + "; ".join(problems[:3]))
            quarantined = result_rows["quarantine"]
            if strict and quarantined:
                detail = ", ".join(f"{r}={n}" for r, n in _quarantine_reasons(results).iter_rows())
                raise RunFailed(f"--strict: {quarantined} rows quarantined ({detail})")
            guard = quarantine_guard(  # SPEC §3: a bad feed must not silently shrink the book
                counts["positions"]["read"], counts["positions"]["quarantined"], guard_limit,
                quarantine_culprits(_quarantine_rows(results), instruments),
            )
            if guard:
                raise RunFailed(guard)
            record["status"] = "succeeded"
            total_rows = sum(result_rows.values())
            stage = "save"
            with timer.stage("save") as note:
                record["finished_at"] = _utcnow().isoformat()
                saved = call(_save_results_step, str(db), as_of, run_id, results, _final(record))
                note["note"] = f"{total_rows:,} rows in {len(results.tables)} Parquet tables"
            del results
        stage = "publish"
        with timer.stage("publish") as note:
            record["finished_at"] = _utcnow().isoformat()
            call(_publish_step, str(db), as_of, run_id, saved, _final(record), lock_timeout)
            note["note"] = f"{total_rows:,} rows → {db}"
        record["timings"]["total"] = round(timer.total, 4)
        say(f"[green]{as_of} published[/green] run {run_id} in {timer.total:.2f}s")
        return _final(record)
    except BaseException as error:
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


@_prefect("flow", "eod_margin", name="eod-margin", log_prints=False)
def _eod_margin_flow(
    as_of: str = "today",
    inputs: str = str(DEFAULT_INPUTS),
    db: str = str(DEFAULT_DB),
    strict: bool = False,
    timezone: str = "UTC",
    lock_timeout: Optional[float] = None,
    max_quarantined_share: Optional[float] = None,
) -> dict:
    """End-of-day margin for one business date: load, compute, save, publish.

    ``as_of`` is an ISO date or ``today`` (the scheduled date in ``timezone``, used by
    ``margin serve``); ``lock_timeout`` bounds the wait for the warehouse lock
    (default ``MARGIN_LOCK_TIMEOUT`` or 60 s)."""
    day = resolve_as_of(as_of, timezone)
    record = run_end_of_day(day, Path(inputs), Path(db), strict, lock_timeout=lock_timeout,
                            max_quarantined_share=max_quarantined_share)
    _markdown_artifact(record, Path(db))
    return {k: record[k] for k in ("run_id", "as_of_date", "status", "row_counts", "timings")}


def business_dates(inputs: Path, start: dt.date, end: dt.date) -> list[dt.date]:
    """Dates in [start, end] that have a ``date=D/`` input folder (crypto venues run every day)."""
    found = []
    for folder in Path(inputs).glob("date=*"):
        try:
            day = dt.date.fromisoformat(folder.name.removeprefix("date="))
        except ValueError:
            continue
        if folder.is_dir() and start <= day <= end:
            found.append(day)
    return sorted(found)


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
) -> dict:
    """Every business date in [start, end] with inputs, in order; a failed date is
    reported (``failed``: date → one-line reason) and the rest continue."""
    dates = business_dates(Path(inputs), start, end)
    outcome: dict = {"succeeded": [], "failed": {}}
    for day in dates:
        try:
            record = run_end_of_day(day, Path(inputs), Path(db), strict, use_tasks=use_tasks, lock_timeout=lock_timeout,
                                    max_quarantined_share=max_quarantined_share)
            outcome["succeeded"].append(record["as_of_date"])
            if use_tasks:
                _markdown_artifact(record, Path(db))
        except RunFailed as error:
            say(f"[red]{day} failed[/red]: {error}")
            outcome["failed"][day.isoformat()] = str(error)
    return outcome


@_prefect("flow", "backfill", name="backfill", log_prints=False)
def _backfill_flow(
    start: str,
    end: str,
    inputs: str = str(DEFAULT_INPUTS),
    db: str = str(DEFAULT_DB),
    strict: bool = False,
    lock_timeout: Optional[float] = None,
    max_quarantined_share: Optional[float] = None,
) -> dict:
    """Every business date in [start, end] with inputs, in order; a failed date is reported, the rest continue."""
    return backfill_dates(
        dt.date.fromisoformat(start), dt.date.fromisoformat(end), Path(inputs), Path(db), strict, lock_timeout,
        max_quarantined_share=max_quarantined_share,
    )


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


@_prefect("task", "export_task", name="export", **IO_RETRIES)
def _export_step(db: str, as_of: dt.date, fmt: str, out: str, reporting_time: dt.datetime, allow_partial: bool,
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


@_prefect("flow", "export_reports", name="export-reports", log_prints=False)
def _export_reports_flow(
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
        else _utcnow().replace(microsecond=0)
    )
    export_task = prefect_objects()["export_task"]
    outcome = {fmt: export_task(db, day, fmt, out, when, allow_partial, inputs) for fmt in formats}
    for fmt, summary in outcome.items():
        say(f"{as_of} export {fmt:<9} {summary['records']:,} records, {summary['rejected']} rejected → {out}")
    refused = [fmt for fmt, summary in outcome.items() if not summary["written"]]
    if refused:
        raise ExportRefused(f"{as_of}: {', '.join(refused)} not written (records rejected; see the rejections file)")
    return {"as_of_date": as_of, "reporting_time": when.isoformat(), "formats": outcome}


def _markdown_artifact(record: dict, db: Path) -> None:
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
