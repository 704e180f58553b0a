"""The ``margin`` command line (SPEC §9).

Every command that reads or writes the warehouse takes ``--db``; inputs default to
``data/inputs``.  Failures print one line (``margin: error: …``) and exit non-zero.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows import settings
from flows.input_layout import input_dates
from flows.settings import DEFAULT_DB, DEFAULT_INPUTS, DEFAULT_REPORTS, configure_prefect

configure_prefect()

app = typer.Typer(
    name="margin",
    help=(
        "End-of-day margin aggregation: nets every account's positions across venues, "
        "computes gross / net / portfolio margin, values collateral after haircuts and FX, "
        "and publishes account health to a DuckDB warehouse.\n\n"
        "Start with `margin demo`; then `margin sql \"select status, count(*) from account_margin group by 1\"`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

DateOption = Annotated[str, typer.Option("--date", help="As-of date, YYYY-MM-DD.")]
InputsOption = Annotated[Path, typer.Option("--inputs", help="Input root holding reference/ and date=YYYY-MM-DD/ folders.")]
DbOption = Annotated[Path, typer.Option("--db", help="DuckDB warehouse file.")]
PartitionsOption = Annotated[
    Optional[str],
    typer.Option(
        "--partitions",
        help="N | auto. Compute the day as N independent margin-group partitions, one after the other "
        "(or on Dask): positions and collateral are streamed from their files and each partition's results "
        "are written to Parquet before the next starts, so peak memory is one partition's (about 3 GB per 5M "
        "position rows). auto: the whole book as one partition up to 5M position rows, else one "
        "partition per 5M. Results are identical to the bit whatever N (SPEC §8). "
        "Default: $MARGIN_PARTITIONS or auto.",
        show_default=False,
    ),
]
DaskOption = Annotated[
    Optional[str],
    typer.Option(
        "--dask-address",
        help="Run the partitions as Prefect tasks on a Dask cluster: a scheduler address "
        "(tcp://host:8786) or `local` for a 2-worker local cluster. Default: $MARGIN_DASK_ADDRESS.",
        show_default=False,
    ),
]


def check_partitions(partitions: str | None) -> int | str:
    """``--partitions`` (default ``$MARGIN_PARTITIONS`` or ``auto``) as ``auto`` or a number ≥ 1."""
    value = (partitions if partitions is not None else settings.default_partitions()).strip().lower()
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        fail(f"--partitions {value!r}: use a number ≥ 1 or auto")
    return count


def check_dask_address(dask_address: str | None) -> str | None:
    """``--dask-address`` (default ``$MARGIN_DASK_ADDRESS``; none: the partitions run here)."""
    return dask_address or settings.default_dask_address()


LockTimeoutOption = Annotated[
    Optional[float],
    typer.Option(
        "--lock-timeout",
        help="Seconds to wait for the warehouse while another process (e.g. an analyst's read-only "
        "session) holds it, then fail; results stay saved for `margin publish`. "
        "Default: $MARGIN_LOCK_TIMEOUT or 60.",
    ),
]


MaxQuarantinedShareOption = Annotated[
    Optional[float],
    typer.Option(
        "--max-quarantined-share",
        help="Fail the run, publishing nothing, when more than this share of position rows is "
        "quarantined (0 to 1; 1 turns the guard off). Default: policy.toml's "
        "max_quarantined_position_share, else 0.01. --strict wins.",
    ),
]


OrchestrationOption = Annotated[
    Optional[str],
    typer.Option(
        "--orchestration",
        help="auto | prefect | none. auto (default): a Prefect flow run when a Prefect API is configured "
        "(PREFECT_API_URL, or a server started by `margin server start`), otherwise the same flow code "
        "directly; prefect: always (a temporary server, 20-40 s, when none is configured); none: never. "
        "Default: $MARGIN_ORCHESTRATION or auto.",
        show_default=False,
    ),
]


def check_lock_timeout(seconds: float | None) -> float:
    """``--lock-timeout`` (default ``$MARGIN_LOCK_TIMEOUT`` or 60) as a number of seconds ≥ 0."""
    if seconds is None:
        try:
            return settings.default_lock_timeout()
        except ValueError as error:
            fail(first_line(error))
    if not seconds >= 0:  # NaN fails too (it would wait forever)
        fail(f"--lock-timeout {seconds!r} must be a number of seconds ≥ 0")
    return seconds


def check_share(share: float | None) -> None:
    if share is not None and not 0 <= share <= 1:  # NaN fails too
        fail(f"--max-quarantined-share {share!r} must be a number in [0, 1]")


def orchestrate(mode: str | None):
    """Resolve --orchestration once, at the entry point, and say in one line how the command
    runs; the caller passes ``choice.use_prefect`` on (nothing is written to the environment)."""
    from flows.orchestration import OrchestrationError, resolve
    from flows.progress import say

    try:
        choice = resolve(mode)
    except OrchestrationError as error:
        fail(first_line(error))
    if choice.note:
        say(f"[dim]{choice.note}[/dim]")
    return choice


def inputs_root_problem(inputs: Path) -> str | None:
    if not Path(inputs).is_dir():
        return (f"--inputs {inputs} is not a folder (it should hold reference/ and date=YYYY-MM-DD/ folders; "
                f"`margin generate --date D --out {inputs}` writes one)")
    return None


def check_inputs_root(inputs: Path) -> None:
    problem = inputs_root_problem(inputs)
    if problem:
        fail(problem)


def input_date_problem(inputs: Path, as_of: dt.date) -> str | None:
    """Why ``inputs`` has no folder for ``as_of`` (naming the dates that are there), or None."""
    problem = inputs_root_problem(inputs)
    if problem or (Path(inputs) / f"date={as_of.isoformat()}").is_dir():
        return problem
    present = input_dates(inputs)
    where = (f"{len(present)} dated folder(s) there, {present[0]} … {present[-1]}" if present
             else "no date=YYYY-MM-DD folders there")
    return f"no inputs for {as_of}: {Path(inputs) / f'date={as_of.isoformat()}'} does not exist ({where})"


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error and exit."""
    typer.echo(f"margin: error: {message}", err=True)
    raise typer.Exit(code)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type when the message is empty)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def show_summary(db: Path, as_of: dt.date) -> None:
    """Print the day's headline figures; the date is already published, so a failure
    here (e.g. an analyst holding the file past the lock timeout) is a one-line warning."""
    from outputs.summary import print_day_summary

    try:
        print_day_summary(db, as_of)
    except Exception as error:  # noqa: BLE001 — never turn a published run into a failure
        typer.echo(f"margin: warning: summary not shown: {first_line(error)}", err=True)


