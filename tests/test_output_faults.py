"""Faults on the outputs (issue 7): a full disk, and output paths that cannot be written.

Each case first publishes worked book A for 2025-03-14 (in-process, no Prefect) as
"the previous results", then runs the date again with a fault on one output:

* a full disk while the results are saved — simulated portably with ``RLIMIT_FSIZE``
  in a subprocess running the end-of-day stages (SIGXFSZ ignored, so a write past the
  limit fails with EFBIG as on a full disk; the limit is above the run log's size and
  below the results files');
* the warehouse's write-ahead log path occupied by a directory (the commit cannot be
  written: the warehouse load fails inside its transaction);
* the results folder path occupied by a regular file ("not a directory");
* a ``--db`` whose parent is a regular file, and a ``--db`` that is a directory.

(Permission bits are not used: tests run as root, which ignores them.)

After each fault: the command fails with one line, the warehouse still holds the
previous results for the date, the saved Parquet results of the date are those of the
previous run unless the fault came after them, the failed attempt is in ``runs`` with
what happened, and once the fault is removed a rerun succeeds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import resource
import shutil
import signal
from pathlib import Path

import duckdb
import pytest

from conftest import EXAMPLES, margin_cli
from flows.eod import RunFailed, run_end_of_day
from flows.settings import results_dir_for, run_log_for

AS_OF = dt.date(2025, 3, 14)
from transforms.contract import RESULT_TABLES  # noqa: E402

def warehouse_snapshot(db: Path) -> dict:
    """The date's published rows (by table) and the runs history."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = {t: con.sql(f"SELECT * FROM {t} ORDER BY ALL").pl() for t in RESULT_TABLES}
        runs = con.sql("SELECT run_id, status, error FROM runs ORDER BY started_at").pl()
    finally:
        con.close()
    return {"tables": tables, "runs": runs}


def results_snapshot(db: Path) -> dict[str, str]:
    folder = results_dir_for(db) / f"date={AS_OF}"
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def assert_previous_results_intact(db: Path, before: dict) -> None:
    after = warehouse_snapshot(db)
    for table, frame in before["tables"].items():
        assert after["tables"][table].equals(frame), f"{table} changed after a failed run"


def failed_attempts(db: Path) -> list[dict]:
    return [r for r in warehouse_snapshot(db)["runs"].iter_rows(named=True) if r["status"] == "failed"]


def publish_previous(folder: Path) -> tuple[Path, Path, dict, dict]:
    """Book A published once under ``folder``: (inputs, db, warehouse snapshot, results snapshot)."""
    inputs = folder / "inputs"
    shutil.copytree(EXAMPLES / "book_a_12_accounts" / "inputs", inputs)
    db = folder / "warehouse" / "margin.duckdb"
    run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    return inputs, db, warehouse_snapshot(db), results_snapshot(db)


@pytest.fixture
def previous(tmp_path):
    return publish_previous(tmp_path)


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and text.strip()
    return text


# ------------------------------------------------------------------ disk full


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    return apply


#: The end-of-day stages without Prefect (no retries, no server), as `margin run` reports a failure.
RUN_STAGES = """
import datetime as dt, sys
from pathlib import Path
from flows.eod import RunFailed, run_end_of_day
try:
    run_end_of_day(dt.date.fromisoformat(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), use_tasks=False)
except RunFailed as error:
    print(f"margin: error: {error}", file=sys.stderr)
    sys.exit(1)
"""


@pytest.fixture(scope="module")
def after_disk_full_on_save(tmp_path_factory):
    """The stages in a subprocess with an 8 kB file-size limit: the run log fits, the results do not.
    Shared by the tests below, which only read it (the rerun works on a copy)."""
    import subprocess
    import sys

    inputs, db, before, saved = publish_previous(tmp_path_factory.mktemp("disk-full"))
    result = subprocess.run(
        [sys.executable, "-c", RUN_STAGES, AS_OF.isoformat(), str(inputs), str(db)],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300,
        preexec_fn=_file_size_limit(8_000),
    )
    return inputs, db, before, saved, result


def test_disk_full_while_saving_keeps_previous_results(after_disk_full_on_save):
    inputs, db, before, saved, result = after_disk_full_on_save
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("margin: error:")]
    assert len(errors) == 1, result.stderr
    assert_previous_results_intact(db, before)
    assert results_snapshot(db) == saved


