"""Operating the end-of-day run (issue 4), with real processes and a real DuckDB file.

- kill -9 at every stage of ``margin run`` (``MARGIN_FAULT_STAGE``): the date keeps its
  previous results, the interrupted attempts reach ``runs``, a rerun replaces the date
  with the same figures;
- an analyst's read-only session held open by another process: the run waits a bounded
  time, fails with one line naming ``margin publish``, nobody sees half a date, and
  ``margin publish`` finishes from the saved Parquet once the session is closed;
- ``margin backfill`` continues past a failed date and leaves a markdown artifact per
  published date in Prefect;
- ``margin serve`` registers the weekday cron deployment.

Every flow run goes through the session Prefect server (``prefect_api``).
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
import uuid
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from conftest import PROJECT_ROOT, margin_cli
from flows import results_store, warehouse
from flows.settings import results_dir_for

AS_OF = dt.date(2025, 3, 14)
BOOK = "book_a_12_accounts"


def published(db: Path, as_of: dt.date = AS_OF) -> dict[str, pl.DataFrame]:
    """Every result table of ``as_of`` (sorted, with run_id) plus the runs table."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        tables = {
            table: con.sql(f"SELECT * FROM {table} WHERE as_of_date = ? ORDER BY ALL", params=[as_of]).pl()
            for table in warehouse.RESULT_TABLES
        }
        tables["runs"] = con.sql("SELECT run_id, status, error FROM runs ORDER BY started_at").pl()
    finally:
        con.close()
    return tables


def run_ids(tables: dict[str, pl.DataFrame]) -> set[str]:
    return {rid for table in warehouse.RESULT_TABLES for rid in tables[table]["run_id"].unique().to_list()}


def assert_same_figures(after: dict[str, pl.DataFrame], before: dict[str, pl.DataFrame]) -> None:
    """Same rows and values, whatever run produced them.

    Floats are compared to 1e-12 relative: Polars' multi-threaded sums are not
    bit-reproducible from one process to the next (last-ulp differences)."""
    for table in warehouse.RESULT_TABLES:
        assert_frame_equal(
            after[table].drop("run_id"), before[table].drop("run_id"), check_exact=False, rel_tol=1e-12, abs_tol=1e-9
        )


@pytest.fixture
def baseline(example_inputs, tmp_path):
    """Book A published once for AS_OF (in-process, without Prefect): the previous results."""
    from flows.eod import run_end_of_day

    inputs = example_inputs(BOOK)
    db = tmp_path / "warehouse.duckdb"
    record = run_end_of_day(AS_OF, inputs, db, use_tasks=False)
    return inputs, db, record, published(db)