def show_export_outlook(db: Path, as_of: dt.date, inputs: Path) -> None:
    """What `margin export --format emir-csv` will reject on this date, and why, before anyone runs it."""
    from outputs.exports import emir_outlook

    try:
        records, rejected = emir_outlook(db, as_of, inputs)
    except Exception as error:  # noqa: BLE001 — an outlook, never a reason to fail the demo
        typer.echo(f"margin: warning: EMIR outlook not shown: {first_line(error)}", err=True)
        return
    if not rejected:
        typer.echo(f"\nEMIR export of {as_of}: all {records:,} records pass their checks.")
        return
    reasons: dict[str, int] = {}
    for _, problems in rejected:
        for problem in problems:
            kind = "LEI fails its ISO 17442 check digits" if "check digits" in problem else problem.split(":")[0]
            reasons[kind] = reasons.get(kind, 0) + 1
    detail = "; ".join(f"{n:,} × {kind}" for kind, n in sorted(reasons.items(), key=lambda item: -item[1]))
    typer.echo(
        f"\nEMIR export of {as_of}: {len(rejected):,} of {records:,} records will be rejected\n"
        f"  ({detail};\n"
        "  the synthetic book gives ~2 % of its accounts an invalid LEI on purpose)\n"
        f"  margin export --date {as_of} --format emir-csv --out data/exports\n"
        "    → lists them in data/exports/…_rejected.csv, writes nothing else, exit 1\n"
        f"  with --allow-partial → writes the {records - len(rejected):,} valid records too, exit 0"
    )


