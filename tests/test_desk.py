"""The risk desk's day without stumbles (issue 15): commands answer at once and say how
they run, Prefect only when a server is configured (``margin server start``), views that
mean "today", DuckDB's hints kept, help texts whole, backfill's skipped dates named,
console tables that fit 80 columns, the EMIR outcome of the demo book said up front.

Timings are measured by ``benchmarks/command_times.py``, not here.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import duckdb
import pytest
import typer.main
from rich.console import Console

from conftest import EXAMPLES, PROJECT_ROOT, margin_cli
from flows import eod
from flows.cli import app
from market.generate import generate_book
from outputs.report import report_data
from outputs.sql_console import run_query
from outputs.summary import day_summary, print_day_summary

FIRST_DAY = dt.date(2026, 11, 16)
DAYS = 3
BOOK_A = EXAMPLES / "book_a_12_accounts" / "inputs"
UNREACHABLE_API = "http://127.0.0.1:9/api"  # the discard port: nothing answers


def no_prefect_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A command's environment with no Prefect API configured (a fresh, empty Prefect home)."""
    env = {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_URL", "MARGIN_ORCHESTRATION")}
    env.update({"PREFECT_HOME": str(tmp_path / "prefect-home"), "MARGIN_DATA_DIR": str(tmp_path / "data"),
                "MARGIN_QUIET": "0", **extra})
    return env


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def three_days(tmp_path_factory) -> tuple[Path, Path]:
    """A generated book of three published days (run without Prefect): (db, inputs)."""
    root = tmp_path_factory.mktemp("three-days")
    inputs, db = root / "inputs", root / "warehouse.duckdb"
    generate_book(inputs, FIRST_DAY, DAYS, 150, seed=11)
    for offset in range(DAYS):
        eod.run_end_of_day(FIRST_DAY + dt.timedelta(days=offset), inputs, db, use_tasks=False)
    return db, inputs


LAST_DAY = FIRST_DAY + dt.timedelta(days=DAYS - 1)


# --- 1. instant feedback, errors before any Prefect start ----------------------------------


@pytest.mark.parametrize("args, message", [
    (("--date", "2026-02-30"), "--date '2026-02-30' is not a date"),
    (("--date", "2025-03-20", "--inputs", str(BOOK_A)), "no inputs for 2025-03-20"),
    (("--date", "2025-03-14", "--inputs", "/nonexistent/inputs"), "--inputs /nonexistent/inputs is not a folder"),
])
def test_input_location_errors_come_before_any_prefect_start(tmp_path, args, message):
    """Even with Prefect forced and its API unreachable, the operator's mistake is the one line."""
    env = no_prefect_env(tmp_path, PREFECT_API_URL=UNREACHABLE_API, MARGIN_ORCHESTRATION="prefect")
    result = cli("run", *args, "--db", str(tmp_path / "w.duckdb"), env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"margin: error: {message}"), result.stderr
    assert "Traceback" not in result.stderr and "prefect" not in result.stderr.lower()


def test_commands_that_do_not_run_flows_never_import_prefect():
    code = ("import sys, flows.cli, flows.orchestration, outputs.summary, outputs.sql_console, outputs.report, "
            "outputs.exports; print('prefect' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


# --- 2. orchestration: Prefect when configured, otherwise the same code directly --------------


def test_without_a_prefect_api_run_goes_direct_and_says_how_to_get_prefect(tmp_path):
    db = tmp_path / "w.duckdb"
    result = cli("run", "--date", "2025-03-14", "--inputs", str(BOOK_A), "--db", str(db), "--no-summary",
                 env=no_prefect_env(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("margin run 2025-03-14:")  # the first line says what runs, at once
    notes = [line for line in lines if "margin server start" in line]
    assert len(notes) == 1 and "without Prefect" in notes[0]
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.sql("SELECT status FROM runs").fetchall() == [("succeeded",)]


def test_orchestration_modes(tmp_path, monkeypatch):
    from flows import orchestration

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("MARGIN_ORCHESTRATION", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    assert orchestration.resolve().use_prefect is False  # auto, nothing configured
    assert "margin server start" in orchestration.resolve().note
    assert orchestration.resolve("prefect").use_prefect is True
    assert orchestration.resolve("none").use_prefect is False
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert orchestration.resolve().use_prefect is True and orchestration.resolve("none").use_prefect is False
    with pytest.raises(orchestration.OrchestrationError, match="use auto, prefect or none"):
        orchestration.resolve("sometimes")


def test_a_recorded_server_that_died_is_not_used(tmp_path, monkeypatch):
    """auto: a URL recorded by `margin server start` whose process is gone → run directly, saying why."""
    from flows import orchestration

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    url = "http://127.0.0.1:4999/api"
    orchestration._record_url(url)
    orchestration._write_pid_file(orchestration.ServerState(gone.pid, url, "2026-11-30T18:00:00+00:00", None))
    assert orchestration.configured_prefect_api_url() == url
    choice = orchestration.resolve("auto")
    assert choice.use_prefect is False and "is not running" in choice.note


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_start_status_stop_and_runs_become_flow_runs(tmp_path):
    env = no_prefect_env(tmp_path)
    home = Path(env["PREFECT_HOME"])
    assert cli("server", "status", env=env).returncode == 1
    started = cli("server", "start", "--port", str(_free_port()), env=env, timeout=240)
    try:
        assert started.returncode == 0, started.stderr + started.stdout
        url = re.search(r"running at (http://127\.0\.0\.1:\d+/api)", started.stdout).group(1)
        profiles = tomllib.loads((home / "profiles.toml").read_text())
        assert profiles["profiles"][profiles["active"]]["PREFECT_API_URL"] == url
        status = cli("server", "status", env=env)
        assert status.returncode == 0 and "healthy" in status.stdout
        again = cli("server", "start", env=env)  # idempotent: says so, starts nothing
        assert again.returncode == 0 and "already running" in again.stderr
        run = cli("run", "--date", "2025-03-14", "--inputs", str(BOOK_A), "--db", str(tmp_path / "w.duckdb"),
                  "--no-summary", env=env, timeout=240)
        assert run.returncode == 0, run.stderr
        assert f"Prefect flow run on {url}" in run.stderr and "margin server start" not in run.stderr
    finally:
        stopped = cli("server", "stop", env=env, timeout=60)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert cli("server", "status", env=env).returncode == 1
    profiles = tomllib.loads((home / "profiles.toml").read_text())
    assert all("PREFECT_API_URL" not in settings for settings in profiles.get("profiles", {}).values())


def test_serve_requires_a_server_and_says_so(tmp_path):
    try:
        result = cli("serve", env=no_prefect_env(tmp_path), timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("margin serve started serving without a Prefect server")
    assert result.returncode == 1
    assert "margin serve needs a Prefect server: run `margin server start` first" in result.stderr


# --- 3. views that mean "today" ---------------------------------------------------------------


def test_today_views_hold_the_latest_date_only(three_days):
    db, _ = three_days
    dates = run_query(db, "SELECT DISTINCT as_of_date FROM account_margin ORDER BY 1")["as_of_date"].to_list()
    assert dates == [FIRST_DAY + dt.timedelta(days=n) for n in range(DAYS)]
    today = run_query(db, "SELECT DISTINCT as_of_date FROM v_account_today")["as_of_date"].to_list()
    assert today == [LAST_DAY]
    calls = run_query(db, "SELECT * FROM v_margin_calls_today")
    assert set(calls["as_of_date"]) == {LAST_DAY} and calls["account_id"].is_unique().all()
    expected = run_query(db, f"SELECT count(*) AS n FROM account_margin WHERE as_of_date = '{LAST_DAY}' "
                             "AND binding_status <> 'ok'")["n"][0]
    assert calls.height == expected > 0


def test_shortfall_to_im_usd_is_the_positive_part_of_minus_excess(three_days):
    db, _ = three_days
    for view in ("v_account_today", "v_account_latest"):
        wrong = run_query(db, f"SELECT count(*) AS n FROM {view} WHERE shortfall_to_im_usd <> greatest(-excess, 0) "
                              "OR shortfall_to_im_usd < 0")["n"][0]
        assert wrong == 0
    # v_margin_calls.deficit keeps its meaning, and is the same figure
    calls = run_query(db, "SELECT * FROM v_margin_calls")
    assert (calls["deficit"] - (calls["im"] - calls["equity"]).clip(lower_bound=0)).abs().max() < 1e-6
    assert (calls["deficit"] == calls["shortfall_to_im_usd"]).all()


def test_margin_calls_follow_binding_status_and_why_matches_it(three_days):
    db, _ = three_days
    calls = run_query(db, "SELECT * FROM v_margin_calls")
    assert (calls["binding_status"] != "ok").all()
    covered = run_query(db, "SELECT count(*) AS n FROM account_margin WHERE status <> 'ok' AND binding_status = 'ok'")
    assert covered["n"][0] > 0  # the generated book has members whose group covers them: none is listed
    for row in calls.iter_rows(named=True):
        if row["binding_level"] == "group":
            assert row["why"].startswith(f"margin group {row['margin_group']} is {row['binding_status']}: ")
            assert "own book: " in row["why"]
        else:
            assert row["status"] == row["binding_status"]
            assert "equity" in row["why"] and "ok" != row["why"]


def readme_queries() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    return re.findall(r'^uv run margin sql "([^"]+)"', text, re.M)


def test_readme_queries_are_right_with_several_published_days(three_days):
    """Each example query of the README, against three published days: an account appears once
    unless the query shows the date, and counts of "today" add up to the latest date's accounts."""
    db, _ = three_days
    queries = readme_queries()
    assert len(queries) >= 4
    accounts_today = run_query(db, f"SELECT count(*) AS n FROM account_margin WHERE as_of_date = '{LAST_DAY}'")["n"][0]
    for query in queries:
        frame = run_query(db, query)
        assert frame.height > 0, query
        if "account_id" in frame.columns and "as_of_date" not in frame.columns:
            assert frame["account_id"].is_unique().all(), f"accounts of several days mixed: {query}"
        if "as_of_date" in frame.columns and "account_id" in frame.columns:
            assert frame.select("as_of_date", "account_id").is_unique().all(), query
        count_columns = [c for c in frame.columns if c in ("accounts", "count_star()")]
        if count_columns and "as_of_date" not in frame.columns:
            assert frame[count_columns[0]].sum() == accounts_today, f"not one day's accounts: {query}"


def test_console_not_ok_count_agrees_with_the_report(three_days):
    db, _ = three_days
    summary = day_summary(db, LAST_DAY)
    statuses = summary.filter(summary["section"] == "accounts by binding status")
    by_status = dict(zip(statuses["label"], statuses["value"]))
    not_ok = sum(v for k, v in by_status.items() if k in ("margin_call", "liquidation", "deficit"))
    assert not_ok == report_data(db, LAST_DAY)["headline"]["accounts_not_ok"][0]
    own_not_ok = run_query(db, f"SELECT count(*) AS n FROM account_margin WHERE as_of_date = '{LAST_DAY}' "
                               "AND status <> 'ok'")["n"][0]
    # the own-status count differs, and the summary says by how much and why
    differences = {k: v for k, v in by_status.items() if k.startswith("own status")}
    assert own_not_ok == not_ok + differences.get("own status not ok, covered by its margin group", 0) \
        - differences.get("own status ok, its margin group not ok", 0)


def test_console_tables_fit_80_columns_and_round_consistently(three_days):
    db, _ = three_days
    console = Console(file=io.StringIO(), width=80, record=True)
    print_day_summary(db, LAST_DAY, console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in text  # no value or header cut
    assert "Largest shortfalls to initial margin" in text
    numbers = re.findall(r"(?<![\w-])-?\d[\d,]*(?:\.\d+)?(?![\w-])", text)
    assert numbers and not [n for n in numbers if "." in n]  # whole units everywhere
    # every row of a table is one line: the five accounts are on five lines
    assert sum(1 for line in lines if re.match(r"\s*ACC\d+", line)) == 5


# --- 4. margin sql keeps DuckDB's hints -------------------------------------------------------


def test_sql_keeps_duckdb_hints_under_its_one_line_error(three_days):
    db, _ = three_days
    column = margin_cli("sql", "select acount_id from account_margin", "--db", str(db))
    assert column.returncode == 1
    lines = column.stderr.strip().splitlines()
    assert lines[0].startswith("margin: error: Binder Error: Referenced column \"acount_id\" not found")
    assert lines[1].strip().startswith("Candidate bindings:") and '"account_id"' in lines[1]
    table = margin_cli("sql", "select * from account_margn", "--db", str(db))
    assert table.stderr.strip().splitlines()[1].strip() == 'Did you mean "account_margin"?'


# --- 6. help texts, backfill, demo --------------------------------------------------------------


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def test_help_texts_show_their_placeholders():
    """Every <PLACEHOLDER> or [bracketed] part of a help text survives the help renderer."""
    checked = 0
    for path, command in _commands(typer.main.get_command(app)):
        texts = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
        tokens = {t for text in texts for t in re.findall(r"<[^<>\s]+>|\[[^\[\]\s]+\]", text)}
        if not tokens and not any(re.search(r"default: \S", text) for text in texts):
            continue
        result = subprocess.run([sys.executable, "-m", "flows.cli", *path, "--help"], cwd=PROJECT_ROOT,
                                capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"})
        rendered = " ".join(result.stdout.split())
        for token in tokens:
            assert token in rendered, f"margin {' '.join(path)} --help lost {token}"
        for text in texts:  # a default spelled out in the help is shown whole
            for default in re.findall(r"default: ([^\s),;]+)", text):
                assert default in rendered, f"margin {' '.join(path)} --help lost the default {default}"
        checked += 1
    assert checked >= 3


def test_backfill_lists_the_dates_it_skipped_and_why(tmp_path, example_inputs):
    inputs = example_inputs("book_a_12_accounts")
    result = cli("backfill", "--start", "2025-03-12", "--end", "2025-03-16", "--inputs", str(inputs),
                 "--db", str(tmp_path / "w.duckdb"), env=no_prefect_env(tmp_path), timeout=180)
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stdout.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1
    assert f"no date=D folder under {inputs}" in skipped[0]
    for day in ("2025-03-12 Wed", "2025-03-13 Thu", "2025-03-15 Sat", "2025-03-16 Sun"):
        assert day in skipped[0]
    assert "2025-03-14" not in skipped[0]
    assert "succeeded: 1  failed: 0  skipped (no inputs): 4" in result.stdout


def test_demo_without_prefect_prints_progress_and_says_what_the_emir_export_rejects(tmp_path):
    data = tmp_path / "data"
    result = cli("demo", "--accounts", "300", "--days", "2", env=no_prefect_env(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    progress = result.stderr.splitlines()
    assert progress[0].startswith("generating 2 day(s)")
    assert any("margin server start" in line for line in progress)
    assert sum("published run" in line for line in progress) == 2
    assert re.search(r"EMIR export of 2026-11-17: \d+ of [\d,]+ records will be rejected", result.stdout)
    assert "invalid LEI on purpose" in result.stdout and "--allow-partial" in result.stdout
    assert (data / "warehouse.duckdb").exists()
    export = cli("export", "--date", "2026-11-17", "--format", "emir-csv", "--out", str(tmp_path / "exports"),
                 env=no_prefect_env(tmp_path), timeout=120)
    promised = int(re.search(r"(\d+) of [\d,]+ records will be rejected", result.stdout).group(1))
    assert export.returncode == 1 and export.stderr.count("rejected ACC") == promised