def start_margin(*args: str, env: dict) -> subprocess.Popen:
    """The real ``margin`` command in a subprocess, not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args], cwd=PROJECT_ROOT, env={**os.environ, **env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


# Kills before the publish touch only the run log and the results folder; they run side
# by side.  Most kills skip Prefect (the fault points are in the same code either way);
# the mid-transaction kill and the rerun go through the Prefect flow.
KILLED_SIDE_BY_SIDE = ("load", "compute", "save", "save-swap")
KILLED_IN_TURN = {"publish": "none", "publish-mid-transaction": "prefect", "publish-committed": "none"}


@pytest.mark.slow
def test_kill_at_each_stage_keeps_previous_results_and_rerun_replaces_the_date(baseline, prefect_api):
    inputs, db, first, before = baseline
    assert run_ids(before) == {first["run_id"]}
    assert set(KILLED_SIDE_BY_SIDE) | set(KILLED_IN_TURN) == set(warehouse.FAULT_STAGES)
    args = ("run", "--date", AS_OF.isoformat(), "--inputs", str(inputs), "--db", str(db), "--no-summary")

    def unchanged(stage: str) -> None:
        after = published(db)
        for table in warehouse.RESULT_TABLES:
            assert after[table].equals(before[table]), f"kill at {stage} changed {table}"

    runs = {
        stage: start_margin(*args, env={warehouse.FAULT_STAGE_ENV: stage, "MARGIN_ORCHESTRATION": "none"})
        for stage in KILLED_SIDE_BY_SIDE
    }
    for stage, process in runs.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == -signal.SIGKILL, f"{stage}: {process.returncode}\n{stderr}"
    unchanged("load, compute, save, save-swap")
    # killed between the two renames of save: the previous Parquet set is still found
    _, saved_record = results_store.load_results(results_dir_for(db), AS_OF)
    assert saved_record["run_id"] == first["run_id"]

    for stage, orchestration in KILLED_IN_TURN.items():
        result = margin_cli(*args, env={warehouse.FAULT_STAGE_ENV: stage, "MARGIN_ORCHESTRATION": orchestration})
        assert result.returncode == -signal.SIGKILL, f"{stage}: {result.returncode}\n{result.stderr}"
        if stage != "publish-committed":
            unchanged(stage)
    after = published(db)  # killed after COMMIT: the new run is the date, complete
    (committed_run,) = run_ids(after)
    assert committed_run != first["run_id"]
    assert after["runs"].filter(pl.col("run_id") == committed_run)["status"].to_list() == ["succeeded"]
    assert_same_figures(after, before)

    rerun = margin_cli(*args, env={"MARGIN_ORCHESTRATION": "prefect"})
    assert rerun.returncode == 0, rerun.stderr
    after = published(db)
    assert len(run_ids(after)) == 1 and run_ids(after) != {first["run_id"], committed_run}
    assert_same_figures(after, before)
    statuses = after["runs"]["status"].to_list()
    assert statuses.count("interrupted") == len(warehouse.FAULT_STAGES) - 1, after["runs"]
    assert statuses.count("succeeded") == 3  # the baseline, the run killed after COMMIT, the rerun
    assert statuses.count("running") == 0
    leftovers = sorted(p.name for p in results_dir_for(db).iterdir())
    assert leftovers == [f"date={AS_OF.isoformat()}"]  # staging and retired sets of killed runs cleaned up
    assert not warehouse.run_log_for(db).read_text().strip()  # everything reached the warehouse


ANALYST = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
def look():
    rows = con.sql("SELECT DISTINCT run_id FROM account_margin UNION SELECT DISTINCT run_id FROM position_margin").fetchall()
    print(",".join(sorted(r[0] for r in rows)), flush=True)
look()
for line in sys.stdin:
    if line.strip() == "look":
        look()
    else:
        break
con.close()
print("closed", flush=True)
"""