def parse_date(text: str, option: str = "--date") -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r} is not a date in YYYY-MM-DD form")


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(help="Accounts in the synthetic book.")] = 2000,
    days: Annotated[int, typer.Option(help="Consecutive business days to generate and run.")] = 3,
    start: Annotated[str, typer.Option(help="First as-of date.")] = "2026-11-16",
    seed: Annotated[int, typer.Option(help="Random seed of the synthetic book.")] = 7,
    inputs: InputsOption = DEFAULT_INPUTS,
    db: DbOption = DEFAULT_DB,
    orchestration: OrchestrationOption = None,
) -> None:
    """Generate a realistic synthetic book for several days, run the end-of-day flow for
    each day, and print a summary of the last day.  The out-of-the-box experience."""
    from flows.progress import say

    first = parse_date(start, "--start")
    if days < 1 or accounts < 1:
        fail("--days and --accounts must be at least 1")
    say(f"generating {days} day(s) × {accounts:,} accounts under {inputs} …")
    choice = orchestrate(orchestration)
    from market.generate import generate_book

    try:
        folders = generate_book(Path(inputs), first, days, accounts, seed)
    except (OSError, ValueError) as error:
        fail(f"cannot generate the demo book under {inputs}: {error}")
    last = first + dt.timedelta(days=days - 1)
    outcome = _run_backfill(first, last, inputs, db, strict=False, lock_timeout=check_lock_timeout(None),
                            use_prefect=choice.use_prefect)
    for day, reason in outcome["failed"].items():
        typer.echo(f"margin: error: {day}: {reason}", err=True)
    if outcome["failed"]:
        raise typer.Exit(1)
    show_summary(db, last)
    show_export_outlook(db, last, inputs)
    typer.echo(f"\nWarehouse: {db}   ({len(folders)} day(s) of inputs under {inputs})")
    typer.echo(f'Try: margin sql "select binding_status, count(*) from v_account_today group by 1"')
    typer.echo(f"     margin report --date {last}")


@app.command()
def generate(
    date: DateOption,
    accounts: Annotated[int, typer.Option(help="Number of accounts (≈10 position rows each).")] = 1000,
    out: Annotated[Path, typer.Option("--out", help="Input root to write into.")] = DEFAULT_INPUTS,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, date and size give identical files.")] = 7,
    days: Annotated[int, typer.Option(help="Consecutive days starting at --date.")] = 1,
    clean: Annotated[bool, typer.Option("--clean/--with-bad-rows", help="Leave out the deliberately bad rows.")] = False,
    scenarios: Annotated[Optional[str], typer.Option(
        help="Scenario grid to install as reference/scenarios.parquet: default (SPAN 16) or extended "
             "(Deribit-style, extended upward moves and vol shocks); replaces the root's grid.")] = None,
) -> None:
    """Write synthetic inputs for one or more days (and the reference tables if absent)."""
    from flows.progress import say

    as_of = parse_date(date)
    if days < 1 or accounts < 1:
        fail("--days and --accounts must be at least 1")
    say(f"generating {days} day(s) × {accounts:,} accounts from {as_of} under {out} …")
    from market.generate import generate_book, generate_day, install_scenario_grid
    from market.reference_defaults import SCENARIO_GRIDS
    try:
        if scenarios is not None:
            if scenarios not in SCENARIO_GRIDS:
                fail(f"--scenarios {scenarios!r}: unknown grid (one of {', '.join(SCENARIO_GRIDS)})")
            typer.echo(str(install_scenario_grid(out, scenarios)))
        if days == 1:
            folders = [generate_day(out, as_of, accounts, seed, bad_rows=not clean)]
        else:
            folders = generate_book(out, as_of, days, accounts, seed, bad_rows=not clean)
    except (OSError, ValueError) as error:
        fail(f"cannot generate inputs under {out}: {first_line(error)}")
    for folder in folders:
        typer.echo(str(folder))


def _run_backfill(
    first: dt.date, last: dt.date, inputs: Path, db: Path, strict: bool, lock_timeout: float | None = None,
    max_quarantined_share: float | None = None, *, use_prefect: bool, partitions: int | str = "auto",
    dask_address: str | None = None,
) -> dict:
    if not use_prefect:
        from flows import eod

        return eod.backfill_dates(first, last, inputs, db, strict, lock_timeout, use_tasks=False,
                                  max_quarantined_share=max_quarantined_share, partitions=partitions,
                                  dask_address=dask_address)
    from flows.tasks import backfill as backfill_flow

    return backfill_flow(first.isoformat(), last.isoformat(), str(inputs), str(db), strict, lock_timeout,
                         max_quarantined_share, partitions=partitions, dask_address=dask_address)


