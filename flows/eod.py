"""The end-of-day flow: load → validate/net/value/margin/collateral/accounts/groups → save → publish.

Tasks are thin wrappers: the methodology is ``transforms.pipeline.compute_margin``;
I/O is in ``flows.loading``, ``flows.results_store`` and ``flows.warehouse``.  Only
I/O tasks retry.  Every flow parameter is a plain JSON-able value.
"""

from __future__ import annotations

import datetime as dt
import functools
import subprocess
import uuid
from importlib import metadata
from pathlib import Path

from flows.settings import DEFAULT_DB, DEFAULT_INPUTS, PROJECT_ROOT, configure_prefect, results_dir_for

configure_prefect()

import polars as pl  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NONE as NO_CACHE  # noqa: E402

from flows import results_store, warehouse  # noqa: E402
from flows.loading import LoadedInputs, StructuralError, load_inputs  # noqa: E402
from flows.progress import StageTimer, say  # noqa: E402
from transforms.identities import identity_violations  # noqa: E402
from transforms.pipeline import MarginResults, compute_margin  # noqa: E402


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


@task(name="load inputs", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def load_inputs_task(inputs_root: str, as_of: dt.date) -> LoadedInputs:
    return load_inputs(Path(inputs_root), as_of)


@task(name="compute margin", cache_policy=NO_CACHE)
def compute_margin_task(loaded: LoadedInputs) -> MarginResults:
    return compute_margin(loaded.margin_inputs)


@task(name="save results", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def save_results_task(db: str, as_of: dt.date, run_id: str, results: MarginResults, record: dict) -> str:
    return str(results_store.save_results(results_dir_for(Path(db)), as_of, run_id, results.tables, record))


@task(name="publish", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def publish_task(db: str, as_of: dt.date, run_id: str, tables: dict, record: dict) -> None:
    warehouse.publish_date(Path(db), as_of, run_id, tables, record)


def run_end_of_day(as_of: dt.date, inputs: Path, db: Path, strict: bool = False, *, use_tasks: bool = True) -> dict:
    """One date end to end; returns the run record.  Raises ``RunFailed`` with a one-line reason.

    The run record is appended to the run log at the start (``running``) and at the end
    (``succeeded`` / ``failed``); the warehouse ``runs`` table receives it with the
    publish, or at the next publish when the warehouse could not be written.
    """
    call = (lambda t, *a: t(*a)) if use_tasks else (lambda t, *a: t.fn(*a))
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
        "parameters": {"inputs": str(inputs), "db": str(db), "strict": strict},
        "input_checksums": {},
        "row_counts": {},
        "timings": timer.timings,
        "warnings": {},
    }
    warehouse.append_run_log(db, record)
    try:
        with timer.stage("load") as note:
            loaded = call(load_inputs_task, str(inputs), as_of)
            note["note"] = f"{len(loaded.files)} files"
        record["input_checksums"] = loaded.checksums
        record["parameters"].update(
            {k: loaded.policy[k] for k in ("maintenance_ratio", "vol_floor", "reporting_lei", "collateralisation_category")}
        )
        record["parameters"]["files"] = loaded.files
        with timer.stage("compute") as note:
            results = call(compute_margin_task, loaded)
            counts = {r["table"]: {k: r[k] for k in ("read", "used", "quarantined")} for r in results.counts.to_dicts()}
            note["note"] = (
                f"{counts['positions']['read']:,} position rows, {results.tables['account_margin'].height:,} accounts, "
                f"{results.tables['quarantine'].height:,} quarantined"
            )
        record["row_counts"] = counts
        record["warnings"] = warnings_summary(results.warnings)
        with timer.stage("check"):
            problems = identity_violations(results.tables, results.counts)
        if problems:
            raise RunFailed("identity check failed: " + "; ".join(problems[:3]))
        quarantined = results.tables["quarantine"].height
        if strict and quarantined:
            reasons = results.tables["quarantine"].group_by("reason").len().sort("reason")
            detail = ", ".join(f"{r}={n}" for r, n in reasons.iter_rows())
            raise RunFailed(f"--strict: {quarantined} rows quarantined ({detail})")
        record["status"] = "succeeded"
        with timer.stage("save"):
            record["finished_at"] = _utcnow().isoformat()
            call(save_results_task, str(db), as_of, run_id, results, _final(record))
        with timer.stage("publish"):
            record["finished_at"] = _utcnow().isoformat()
            call(publish_task, str(db), as_of, run_id, results.tables, _final(record))
        record["timings"]["total"] = round(timer.total, 4)
        say(f"[green]{as_of} published[/green] run {run_id} in {timer.total:.2f}s")
        return _final(record)
    except BaseException as error:
        reason = _one_line(error)
        record["status"] = "failed" if record["status"] != "succeeded" else "failed"
        record["error"] = reason
        record["finished_at"] = _utcnow().isoformat()
        warehouse.append_run_log(db, _final(record))
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        warehouse.record_runs(db, lock_timeout=2.0)
        if isinstance(error, RunFailed):
            raise
        raise RunFailed(reason) from error


def _final(record: dict) -> dict:
    return {**record, "timings": dict(record["timings"])}


def _one_line(error: BaseException) -> str:
    if isinstance(error, StructuralError):
        return f"structural error: {error}"
    if isinstance(error, warehouse.WarehouseLocked):
        return f"{error}; results are saved, finish with `margin publish --date D`"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


@flow(name="eod-margin", log_prints=False)
def eod_margin(as_of: str, inputs: str = str(DEFAULT_INPUTS), db: str = str(DEFAULT_DB), strict: bool = False) -> dict:
    """End-of-day margin for one business date (ISO ``as_of``): load, compute, save, publish."""
    record = run_end_of_day(dt.date.fromisoformat(as_of), Path(inputs), Path(db), strict)
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


@flow(name="backfill", log_prints=False)
def backfill(start: str, end: str, inputs: str = str(DEFAULT_INPUTS), db: str = str(DEFAULT_DB), strict: bool = False) -> dict:
    """Every business date in [start, end] with inputs, in order; a failed date is reported, the rest continue."""
    dates = business_dates(Path(inputs), dt.date.fromisoformat(start), dt.date.fromisoformat(end))
    outcome: dict = {"succeeded": [], "failed": {}}
    for day in dates:
        try:
            record = run_end_of_day(day, Path(inputs), Path(db), strict)
            outcome["succeeded"].append(record["as_of_date"])
        except RunFailed as error:
            say(f"[red]{day} failed[/red]: {error}")
            outcome["failed"][day.isoformat()] = str(error)
    _markdown_artifact(None, Path(db), dates=[d.isoformat() for d in dates if d.isoformat() in outcome["succeeded"]])
    return outcome


def _markdown_artifact(record: dict | None, db: Path, dates: list[str] | None = None) -> None:
    """A Prefect markdown artifact with the headline figures of each published date."""
    from flows.summary import day_summary_markdown

    try:
        from prefect.artifacts import create_markdown_artifact

        days = dates if dates is not None else [record["as_of_date"]]
        for day in days:
            create_markdown_artifact(
                markdown=day_summary_markdown(db, dt.date.fromisoformat(day)),
                key=f"margin-{day}",
                description=f"End-of-day margin {day}",
            )
    except Exception as error:  # an artifact is a convenience, never a reason to fail a published run
        say(f"[yellow]artifact not created:[/yellow] {_one_line(error)}")