def test_disk_full_message_says_what_happened(after_disk_full_on_save):
    error_line = [line for line in after_disk_full_on_save[-1].stderr.splitlines() if line.startswith("margin:")][0]
    assert "File too large" in error_line or "No space" in error_line or "disk" in error_line.lower()


def test_rerun_after_disk_full_succeeds_and_records_the_attempt(after_disk_full_on_save, tmp_path):
    inputs, db, before, saved, result = after_disk_full_on_save
    shutil.copytree(inputs.parent, tmp_path / "copy")
    inputs, db = tmp_path / "copy" / inputs.name, tmp_path / "copy" / db.relative_to(inputs.parent)
    record = run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    assert record["status"] == "succeeded"
    failed = failed_attempts(db)
    # The result tables are written as the day is computed (one part file per partition).
    assert len(failed) == 1 and failed[0]["error"].startswith("compute:")
    assert not run_log_for(db).exists() or run_log_for(db).read_text().strip() == ""
    assert warehouse_snapshot(db)["tables"]["account_margin"]["run_id"].unique().to_list() == [record["run_id"]]


# ------------------------------------------------------- warehouse unwritable


@pytest.fixture
def after_wal_blocked(previous):
    """The warehouse's write-ahead log path is a directory: the load cannot commit."""
    inputs, db, before, saved = previous
    wal = db.with_name(db.name + ".wal")
    wal.mkdir()
    with pytest.raises(RunFailed) as caught:
        run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    wal.rmdir()
    return inputs, db, before, caught.value


def test_unwritable_warehouse_keeps_previous_results(after_wal_blocked):
    inputs, db, before, error = after_wal_blocked
    assert ".wal" in one_line(error)
    assert_previous_results_intact(db, before)
    # The results are durable as Parquet before the load: `margin publish` can finish the job.
    assert {name.split("/")[0] for name in results_snapshot(db)} == {*RESULT_TABLES, "run.json"}


def test_rerun_after_unwritable_warehouse_succeeds(after_wal_blocked):
    inputs, db, before, error = after_wal_blocked
    record = run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    assert record["status"] == "succeeded"
    assert [r["error"] for r in failed_attempts(db)] == [f"publish: {error}"]
    assert not run_log_for(db).exists() or run_log_for(db).read_text().strip() == ""


# --------------------------------------------------------- paths that are wrong


def test_results_folder_path_is_a_file(previous):
    """`<db>.results` is a regular file: writing the results fails (they are written as the
    day is computed), the warehouse is untouched, the attempt is recorded at once, and
    after the obstacle is gone a rerun succeeds."""
    inputs, db, before, saved = previous
    results = results_dir_for(db)
    results.rename(results.with_name("kept-aside"))
    results.write_text("not a folder")
    with pytest.raises(RunFailed) as caught:
        run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    assert "Not a directory" in one_line(caught.value)
    assert_previous_results_intact(db, before)
    assert [r["error"] for r in failed_attempts(db)] == [f"compute: {caught.value}"]
    results.unlink()
    record = run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    assert record["status"] == "succeeded"
    assert warehouse_snapshot(db)["tables"]["account_margin"]["run_id"].unique().to_list() == [record["run_id"]]


def test_db_that_is_a_directory(previous, tmp_path):
    inputs, _, _, _ = previous
    db = tmp_path / "a-folder.duckdb"
    db.mkdir()
    with pytest.raises(RunFailed) as caught:
        run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    message = one_line(caught.value)
    assert str(db) in message
    assert list(db.iterdir()) == []


def test_db_whose_parent_is_a_file(previous, tmp_path):
    inputs, _, _, _ = previous
    (tmp_path / "plain-file").write_text("x")
    db = tmp_path / "plain-file" / "margin.duckdb"
    with pytest.raises(RunFailed) as caught:
        run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    assert "plain-file" in one_line(caught.value)


def test_cli_reports_unwritable_db_in_one_line(tmp_path):
    """`margin sql` on a --db under a regular file: one line, non-zero, nothing created."""
    (tmp_path / "plain-file").write_text("x")
    result = margin_cli("sql", "select 1", "--db", str(tmp_path / "plain-file" / "margin.duckdb"))
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("margin: error:")
    assert (tmp_path / "plain-file").read_text() == "x"