@app.command()
def run(
    date: DateOption,
    inputs: InputsOption = DEFAULT_INPUTS,
    db: DbOption = DEFAULT_DB,
    strict: Annotated[bool, typer.Option("--strict", help="Fail the run if any row is quarantined.")] = False,
    summary: Annotated[bool, typer.Option("--summary/--no-summary", help="Print the day's headline figures.")] = True,
    lock_timeout: LockTimeoutOption = None,
    max_quarantined_share: MaxQuarantinedShareOption = None,
    partitions: PartitionsOption = None,
    dask_address: DaskOption = None,
    orchestration: OrchestrationOption = None,
) -> None:
    """Run the end-of-day flow for one date; exit 0 on success, 1 with a one-line reason on failure.

    A Prefect flow run when a Prefect API is configured (`margin server start`, or
    PREFECT_API_URL); otherwise the same flow code runs directly (see --orchestration).

    From system cron: `margin run --date $(date -u +%F)`.  See docs/operations.md."""
    from flows.progress import say

    as_of = parse_date(date)
    check_share(max_quarantined_share)
    lock_timeout = check_lock_timeout(lock_timeout)
    partitions, dask_address = check_partitions(partitions), check_dask_address(dask_address)
    problem = input_date_problem(inputs, as_of)
    if problem:  # said at once, before any Prefect start; the attempt still reaches `runs` (SPEC §8), directly
        typer.echo(f"margin: error: {problem}", err=True)
        from flows import eod, progress

        progress.QUIET = True  # the one line above is the whole story
        try:
            eod.run_end_of_day(as_of, inputs, db, strict, use_tasks=False, lock_timeout=lock_timeout)
        except eod.RunFailed:
            pass
        raise typer.Exit(1)
    say(f"margin run {as_of}: {Path(inputs) / f'date={as_of.isoformat()}'} → {db}")
    choice = orchestrate(orchestration)
    from flows import eod
    from flows.eod import RunFailed

    try:
        if choice.use_prefect:
            from flows.tasks import eod_margin

            eod_margin(as_of.isoformat(), str(inputs), str(db), strict, lock_timeout=lock_timeout,
                       max_quarantined_share=max_quarantined_share, partitions=partitions,
                       dask_address=dask_address)
        else:
            eod.run_end_of_day(as_of, inputs, db, strict, use_tasks=False, lock_timeout=lock_timeout,
                               max_quarantined_share=max_quarantined_share, partitions=partitions,
                               dask_address=dask_address)
    except RunFailed as error:
        fail(first_line(error))
    if summary:
        show_summary(db, as_of)


@app.command()
def backfill(
    start: Annotated[str, typer.Option("--start", help="First date, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--end", help="Last date, YYYY-MM-DD.")],
    inputs: InputsOption = DEFAULT_INPUTS,
    db: DbOption = DEFAULT_DB,
    strict: Annotated[bool, typer.Option("--strict", help="Fail a date if any row is quarantined.")] = False,
    lock_timeout: LockTimeoutOption = None,
    partitions: PartitionsOption = None,
    dask_address: DaskOption = None,
    max_quarantined_share: MaxQuarantinedShareOption = None,
    orchestration: OrchestrationOption = None,
) -> None:
    """Run every date from --start to --end (inclusive) that has inputs, in order; the dates without
    an input folder are listed as skipped; a failed date is reported and the rest continue (exit 1
    if any failed)."""
    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    check_share(max_quarantined_share)
    lock_timeout = check_lock_timeout(lock_timeout)
    partitions, dask_address = check_partitions(partitions), check_dask_address(dask_address)
    if last < first:
        fail("--end is before --start")
    check_inputs_root(inputs)
    present = input_dates(inputs, first, last)
    skipped = skipped_dates(first, last, present)
    typer.echo(f"backfill {first} … {last}: {len(present)} date(s) with inputs under {inputs}, "
               f"{len(skipped)} skipped")
    if skipped:
        typer.echo(describe_skipped(skipped, inputs))
    if not present:
        fail(f"no input folders between {first} and {last} under {inputs}")
    choice = orchestrate(orchestration)
    outcome = _run_backfill(first, last, inputs, db, strict, lock_timeout, max_quarantined_share,
                            use_prefect=choice.use_prefect, partitions=partitions, dask_address=dask_address)
    typer.echo(f"succeeded: {len(outcome['succeeded'])}  failed: {len(outcome['failed'])}  "
               f"skipped (no inputs): {len(skipped)}")
    for day, reason in outcome["failed"].items():
        typer.echo(f"margin: error: {day}: {reason}", err=True)
    if outcome["failed"]:
        raise typer.Exit(1)


