"""The DuckDB warehouse: schema, atomic per-date publish, the run history, read-only access.

DuckDB lets one read-write process or many read-only processes hold the file, never
both.  Writers wait a bounded time for the lock (``lock_timeout``) and then fail with a
one-line message; because results are already durable as Parquet, ``margin publish
--date D`` finishes the job later.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from flows import run_lock
from flows.connection import (  # noqa: F401 (opening the file lives in flows.connection; names kept for callers)
    NotAWarehouse, WarehouseLocked, check_warehouse_file, connect,
)
from flows.progress import say
from flows.settings import (  # noqa: F401 (the environment is read in settings; names kept for callers)
    FAULT_STAGE_ENV, LOCK_TIMEOUT_ENV, SQL_DIR, default_lock_timeout, fault_stage, run_log_for,
)
from transforms.contract import RESULT_TABLES  # noqa: F401 (defined once, in the contract)

FAULT_STAGES = (
    "load", "compute", "save", "save-swap", "publish", "publish-mid-transaction", "publish-committed",
)


def fault_point(stage: str) -> None:
    """Test hook: with ``MARGIN_FAULT_STAGE=<stage>`` the process SIGKILLs itself here.

    Used by the kill-at-each-stage tests to prove that an interrupted run leaves the
    previous results of its date intact.  Stages: see ``FAULT_STAGES``.  Never set it
    in production.
    """
    if fault_stage() == stage:
        os.kill(os.getpid(), signal.SIGKILL)


def sql_file(name: str) -> str:
    return (SQL_DIR / name).read_text()


@contextmanager
def open_warehouse(db_path: Path, *, read_only: bool = False, lock_timeout: float | None = None) -> Iterator[
    duckdb.DuckDBPyConnection
]:
    """Connection context; a writer makes sure the schema exists."""
    db_path = Path(db_path)
    if read_only and not db_path.exists():
        raise FileNotFoundError(f"warehouse {db_path} does not exist yet (run `margin demo` or `margin run` first)")
    if not read_only:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    con = connect(db_path, read_only=read_only, lock_timeout=lock_timeout)
    try:
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the SPEC §8 tables (``sql/schema.sql``) and the analyst views (``sql/views/*.sql``)."""
    con.execute(sql_file("schema.sql"))
    views_dir = SQL_DIR / "views"
    if views_dir.is_dir():
        for view in sorted(views_dir.glob("*.sql")):
            con.execute(view.read_text())


def _run_row(record: dict) -> dict:
    """A run record (from memory, ``run.json`` or the run log: dates as objects or ISO text) as a ``runs`` row."""
    row = dict(record)
    for key in ("parameters", "input_checksums", "row_counts", "timings", "warnings"):
        row[key] = json.dumps(row.get(key), sort_keys=True, default=str)
    for key in ("started_at", "finished_at"):
        if isinstance(row.get(key), str):
            row[key] = dt.datetime.fromisoformat(row[key])
    if isinstance(row.get("as_of_date"), str):
        row["as_of_date"] = dt.date.fromisoformat(row["as_of_date"])
    return row


RUN_COLUMNS = (
    "run_id", "as_of_date", "started_at", "finished_at", "status", "error", "code_version", "parameters",
    "input_checksums", "row_counts", "timings", "warnings",
)


def _upsert_runs(con: duckdb.DuckDBPyConnection, records: list[dict]) -> None:
    if not records:
        return
    rows = [_run_row(r) for r in records]
    frame = pl.DataFrame(
        {c: [r.get(c) for r in rows] for c in RUN_COLUMNS},
        schema={
            "run_id": pl.String, "as_of_date": pl.Date, "started_at": pl.Datetime("us", "UTC"),
            "finished_at": pl.Datetime("us", "UTC"), "status": pl.String, "error": pl.String,
            "code_version": pl.String, "parameters": pl.String, "input_checksums": pl.String,
            "row_counts": pl.String, "timings": pl.String, "warnings": pl.String,
        },
    )
    con.register("incoming_runs", frame)
    # "interrupted" is a guess from a run log line without a final word; it never
    # overwrites a final status the warehouse already has for that run.
    con.execute(
        "CREATE OR REPLACE TEMP TABLE accepted_runs AS SELECT i.* FROM incoming_runs i "
        "WHERE NOT (i.status = 'interrupted' AND EXISTS "
        "(SELECT 1 FROM runs r WHERE r.run_id = i.run_id AND r.status <> 'running'))"
    )
    con.execute("DELETE FROM runs WHERE run_id IN (SELECT run_id FROM accepted_runs)")
    con.execute("INSERT INTO runs BY NAME SELECT * FROM accepted_runs")
    con.execute("DROP TABLE accepted_runs")
    con.unregister("incoming_runs")