@pytest.mark.slow
def test_open_analyst_session_neither_blocks_forever_nor_shows_half_a_date(baseline, prefect_api):
    inputs, db, first, before = baseline
    analyst = subprocess.Popen(
        [sys.executable, "-c", ANALYST, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert analyst.stdout.readline().strip() == first["run_id"]
        result = margin_cli(
            "run", "--date", AS_OF.isoformat(), "--inputs", str(inputs), "--db", str(db), "--no-summary",
            "--lock-timeout", "1",
        )
        assert result.returncode == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("margin: error:")]
        assert len(errors) == 1, result.stderr
        assert "locked" in errors[0] and f"margin publish --date {AS_OF}" in errors[0], errors[0]
        analyst.stdin.write("look\n")
        analyst.stdin.flush()
        assert analyst.stdout.readline().strip() == first["run_id"]  # still the whole previous date
    finally:
        analyst.stdin.write("done\n")
        analyst.stdin.flush()
        assert analyst.stdout.readline().strip() == "closed"
        analyst.wait(timeout=30)

    _, saved = results_store.load_results(results_dir_for(db), AS_OF)
    assert saved["run_id"] != first["run_id"]
    finished = margin_cli("publish", "--date", AS_OF.isoformat(), "--db", str(db))
    assert finished.returncode == 0, finished.stderr
    after = published(db)
    assert run_ids(after) == {saved["run_id"]}
    assert_same_figures(after, before)
    runs = {row["run_id"]: row for row in after["runs"].iter_rows(named=True)}
    assert runs[saved["run_id"]]["status"] == "succeeded" and runs[saved["run_id"]]["error"] is None


def _artifact_markdown(api_url: str, key: str) -> str | None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return found[0].data if found else None


@pytest.mark.slow
def test_backfill_continues_past_a_failed_date_and_leaves_artifacts(example_inputs, tmp_path, prefect_api):
    inputs = example_inputs(BOOK)
    source = inputs / f"date={AS_OF.isoformat()}"
    shutil.copytree(source, inputs / "date=2025-03-13")
    shutil.copytree(source, inputs / "date=2025-03-17")
    (inputs / "date=2025-03-13" / "prices.parquet").unlink()  # a structural error on the first date
    db = tmp_path / "warehouse.duckdb"
    result = margin_cli("backfill", "--start", "2025-03-10", "--end", "2025-03-17", "--inputs", str(inputs), "--db", str(db))
    assert result.returncode == 1, result.stderr
    assert "succeeded: 2  failed: 1" in result.stdout
    assert "2025-03-13: " in result.stderr and "prices.parquet" in result.stderr
    con = duckdb.connect(str(db), read_only=True)
    try:
        dates = con.sql("SELECT DISTINCT as_of_date FROM account_margin ORDER BY 1").fetchall()
        runs = con.sql("SELECT as_of_date, status, error, row_counts FROM runs ORDER BY as_of_date").pl()
    finally:
        con.close()
    assert [d for (d,) in dates] == [dt.date(2025, 3, 14), dt.date(2025, 3, 17)]
    assert runs["status"].to_list() == ["failed", "succeeded", "succeeded"]
    assert "structural error" in runs["error"][0] and "prices.parquet" in runs["error"][0]
    assert json.loads(runs["row_counts"][1])["positions"]["read"] == 200

    markdown = _artifact_markdown(prefect_api, "margin-2025-03-17")
    assert markdown is not None, "no markdown artifact for 2025-03-17"
    for heading in ("# End-of-day margin 2025-03-17", "accounts by binding status", "quarantined rows by reason", "run `"):
        assert heading in markdown
    assert _artifact_markdown(prefect_api, "margin-2025-03-13") is None


def _deployment(api_url: str, name: str):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            try:
                return client.read_deployment_by_name(f"eod-margin/{name}")
            except ObjectNotFound:
                return None


@pytest.mark.slow
def test_serve_registers_the_weekday_deployment_with_its_cron(tmp_path, prefect_api):
    name = f"test-serve-{uuid.uuid4().hex[:8]}"
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve", "--name", name, "--at", "17:05", "--timezone", "Europe/London",
         "--inputs", str(tmp_path / "inputs"), "--db", str(tmp_path / "warehouse.duckdb")],
        cwd=PROJECT_ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 90
        deployment = None
        while deployment is None and server.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
            deployment = _deployment(prefect_api, name)
        assert deployment is not None, f"deployment not registered; serve said:\n{server.stdout.read() if server.poll() is not None else ''}"
        for line in server.stdout:  # printed once registered, just before the runner starts polling
            if "is being served" in line:
                break
        (schedule,) = deployment.schedules
        assert schedule.schedule.cron == "5 17 * * 1-5"
        assert schedule.schedule.timezone == "Europe/London"
        assert schedule.active
        assert deployment.parameters["as_of"] == "today"
        assert deployment.parameters["timezone"] == "Europe/London"
        assert deployment.parameters["db"] == str((tmp_path / "warehouse.duckdb").resolve())
        time.sleep(2)  # let the runner start, so that stopping it pauses the deployment
    finally:
        server.send_signal(signal.SIGTERM)  # what systemd / docker stop send
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0
    assert _deployment(prefect_api, name).paused  # stopping pauses the deployment