def skipped_dates(first: dt.date, last: dt.date, present: list[dt.date]) -> list[dt.date]:
    """Every calendar date of [first, last] without an input folder."""
    have = set(present)
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)
            if first + dt.timedelta(days=n) not in have]


def describe_skipped(skipped: list[dt.date], inputs: Path, shown: int = 20) -> str:
    """``skipped (no date=D folder under INPUTS): 2026-11-21 Sat, …`` — at most ``shown`` dates named."""
    names = [f"{day} {day.strftime('%a')}" for day in skipped[:shown]]
    more = f", and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return f"skipped (no date=D folder under {inputs}): {', '.join(names)}{more}"


@app.command()
def publish(
    date: DateOption,
    db: DbOption = DEFAULT_DB,
    lock_timeout: LockTimeoutOption = None,
) -> None:
    """Load a date's saved results (written by a run whose warehouse load could not
    happen, e.g. a locked file) into the warehouse, atomically.  No recomputation: the
    Parquet saved beside the warehouse (`<db>.results/date=D/`) is published as is."""
    from flows.progress import say

    as_of = parse_date(date)
    timeout = lock_timeout = check_lock_timeout(lock_timeout)
    say(f"publishing the saved results of {as_of} into {db} …")
    from flows import results_store, run_lock, warehouse
    from flows.settings import results_dir_for

    try:
        with run_lock.hold_run_lock(db, timeout=timeout):  # SPEC §8: no run saves or publishes meanwhile
            tables, record = results_store.load_results(results_dir_for(db), as_of)
            record = {**record, "status": "succeeded", "error": None,
                      "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()}
            warehouse.publish_date(db, as_of, record["run_id"], tables, record, lock_timeout=lock_timeout)
    except Exception as error:  # one line for every kind of failure (locked, missing, corrupt, disk)
        fail(first_line(error))
    typer.echo(f"published {as_of} (run {record['run_id']}) to {db}")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One read-only SQL statement (SELECT, WITH, DESCRIBE, SHOW …).")],
    db: DbOption = DEFAULT_DB,
    format: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
    limit: Annotated[int, typer.Option(help="Rows shown in table format (csv/json print all).")] = 100,
) -> None:
    """Ad hoc read-only query against the warehouse, printed as an aligned table (or CSV / JSON).

    The connection is read-only and has no file access: INSERT, DROP, ATTACH and COPY
    fail.  Tables: position_margin, underlying_risk, collateral_valuation,
    account_margin, group_margin, quarantine, runs, and the v_* views.
    """
    from outputs.sql_console import error_hints, run_read_only_query

    try:
        output = run_read_only_query(db, query, format, limit)
    except Exception as error:  # one line for every kind of failure, then DuckDB's hints
        typer.echo(f"margin: error: {first_line(error)}", err=True)
        for hint in error_hints(error):
            typer.echo(f"  {hint}", err=True)
        raise typer.Exit(1)
    sys.stdout.write(output)


