"""One run at a time per warehouse (SPEC §8), with real processes.

- two ``margin run`` processes of one date with different inputs (B has 50 more
  position rows) started together against one warehouse, several rounds, some while
  an analyst's read-only session holds the file: both succeed one after the other, and
  the date's rows, its ``runs`` record and its input checksums are always one run's;
- a run or ``margin publish`` that cannot get the run lock within ``--lock-timeout``
  refuses in one line naming the holder, and the refused attempt is in ``runs``;
- the lock of a run killed with SIGKILL does not block the next run (the kernel frees
  the ``flock``; the next holder sees the dead PID in the file and takes over).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from conftest import PROJECT_ROOT, margin_cli
from flows import run_lock, warehouse
from flows.loading import sha256_of
from flows.settings import run_lock_for

AS_OF = dt.date(2025, 3, 14)
BOOK = "book_a_12_accounts"
NO_PREFECT = {"MARGIN_ORCHESTRATION": "none", "MARGIN_QUIET": "1"}


def start_margin(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args], cwd=PROJECT_ROOT, env={**os.environ, **NO_PREFECT, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def two_books(example_inputs, tmp_path: Path) -> tuple[Path, Path]:
    """Book A, and book A with 50 more position rows (copies of usable rows, source ``extra``)."""
    a = example_inputs(BOOK)
    b = tmp_path / "book_b_inputs"
    shutil.copytree(a, b)
    path = b / f"date={AS_OF}" / "positions.parquet"
    positions = pl.read_parquet(path)
    usable = ~pl.col("instrument_id").is_in(["BTC-20250312", "DOGE-PERP"])  # book A's two quarantined rows
    extra = positions.filter(usable).head(50).with_columns(pl.lit("extra").alias("source"))
    pl.concat([positions, extra]).write_parquet(path)
    return a, b


def published_date(db: Path) -> tuple[set[str], dict, int]:
    """Run ids found in the date's rows, the ``runs`` rows by id, and Σ source_count."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        ids = set()
        for table in warehouse.RESULT_TABLES:
            ids |= {r for (r,) in con.execute(f"SELECT DISTINCT run_id FROM {table} WHERE as_of_date = ?",
                                              [AS_OF]).fetchall()}
        runs = {
            row[0]: {"status": row[1], "input_checksums": json.loads(row[2]), "row_counts": json.loads(row[3]),
                     "parameters": json.loads(row[4]), "error": row[5]}
            for row in con.execute(
                "SELECT run_id, status, input_checksums, row_counts, parameters, error FROM runs").fetchall()
        }
        (sources,) = con.execute("SELECT sum(source_count) FROM position_margin WHERE as_of_date = ?",
                                 [AS_OF]).fetchone()
    finally:
        con.close()
    return ids, runs, int(sources or 0)


