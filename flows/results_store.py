"""Durable per-date results: Parquet files written before the warehouse load.

Layout: ``<db>.results/date=YYYY-MM-DD/<table>/part-NNNNN.parquet`` (one file per
margin-group partition, the whole book being one; written while the run computed, in its
``scratch_folder``, and hard-linked into place here) plus ``run.json`` (the run record of
the run that produced them).  Results saved by older versions as ``<table>.parquet`` are
still read.  A date's folder is replaced by renaming a
complete staging folder into place, so a reader sees the old set or the new set.  A
process killed between the two renames leaves ``date=D.retired-<run>`` (the previous
complete set, which ``load_results`` falls back to) and the next save cleans it up.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from flows.warehouse import fault_point
from transforms.contract import RESULT_TABLES


def date_dir(results_dir: Path, as_of: dt.date) -> Path:
    return Path(results_dir) / f"date={as_of.isoformat()}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


STAGING_LOCK = ".writer.lock"


def _held_by_a_live_run(staging: Path) -> bool:
    """Whether the process writing ``staging`` is still alive (it holds an flock on its lock file)."""
    try:
        handle = open(staging / STAGING_LOCK, "rb")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


#: Uncompressed: the copy is written on every run's critical path and read back at once by
#: the publish; LZ4 took twice the CPU to write for a third fewer bytes (docs/performance.md,
#: "Engine choices").
COMPRESSION = "uncompressed"
#: Rows per Parquet row group: at most DuckDB's row group (122,880 rows), so the publish's
#: parallel insert fills whole row groups and writes them as it loads.  Polars' own choice
#: (125,001 rows for a 500,001-row ``account_margin``) left partly filled row groups that
#: DuckDB rewrote at its checkpoint: 0.6–0.8 s more at close and a 83 MB table instead of
#: 55 MB (docs/performance.md, issue 16 round 5).
ROW_GROUP_ROWS = 122_880


def write_durably(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` as Parquet (uncompressed; dictionary-encoded strings; row groups of
    ``ROW_GROUP_ROWS``) and fsync it.

    Polars reports a failed file write as an opaque Parquet error ("Invalid thrift:
    transport error"); when that happens the file is written once more from memory with
    Python's own I/O, which either succeeds (a passing fault) or raises the real
    ``OSError`` ("No space left on device", "File too large", "Permission denied").
    """
    try:
        frame.write_parquet(path, compression=COMPRESSION, statistics=False, row_group_size=ROW_GROUP_ROWS)
    except OSError:
        raise
    except Exception:
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression=COMPRESSION, statistics=False, row_group_size=ROW_GROUP_ROWS)
        with open(path, "wb") as handle:
            handle.write(buffer.getbuffer())
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextmanager
def scratch_folder(results_dir: Path, as_of: dt.date, run_id: str) -> Iterator[Path]:
    """A folder beside the date's results where a partitioned run writes its part files
    (``date=D.partial-<run>``), locked like a staging folder so a concurrent save does not
    clear it; removed on exit (``save_results`` has hard-linked the files it keeps)."""
    folder = date_dir(results_dir, as_of).with_name(f"date={as_of.isoformat()}.partial-{run_id}")
    folder.mkdir(parents=True, exist_ok=False)
    try:
        with open(folder / STAGING_LOCK, "wb") as writer_lock:
            fcntl.flock(writer_lock.fileno(), fcntl.LOCK_EX)
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def save_results(results_dir: Path, as_of: dt.date, run_id: str, tables: dict[str, Sequence[Path]],
                 run_record: dict) -> Path:
    """Put every result table for ``as_of`` (its part files, written by the compute) in
    place with the run record, swapping the folder into place atomically.

    The part files are hard-linked (same file system, no copy; copied where links are
    refused) into ``<table>/``, so they stay where they are until their scratch folder
    goes and a retry after a failed attempt finds them again.  A staging folder of this
    same run is a failed earlier attempt's, and is replaced."""
    final = date_dir(results_dir, as_of)
    staging = final.with_name(f"{final.name}.staging-{run_id}")
    if staging.exists():  # this run's own earlier attempt (a retry of the save task)
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=False)
    with open(staging / STAGING_LOCK, "wb") as writer_lock:
        fcntl.flock(writer_lock.fileno(), fcntl.LOCK_EX)  # released when this process ends, however
        for table in RESULT_TABLES:
            (staging / table).mkdir()
            for part in tables[table]:
                _link_or_copy(Path(part), staging / table / Path(part).name)
            _fsync_dir(staging / table)
        (staging / "run.json").write_text(json.dumps(run_record, sort_keys=True, default=str, indent=1))
        _fsync_dir(staging)
        fault_point("save")
        retired = final.with_name(f"{final.name}.retired-{run_id}")
        if final.exists():
            os.replace(final, retired)
            fault_point("save-swap")
        os.replace(staging, final)
        (final / STAGING_LOCK).unlink()
        _fsync_dir(final.parent)
        for leftover in final.parent.glob(f"{final.name}.*"):
            # Retired sets go at once; another run's staging folder only when no live
            # process holds its lock (a killed run's), so a concurrent run keeps its own.
            if ".retired-" in leftover.name or not _held_by_a_live_run(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
        # A killed partitioned run's scratch (spill files and parts, gigabytes at 100M
        # rows) of any date goes too, so a date that is never rerun does not keep it.
        for leftover in final.parent.glob("date=*.partial-*"):
            if not _held_by_a_live_run(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
    return final


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


class ResultsReplaced(RuntimeError):
    """The saved results folder holds another run's results than the one being published."""


def table_files(folder: Path, run_id: str | None = None) -> dict[str, list[Path]]:
    """Table → its Parquet file(s) in a saved results folder (one file, or one per partition).

    With ``run_id``: the folder's ``run.json`` must be that run's (the run lock makes
    this so; checked, because a date's rows and its run record must come from one run)."""
    if run_id is not None:
        try:
            saved_run = json.loads((Path(folder) / "run.json").read_text()).get("run_id")
        except (OSError, ValueError, AttributeError) as error:
            raise ResultsReplaced(f"saved results {folder} have no readable run.json ({error})") from error
        if saved_run != run_id:
            raise ResultsReplaced(
                f"saved results {folder} are run {saved_run}'s, not this run's ({run_id}); nothing published"
            )
    files = {}
    for table in RESULT_TABLES:
        single = Path(folder) / f"{table}.parquet"
        parts = sorted((Path(folder) / table).glob("*.parquet"))
        if not single.exists() and not parts:
            raise FileNotFoundError(f"saved results {folder} have no {table} table")
        files[table] = [single] if single.exists() else parts
    return files


def load_results(results_dir: Path, as_of: dt.date) -> tuple[dict[str, list[Path]], dict]:
    """The saved tables (their Parquet files) and run record for ``as_of``;
    ``FileNotFoundError`` if none were saved."""
    folder = date_dir(results_dir, as_of)
    if not folder.is_dir():
        retired = sorted(folder.parent.glob(f"{folder.name}.retired-*"), key=lambda p: p.stat().st_mtime)
        if not retired:
            raise FileNotFoundError(f"no saved results for {as_of} in {results_dir} (run `margin run --date {as_of}`)")
        folder = retired[-1]
    return table_files(folder), json.loads((folder / "run.json").read_text())