@app.command()
def whatif(
    date: DateOption,
    trades: Annotated[Path, typer.Option("--trades", help="CSV or Parquet: account_id, instrument_id, quantity[, price].")],
    inputs: InputsOption = DEFAULT_INPUTS,
    format: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
) -> None:
    """Margin before and after hypothetical trades for the accounts named in --trades and their
    margin groups (SPEC §12), computed from the date's inputs like `margin run`; writes nothing.

    A spot or option trade moves cash (a USD collateral row at the trade price, else the
    mark); a trade row that fails validation is listed with its reason and not applied."""
    from flows.progress import say

    if format not in ("table", "json"):
        fail(f"--format {format!r}: use table or json")
    say(f"what-if on {parse_date(date)}: margining {trades} against the date's inputs under {inputs} …")
    from flows.loading import StructuralError
    from flows.whatif import render, what_if
    try:
        result = what_if(inputs, parse_date(date), trades)
    except StructuralError as error:
        fail(f"structural error: {error}")
    except Exception as error:  # one line for every kind of failure
        fail(first_line(error))
    sys.stdout.write(render(result, format))


@app.command()
def serve(
    name: Annotated[str, typer.Option("--name", help="Deployment name (shown as eod-margin/NAME in the Prefect UI).")] = "weekday-eod",
    at: Annotated[str, typer.Option("--at", help="Time of day of the run, HH:MM (24-hour), Monday to Friday.")] = "18:30",
    timezone: Annotated[str, typer.Option("--timezone", help="IANA time zone of --at and of \"today\" (e.g. Europe/London).")] = "UTC",
    cron: Annotated[Optional[str], typer.Option("--cron", help="Full cron expression instead of --at (e.g. \"0 22 * * *\" for every day).")] = None,
    inputs: InputsOption = DEFAULT_INPUTS,
    db: DbOption = DEFAULT_DB,
    strict: Annotated[bool, typer.Option("--strict", help="Fail a scheduled run if any row is quarantined.")] = False,
    lock_timeout: LockTimeoutOption = None,
) -> None:
    """Serve the scheduled end-of-day deployment: every weekday at --at (--timezone) run
    the flow for today's date in that time zone.  Blocks until Ctrl-C (which pauses the
    schedule).  Needs a Prefect server: `margin server start` (or PREFECT_API_URL); the
    runs then appear in its UI.  See docs/operations.md."""
    from flows.orchestration import configured_prefect_api_url, server_state

    url = configured_prefect_api_url()
    if not url:
        fail("margin serve needs a Prefect server: run `margin server start` first (or set PREFECT_API_URL)")
    state = server_state()
    if state and state.url == url and not state.alive:
        fail(f"margin serve needs a Prefect server: the one recorded by `margin server start` (pid {state.pid}) "
             "is not running; run `margin server start` again")
    from flows.serve import ScheduleError, check_cron, check_timezone, serve_eod, weekday_cron

    try:
        check_timezone(timezone)
        expression = check_cron(cron, timezone) if cron else weekday_cron(at)
    except ScheduleError as error:
        fail(first_line(error))
    typer.echo(f"serving eod-margin/{name}: `{expression}` ({timezone}) → {db} on {url}; Ctrl-C to stop", err=True)
    serve_eod(name, at, timezone, cron, inputs=inputs, db=db, strict=strict, lock_timeout=lock_timeout)


@app.command()
def report(
    date: DateOption,
    db: DbOption = DEFAULT_DB,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="HTML file to write (default: data/reports/margin_report_D.html, under the data folder).",
        show_default=False)] = None,
    account: Annotated[Optional[str], typer.Option(
        "--account", help="Write only this account's page (default file: account_A_D.html for account A on date D).")] = None,
) -> None:
    """Write the risk desk's daily report for one date: one self-contained HTML page (charts embedded as SVG, no network needed) with IM by mode, accounts by status, top deficits, netting and aggregation benefit, risk by underlying and the day-over-day change; every account in its tables links to its page (written into accounts/ beside the report: the `margin explain` derivation with charts of the scenario losses and the collateral tiers)."""
    from flows.progress import say

    as_of = parse_date(date)
    say(f"report of {as_of} from {db} …")
    from flows.warehouse import NotAWarehouse
    from outputs.report import ReportError, write_report

    try:
        if account is not None:
            from outputs.account_page import account_file_name, write_account_page

            target = out or Path(f"account_{account_file_name(account)[:-5]}_{as_of.isoformat()}.html")
            path = write_account_page(db, as_of, account, target)
        else:
            path = write_report(db, as_of, out or DEFAULT_REPORTS / f"margin_report_{as_of.isoformat()}.html")
    except Exception as error:
        from outputs.explain import ExplainError  # imported here: it takes a second (the date may have no results)

        if not isinstance(error, (ReportError, ExplainError, OSError, NotAWarehouse)):
            raise
        fail(first_line(error))
    typer.echo(str(path))