ANALYST = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print("open", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


@pytest.mark.slow
def test_two_runs_of_one_date_never_mix_their_results(example_inputs, tmp_path):
    book_a, book_b = two_books(example_inputs, tmp_path)
    db = tmp_path / "warehouse.duckdb"
    checksums = {str(book): sha256_of(book / f"date={AS_OF}" / "positions.parquet") for book in (book_a, book_b)}
    rows_read = {str(book_a): 200, str(book_b): 250}
    assert margin_cli("run", "--date", str(AS_OF), "--inputs", str(book_a), "--db", str(db), "--no-summary",
                      env=NO_PREFECT).returncode == 0  # the warehouse exists: an analyst can open it
    for round_number in range(4):
        analyst = None
        if round_number % 2:  # both runs queue behind an open read-only session (the case that mixed most)
            analyst = subprocess.Popen([sys.executable, "-c", ANALYST, str(db), "3"], stdout=subprocess.PIPE, text=True)
            assert analyst.stdout.readline().strip() == "open"
        first, second = (book_a, book_b) if round_number % 3 else (book_b, book_a)
        runs = [start_margin("run", "--date", str(AS_OF), "--inputs", str(book), "--db", str(db), "--no-summary",
                             "--lock-timeout", "120") for book in (first, second)]
        for process in runs:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr
        if analyst is not None:
            analyst.wait(timeout=30)

        ids, records, sources = published_date(db)
        assert len(ids) == 1, f"round {round_number}: the date holds rows of several runs {ids}"
        (run_id,) = ids
        record = records[run_id]
        book = record["parameters"]["inputs"]
        assert record["status"] == "succeeded"
        assert record["input_checksums"]["positions"] == checksums[book], f"round {round_number}"
        assert record["row_counts"]["positions"]["read"] == rows_read[book], f"round {round_number}"
        assert record["row_counts"]["positions"]["used"] == sources, f"round {round_number}"
        assert not any(r["status"] == "running" for r in records.values())
    _, records, _ = published_date(db)
    assert sum(r["status"] == "succeeded" for r in records.values()) == 9  # every attempt recorded


HOLDER = """
import sys, time
from pathlib import Path
from flows import run_lock
with run_lock.hold_run_lock(Path(sys.argv[1]), timeout=5, run_id="holder-run"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def hold_lock_in_another_process(db: Path, seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)], cwd=PROJECT_ROOT,
                              env={**os.environ, "MARGIN_QUIET": "1"}, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_held_lock_makes_run_and_publish_refuse_in_one_line(example_inputs, tmp_path):
    inputs = example_inputs(BOOK)
    db = tmp_path / "warehouse.duckdb"
    holder = hold_lock_in_another_process(db, 60)
    try:
        refused = margin_cli("run", "--date", str(AS_OF), "--inputs", str(inputs), "--db", str(db), "--no-summary",
                             "--lock-timeout", "1", env=NO_PREFECT)
        published = margin_cli("publish", "--date", str(AS_OF), "--db", str(db), "--lock-timeout", "1")
    finally:
        holder.kill()
        holder.wait()
    for result in (refused, published):
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("margin: error: ")]
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert "in use by run holder-run" in lines[0] and f"PID {holder.pid}" in lines[0], lines[0]
    # The refused attempt is recorded (the lock does not keep the warehouse from the run record).
    _, records, _ = published_date(db)
    (record,) = records.values()
    assert record["status"] == "failed" and record["error"].startswith("lock: warehouse"), record
    # The holder is gone (SIGKILL): the lock is free at once and the next run publishes.
    assert margin_cli("run", "--date", str(AS_OF), "--inputs", str(inputs), "--db", str(db), "--no-summary",
                      "--lock-timeout", "1", env=NO_PREFECT).returncode == 0


def test_the_lock_of_a_killed_run_is_taken_over(example_inputs, tmp_path):
    inputs = example_inputs(BOOK)
    db = tmp_path / "warehouse.duckdb"
    killed = margin_cli("run", "--date", str(AS_OF), "--inputs", str(inputs), "--db", str(db), "--no-summary",
                        env={**NO_PREFECT, warehouse.FAULT_STAGE_ENV: "compute"})
    assert killed.returncode == -signal.SIGKILL
    left = json.loads(run_lock_for(db).read_text())  # the killed run never released it
    assert left["run_id"].startswith(str(AS_OF)) and run_lock.is_stale(left)
    started = time.monotonic()
    with run_lock.hold_run_lock(db, timeout=0):  # no wait at all
        assert json.loads(run_lock_for(db).read_text())["pid"] == os.getpid()
    assert time.monotonic() - started < 5
    assert run_lock_for(db).read_text() == ""  # released: says nobody holds it
    rerun = margin_cli("run", "--date", str(AS_OF), "--inputs", str(inputs), "--db", str(db), "--no-summary",
                       "--lock-timeout", "0", env=NO_PREFECT)
    assert rerun.returncode == 0, rerun.stderr
    _, records, _ = published_date(db)
    assert sorted(r["status"] for r in records.values()) == ["interrupted", "succeeded"]


def test_lock_is_reentrant_in_one_process_and_exclusive_between_processes(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    with run_lock.hold_run_lock(db, timeout=0, run_id="outer"):
        with run_lock.hold_run_lock(db, timeout=0):  # e.g. a publish inside a run of this process
            pass
        assert json.loads(run_lock_for(db).read_text())["run_id"] == "outer"
    holder = hold_lock_in_another_process(db, 30)
    try:
        with pytest.raises(run_lock.RunLockBusy, match=f"PID {holder.pid}"):
            with run_lock.hold_run_lock(db, timeout=0.3):
                pass
        with pytest.raises(run_lock.RunLockBusy):  # NaN must not mean "wait forever"
            with run_lock.hold_run_lock(db, timeout=float("nan")):
                pass
    finally:
        holder.kill()
        holder.wait()