@contextmanager
def _locked_run_log(db_path: Path, mode: str) -> Iterator:
    """The run log opened with an exclusive ``flock`` (appends and rewrites never interleave)."""
    log = run_log_for(Path(db_path))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read_run_log(db_path: Path) -> tuple[str, int]:
    """The run log's text and its length in bytes at the time of reading (bytes that are
    not UTF-8 are read as U+FFFD: the damaged line is set aside, the rest still loads)."""
    log = run_log_for(Path(db_path))
    if not log.exists():
        return "", 0
    with _locked_run_log(db_path, "ab+") as handle:
        handle.seek(0)
        data = handle.read()
    return data.decode("utf-8", errors="replace"), len(data)


def _damaged(record) -> str | None:
    """Why a parsed run-log line cannot be a ``runs`` row (None when it can)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("run_id"), str) or not record["run_id"].strip():
        return "no run_id"
    try:
        for key in ("started_at", "finished_at"):
            if record.get(key) is not None:
                dt.datetime.fromisoformat(record[key])
        if record.get("as_of_date") is not None:
            dt.date.fromisoformat(record["as_of_date"])
    except (TypeError, ValueError) as error:
        return f"bad date or time ({error})"
    for key in ("status", "error", "code_version"):
        if record.get(key) is not None and not isinstance(record[key], str):
            return f"{key} is not text"
    return None


def rejected_log_for(db_path: Path) -> Path:
    """Where damaged run-log lines are set aside: ``<db>.runs.jsonl.rejected``."""
    log = run_log_for(Path(db_path))
    return log.with_name(log.name + ".rejected")


def _set_aside(db_path: Path, damaged: list[tuple[str, str]]) -> None:
    """Append damaged run-log lines to the rejected file (with why), and say so once."""
    target = rejected_log_for(db_path)
    try:
        with open(target, "a", encoding="utf-8") as handle:
            for line, why in damaged:
                handle.write(json.dumps({"reason": why, "line": line}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        say(f"[yellow]run log:[/yellow] {len(damaged)} damaged line(s) skipped; cannot keep them in {target}: {error}")
        return
    say(f"[yellow]run log:[/yellow] {len(damaged)} damaged line(s) ({damaged[0][1]}) set aside in {target}")


def pending_run_records(db_path: Path, current_run_id: str | None = None, text: str | None = None) -> list[dict]:
    """Last record per run id from the run log; a run whose last word is ``running`` and
    is not the current one was interrupted (killed, machine lost) unless its process is
    still alive.  A damaged line (not JSON, cut short, no ``run_id``, a bad date) never
    blocks a run: it is set aside in ``<db>.runs.jsonl.rejected`` with a warning."""
    if text is None:
        text, _ = _read_run_log(db_path)
    latest: dict[str, dict] = {}
    damaged: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            damaged.append((line, "not JSON (a torn or hand-edited line)"))
            continue
        why = _damaged(record)
        if why:
            damaged.append((line, why))
            continue
        latest[record["run_id"]] = record
    if damaged:
        _set_aside(db_path, damaged)
    for run_id, record in latest.items():
        still_running = run_lock.process_alive(record.get("process")) is True
        if record.get("status") == "running" and run_id != current_run_id and not still_running:
            record["status"] = "interrupted"
            record["error"] = record.get("error") or "run ended without a final record (killed or lost)"
    for record in latest.values():
        for key in ("started_at", "finished_at"):
            if record.get(key):
                record[key] = dt.datetime.fromisoformat(record[key])
        if record.get("as_of_date"):
            record["as_of_date"] = dt.date.fromisoformat(record["as_of_date"])
    return list(latest.values())


def append_run_log(db_path: Path, record: dict) -> None:
    """Append one run record to the JSON-lines run log beside the warehouse (fsynced)."""
    with _locked_run_log(db_path, "a+") as handle:  # a+: readable, for the torn-line check
        size = os.fstat(handle.fileno()).st_size
        if size and os.pread(handle.fileno(), 1, size - 1) != b"\n":
            handle.write("\n")  # a line torn by a killed writer must not swallow this record
        handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _clear_run_log(db_path: Path, loaded_bytes: int) -> None:
    """Drop the first ``loaded_bytes`` of the run log (now in the warehouse), keeping
    whatever was appended since it was read."""
    log = run_log_for(Path(db_path))
    if not log.exists() or loaded_bytes == 0:
        return
    with _locked_run_log(db_path, "rb+") as handle:
        handle.seek(0)
        rest = handle.read()[loaded_bytes:]
        handle.seek(0)
        handle.truncate()
        handle.write(rest)
        handle.flush()
        os.fsync(handle.fileno())


class InsertFailed(RuntimeError):
    """A table could not be loaded into the open publish transaction (nothing was committed)."""


class Publication:
    """One date's publish (SPEC §8): a transaction that replaces every result table's rows
    for ``as_of`` and records the run, filled table by table and committed at the end.

    All DuckDB work runs on one worker thread, so a run can hand each result file to
    ``insert`` the moment it is written and go on computing while DuckDB loads it
    (``flows.eod``); ``publish_date`` uses it in one go.  Nothing is visible to readers
    before ``commit``; ``abort`` (or a killed process) leaves the date as it was.
    """

    def __init__(self, db_path: Path, as_of: dt.date, run_id: str, *, lock_timeout: float | None = None):
        self.db_path, self.as_of, self.run_id = Path(db_path), as_of, run_id
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="publish")
        self._pending: list[Future] = []
        #: Names of the Parquet files queued per table (``holds`` compares them with the saved ones).
        self.queued_files: dict[str, list[str]] = {}
        self._opened = contextlib.ExitStack()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._closed = False
        try:
            self._worker.submit(self._begin, lock_timeout).result()
        except BaseException:
            self.abort()
            raise

    def _begin(self, lock_timeout: float | None) -> None:
        self._con = self._opened.enter_context(open_warehouse(self.db_path, lock_timeout=lock_timeout))
        # Tables have no row order (every reader sorts); letting DuckDB write the bulk
        # insert out of order roughly halves the publish at 10M rows and avoids a
        # second pass at checkpoint (measured 31 s → 8 s for 8.5M result rows).
        self._con.execute("SET preserve_insertion_order = false")
        self._con.execute("BEGIN TRANSACTION")
        for table in RESULT_TABLES:
            self._con.execute(f"DELETE FROM {table} WHERE as_of_date = ?", [self.as_of])

    def insert(self, table: str, source: pl.DataFrame | list[Path]) -> None:
        """Queue the rows of ``table``: a frame, or Parquet file(s) that DuckDB reads in bulk
        (``read_parquet``), so the rows never need to be in this process's memory."""
        if table not in RESULT_TABLES:
            raise ValueError(f"not a result table: {table}")
        if not isinstance(source, pl.DataFrame):
            self.queued_files.setdefault(table, []).extend(Path(f).name for f in source)
        self._pending.append(self._worker.submit(self._insert, table, source))

    def insert_file(self, table: str, path: Path) -> None:
        """``insert(table, [path])``: the shape ``flows.partitioned.OnWritten`` calls."""
        self.insert(table, [Path(path)])

    def holds(self, tables: dict[str, list[Path]]) -> bool:
        """Whether it is still open and the files queued for each table have the names of
        ``tables``' files (table → files: the saved folder's links to the files written)."""
        return not self._closed and all(
            sorted(self.queued_files.get(t, [])) == sorted(Path(f).name for f in tables[t])
            for t in RESULT_TABLES
        )

    def _insert(self, table: str, source: pl.DataFrame | list[Path]) -> None:
        params = {"as_of": self.as_of, "run_id": self.run_id}
        if isinstance(source, pl.DataFrame):
            self._con.register("incoming_rows", source)
            rows = "incoming_rows"
        else:  # hive_partitioning off: the folder name date=D is not a column
            rows = "read_parquet($files, hive_partitioning = false)"
            params["files"] = [str(f) for f in source]
        try:
            self._con.execute(
                f"INSERT INTO {table} BY NAME SELECT *, $as_of::DATE AS as_of_date, $run_id AS run_id FROM {rows}",
                params,
            )
        finally:
            if rows == "incoming_rows":
                self._con.unregister("incoming_rows")

    def commit(self, run_record: dict) -> None:
        """Wait for the queued inserts, record the run (and pending run-log records) and
        COMMIT; on any error roll back and raise (``InsertFailed`` when a queued insert
        failed: nothing was committed).  The connection is closed either way."""
        try:
            fault_point("publish")
            for position, future in enumerate(self._pending):
                if position == len(self._pending) // 2:
                    fault_point("publish-mid-transaction")
                try:
                    future.result()
                except Exception as error:
                    raise InsertFailed(f"loading the results into {self.db_path} failed: {error}") from error
            self._worker.submit(self._commit, run_record).result()
        finally:
            self.abort()

    def _commit(self, run_record: dict) -> None:
        log_text, log_bytes = _read_run_log(self.db_path)
        pending = pending_run_records(self.db_path, current_run_id=self.run_id, text=log_text)
        _upsert_runs(self._con, [r for r in pending if r["run_id"] != self.run_id] + [run_record])
        self._con.execute("COMMIT")
        self._con = None
        fault_point("publish-committed")
        # Still holding the warehouse's write lock: no other publish can read the log
        # between our commit and this clear (records appended since are kept).
        _clear_run_log(self.db_path, log_bytes)

    def abort(self) -> None:
        """Roll back what is not committed and close the warehouse (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for future in self._pending:
            future.cancel()
        if self._con is not None and any(future.running() for future in self._pending):
            try:  # stop the insert under way (DuckDB allows this from another thread)
                self._con.interrupt()
            except duckdb.Error:
                pass
        try:
            self._worker.submit(self._close).result()
        finally:
            self._worker.shutdown(wait=True)

    def _close(self) -> None:
        try:
            if self._con is not None:
                self._con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        finally:
            self._con = None
            self._opened.close()


def publish_date(
    db_path: Path,
    as_of: dt.date,
    run_id: str,
    tables: dict[str, pl.DataFrame | list[Path]],
    run_record: dict,
    *,
    lock_timeout: float | None = None,
) -> None:
    """Replace every result table's rows for ``as_of`` and record the run, in one transaction.

    A table is a frame, or its saved Parquet file(s) (``flows.results_store.table_files``),
    which DuckDB reads in bulk (``read_parquet``): the day's results never need to be in
    this process's memory.

    Either all tables for the date change together with the ``runs`` row, or nothing
    does (DuckDB rolls back on any error, and a killed process never commits).
    Pending run-log records (failed or interrupted attempts) are loaded too.
    """
    publication = Publication(db_path, as_of, run_id, lock_timeout=lock_timeout)
    try:
        for table in RESULT_TABLES:
            publication.insert(table, tables[table])
    except BaseException:
        publication.abort()
        raise
    publication.commit(run_record)


def record_runs(db_path: Path, *, lock_timeout: float = 5.0) -> bool:
    """Load pending run-log records into ``runs``; False when the warehouse stays locked."""
    try:
        with open_warehouse(db_path, lock_timeout=lock_timeout) as con:
            log_text, log_bytes = _read_run_log(db_path)
            pending = pending_run_records(db_path, text=log_text)
            con.execute("BEGIN TRANSACTION")
            _upsert_runs(con, pending)
            con.execute("COMMIT")
            _clear_run_log(db_path, log_bytes)
    except WarehouseLocked:
        return False
    return True


def query(db_path: Path, sql: str, params: list | None = None) -> pl.DataFrame:
    """Run one read-only query against the warehouse and return a Polars frame."""
    with open_warehouse(db_path, read_only=True) as con:
        return con.sql(sql, params=params).pl() if params else con.sql(sql).pl()