@app.command()
def explain(
    date: DateOption,
    account: Annotated[Optional[str], typer.Option("--account", help="Account id to explain.")] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="Margin group to explain.")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="text or json.")] = "text",
    db: DbOption = DEFAULT_DB,
    inputs: Annotated[Optional[Path], typer.Option(
        "--inputs", help="Input root (default: the one recorded in the date's runs row).")] = None,
) -> None:
    """How one account's (or margin group's) published figures were reached: input rows and
    netting, each position's valuation and margin, per underlying the scenario losses with the
    worst marked, calendar and short option terms, offsets, R_u; im by mode; collateral tier by
    tier; equity, excess and the rule that decided the status; the group; and what changed since
    the previous published date.  Reads one account: fast on a large warehouse."""
    from flows.progress import say

    as_of = parse_date(date)
    if (account is None) == (group is None):
        fail("give exactly one of --account A or --group G")
    if format not in ("text", "json"):
        fail(f"--format {format!r}: use text or json")
    say(f"explaining {'account ' + account if account is not None else 'margin group ' + group} on {as_of} "
        f"from {db} …")
    from outputs.explain import ExplainError, explain_account, explain_group, render_text, to_json
    try:
        document = (explain_account(db, as_of, account, inputs) if account is not None
                    else explain_group(db, as_of, group, inputs))
    except (ExplainError, FileNotFoundError) as error:
        fail(first_line(error))
    if format == "json":
        sys.stdout.write(to_json(document))
    else:
        if document["inputs"].get("changed_files"):
            typer.echo(f"margin: warning: inputs changed since the run (checksums differ): "
                       f"{', '.join(document['inputs']['changed_files'])}", err=True)
        render_text(document)


@app.command()
def export(
    date: DateOption,
    format: Annotated[str, typer.Option(
        "--format", "-f", help="emir-csv | emir-xml (EMIR Refit margin report) | csv | parquet (analyst extracts).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write into (created if absent).")],
    db: DbOption = DEFAULT_DB,
    inputs: Annotated[Path, typer.Option(
        "--inputs", help="Input root; date=D/variation_margin.parquet is read from here (EMIR fields 3.23-3.25).")
    ] = DEFAULT_INPUTS,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial", help="Write the EMIR report without the records that fail their checks (exit 0).")] = False,
    reporting_time: Annotated[Optional[str], typer.Option(
        "--reporting-time", help="Reporting timestamp, ISO 8601 (default: now, UTC). Same value, same bytes.")] = None,
) -> None:
    """Regulatory and analyst exports of one date (SPEC §10).

    EMIR formats check every record first (LEIs, decimals, currencies, category-driven presence, post-haircut ≤ pre-haircut); failing records are listed with reasons in OUT/emir_margin_LEI_D_rejected.csv (OUT: --out, LEI: the reporting LEI, D: --date), and without --allow-partial nothing else is written and the exit code is 1.

    csv / parquet write account_margin and collateral_valuation for the date with a row_hash per row, plus a manifest with row counts and SHA-256 checksums.
    """
    from flows.progress import say

    as_of = parse_date(date)
    say(f"exporting {as_of} as {format} → {out} …")
    from flows.warehouse import NotAWarehouse
    from outputs.exports import ExportError, export_files

    moment = None
    if reporting_time:
        try:
            moment = dt.datetime.fromisoformat(reporting_time.replace("Z", "+00:00"))
        except ValueError:
            fail(f"--reporting-time {reporting_time!r} is not an ISO 8601 timestamp")
    try:
        result = export_files(db, as_of, format, out, moment, allow_partial, inputs=inputs)
    except (ExportError, OSError, NotAWarehouse) as error:
        fail(first_line(error))
    for warning in result.warnings:
        typer.echo(f"margin: warning: {warning}", err=True)
    for account_id, reasons in result.rejected:
        typer.echo(f"rejected {account_id}: {'; '.join(reasons)}", err=True)
    for path in result.files:
        typer.echo(str(path))
    if result.rejected and not allow_partial:
        fail(f"{len(result.rejected)} record(s) failed their checks; nothing exported "
             f"(see {result.rejections_file}; --allow-partial exports the rest)")
    if result.manifest:
        typer.echo(str(result.manifest))