def test_weekday_cron_and_schedule_options():
    from flows.serve import ScheduleError, check_cron, check_timezone, weekday_cron

    assert weekday_cron("18:30") == "30 18 * * 1-5"
    assert weekday_cron("7:05") == "5 7 * * 1-5"
    assert check_cron("0 22 * * *") == "0 22 * * *"
    for bad in (lambda: weekday_cron("24:00"), lambda: check_cron("every day"), lambda: check_timezone("Mars/Olympus")):
        with pytest.raises(ScheduleError):
            bad()


def test_run_log_interrupted_guess_never_overwrites_a_final_status(tmp_path):
    db = tmp_path / "warehouse.duckdb"
    running = {"run_id": "r1", "as_of_date": "2025-03-14", "started_at": "2025-03-14T18:30:00+00:00",
               "finished_at": None, "status": "running", "error": None, "code_version": "x"}
    warehouse.append_run_log(db, running)
    warehouse.append_run_log(db, {**running, "run_id": "r2"})
    assert warehouse.record_runs(db)
    warehouse.append_run_log(db, {**running, "run_id": "r2", "status": "succeeded", "finished_at": "2025-03-14T18:31:00+00:00"})
    assert warehouse.record_runs(db)
    warehouse.append_run_log(db, running)  # a stale "running" line for r1 and r2 seen again
    warehouse.append_run_log(db, {**running, "run_id": "r2"})
    assert warehouse.record_runs(db)
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = dict(con.sql("SELECT run_id, status FROM runs ORDER BY run_id").fetchall())
    finally:
        con.close()
    assert rows == {"r1": "interrupted", "r2": "succeeded"}
    assert warehouse.run_log_for(db).read_text() == ""


def test_export_flow_writes_every_format_with_one_reporting_time(baseline, tmp_path, prefect_api):
    pytest.importorskip("outputs.exports", reason="outputs/exports.py (issue: exports) not there yet")
    from flows.tasks import export_reports

    inputs, db, _, _ = baseline
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        outcome = export_reports(
            AS_OF.isoformat(), ["csv", "emir-csv"], str(out), str(db), reporting_time="2025-03-14T19:00:00Z",
            allow_partial=True, inputs=str(inputs),  # book A has accounts with invalid LEIs on purpose
        )
        assert outcome["reporting_time"] == "2025-03-14T19:00:00+00:00"
        assert all(summary["written"] and summary["records"] > 0 for summary in outcome["formats"].values())
    written = sorted(path.relative_to(first) for path in first.rglob("*") if path.is_file())
    assert written and written == sorted(path.relative_to(second) for path in second.rglob("*") if path.is_file())
    for path in written:  # same warehouse, same reporting time: byte-identical files
        assert (first / path).read_bytes() == (second / path).read_bytes(), path


def test_today_is_the_scheduled_date_in_the_configured_time_zone():
    from zoneinfo import ZoneInfo

    from flows.eod import resolve_as_of

    assert resolve_as_of("2025-03-14") == AS_OF
    for zone in ("UTC", "Pacific/Kiritimati", "America/Los_Angeles"):  # UTC+14 and UTC-8: different dates half the day
        before = dt.datetime.now(ZoneInfo(zone)).date()
        today = resolve_as_of("today", zone)
        assert today in {before, dt.datetime.now(ZoneInfo(zone)).date()}


def test_orchestration_mode_follows_the_prefect_api_url(monkeypatch):
    from flows.eod import RunFailed, use_prefect

    assert not use_prefect("none")
    assert use_prefect("prefect")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert use_prefect("auto")
    monkeypatch.delenv("PREFECT_API_URL")
    monkeypatch.setenv("PREFECT_PROFILES_PATH", "/nonexistent/profiles.toml")
    assert not use_prefect("auto")
    with pytest.raises(RunFailed):
        use_prefect("sometimes")