server_app = typer.Typer(
    help="A persistent local Prefect server under the data folder (loopback, in the background); "
    "its URL is recorded in the data folder's Prefect settings ($PREFECT_HOME/profiles.toml) so that "
    "later commands run as Prefect flow runs with history in its UI.",
    no_args_is_help=True,
)
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(
    port: Annotated[int, typer.Option("--port", help="Loopback port of the server (UI at http://127.0.0.1:PORT).")] = 4200,
) -> None:
    """Start the server in the background (about 20 s the first time) and record its URL."""
    from flows.orchestration import OrchestrationError, start_server

    try:
        state = start_server(port, say=lambda line: typer.echo(line, err=True))
    except (OrchestrationError, OSError) as error:
        fail(first_line(error))
    typer.echo(f"Prefect server running at {state.url} (pid {state.pid}); UI: {state.url.removesuffix('/api')}")
    typer.echo("margin run / demo / backfill now run as Prefect flow runs; `margin server stop` to stop it.")


@server_app.command("stop")
def server_stop() -> None:
    """Stop the server started by `margin server start` and forget its URL."""
    from flows.orchestration import stop_server

    state = stop_server()
    if state is None:
        typer.echo("no Prefect server was started by `margin server start` (nothing to stop)")
        return
    typer.echo(f"stopped the Prefect server at {state.url} (pid {state.pid}); commands run without Prefect again")


@server_app.command("status")
def server_status() -> None:
    """Say whether the recorded server is running and healthy (exit 0) or not (exit 1)."""
    from flows.orchestration import configured_prefect_api_url, healthy, log_file, server_state

    state = server_state()
    configured = configured_prefect_api_url()
    if state is None:
        typer.echo("no server started by `margin server start`"
                   + (f"; PREFECT_API_URL is {configured}" if configured else "; commands run without Prefect"))
        raise typer.Exit(1)
    if not state.alive:
        typer.echo(f"not running: the server started {state.started_at} (pid {state.pid}) has exited; "
                   f"see {log_file()}; `margin server start` starts it again")
        raise typer.Exit(1)
    if not healthy(state.url):
        typer.echo(f"running (pid {state.pid}) but {state.url}/health does not answer (still starting?); see {log_file()}")
        raise typer.Exit(1)
    typer.echo(f"running: {state.url} (pid {state.pid}, since {state.started_at}), healthy")
    if configured != state.url:
        typer.echo(f"note: commands use {configured or 'no Prefect API'} (PREFECT_API_URL overrides the recorded URL)")


def main() -> None:
    """``margin``: every failure ends in one ``margin: error:`` line on stderr and a
    non-zero exit — a mistyped option or value (exit 2), a failed command (1), an
    interruption (130) — never a Python traceback (``MARGIN_TRACEBACK=1`` shows one for
    an unexpected error)."""
    from typer._click import exceptions as click_errors  # typer 0.29 vendors click

    from flows.settings import SHOW_TRACEBACKS

    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as error:  # `margin` alone, `margin server`: the help
        typer.echo(error.ctx.get_help())
        sys.exit(0)
    except click_errors.UsageError as error:  # an unknown option, a missing or malformed value
        where = f" (see `{error.ctx.command_path} --help`)" if error.ctx else ""
        typer.echo(f"margin: error: {' '.join(error.format_message().split())}{where}", err=True)
        sys.exit(2)
    except click_errors.ClickException as error:  # e.g. a file option that cannot be opened
        typer.echo(f"margin: error: {' '.join(error.format_message().split())}", err=True)
        sys.exit(error.exit_code or 1)
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("margin: error: interrupted", err=True)
        sys.exit(130)
    except Exception as error:  # noqa: BLE001 — the last line of defence: never a traceback
        if SHOW_TRACEBACKS:
            raise
        typer.echo(f"margin: error: unexpected {type(error).__name__}: {first_line(error)} "
                   f"(MARGIN_TRACEBACK=1 shows where)"[:1000], err=True)
        sys.exit(1)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
