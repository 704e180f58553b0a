"""How soon every ``margin`` command answers (issue 15): a measurement script, not a test.

``uv run python -m benchmarks.command_times [--rounds 3] [--workdir data/bench/command_times]``

Each command runs as a fresh process (``.venv/bin/margin``, as a user types it) on a
pseudo-terminal, as in a shell; the script records when its first line appears and when
it exits. With no Prefect API configured (a fresh ``PREFECT_HOME`` under the work folder,
``PREFECT_API_URL`` and ``MARGIN_ORCHESTRATION`` removed from the environment):

- ``margin demo`` from a fresh data folder (first line, whole demo ≤ 15 s); its data
  folder then serves every other command;
- every command's first printed line (≤ 1 s);
- argument and input-location errors, answered before any Prefect start (≤ 2 s);
- ``margin run`` of a demo date without a server (≤ 4 s);
- ``margin server start``, ``margin run`` of the same date against it (≤ 6 s, a Prefect
  flow run), ``margin server stop``.

Each row is measured ``--rounds`` times (a fresh data folder per round for the demo);
the table shows the median and the slowest round against the target, and says pass or
fail by the median. Figures and the machine's load go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MARGIN = PROJECT_ROOT / ".venv" / "bin" / "margin"
DEMO_FIRST, DEMO_DAYS = "2026-11-16", 3
DEMO_LAST = "2026-11-18"
TERMINAL_CODES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")  # colours and cursor moves of rich


@dataclass
class Timing:
    first_line: float | None
    error_line: float | None  # the first `margin: error:` line
    total: float
    exit_code: int
    first_text: str


@dataclass
class Case:
    """One command line and the figure that has a target: ``first`` (its first line), ``error``
    (its ``margin: error:`` line) or ``total`` (its exit)."""

    group: str
    label: str
    args: list[str]
    measure: str
    target: float
    expect_exit: int | None = 0
    timings: list[Timing] = field(default_factory=list)

    def figure(self, timing: Timing) -> float:
        value = {"first": timing.first_line, "error": timing.error_line, "total": timing.total}[self.measure]
        return float("inf") if value is None else value


def run_on_terminal(args: list[str], env: dict[str, str], timeout: float = 300) -> Timing:
    """Run ``margin ARGS`` on a pseudo-terminal; seconds to its first non-blank line and to its exit."""
    leader, follower = pty.openpty()
    start = time.perf_counter()
    process = subprocess.Popen([str(MARGIN), *args], stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
                               env=env, cwd=env["BENCH_CWD"], close_fds=True)
    os.close(follower)
    buffer, first_line, error_line, first_text = b"", None, None, ""
    while True:
        ready, _, _ = select.select([leader], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process has exited
                chunk = b""
            if not chunk:
                break
            buffer += chunk
            lines = [line for line in TERMINAL_CODES.sub(b"", buffer).split(b"\n")[:-1] if line.strip()]
            if first_line is None and lines:
                first_line = time.perf_counter() - start
                first_text = lines[0].decode(errors="replace").strip()
            if error_line is None and any(b"margin: error:" in line for line in lines):
                error_line = time.perf_counter() - start
        elif process.poll() is not None:
            break
        if time.perf_counter() - start > timeout:
            process.kill()
            break
    exit_code = process.wait()
    total = time.perf_counter() - start
    os.close(leader)
    if first_line is None and buffer.strip():  # a single line without its newline
        first_line, first_text = total, TERMINAL_CODES.sub(b"", buffer).decode(errors="replace").strip().splitlines()[0]
    if error_line is None and b"margin: error:" in buffer:
        error_line = total
    return Timing(first_line, error_line, total, exit_code, first_text[:70])


def environment(work: Path, data: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("PREFECT_API_URL", "MARGIN_ORCHESTRATION", "MARGIN_DB", "MARGIN_INPUTS", "MARGIN_QUIET")}
    env.update({"MARGIN_DATA_DIR": str(data), "PREFECT_HOME": str(data / ".prefect"), "BENCH_CWD": str(work),
                "COLUMNS": "100", "LINES": "40", "TERM": "xterm"})
    return env


def cases(work: Path) -> list[Case]:
    trades = work / "trades.csv"
    out = work / "out"
    return [
        # every command's first printed line
        Case("first line ≤ 1 s", "margin --help", ["--help"], "first", 1.0),
        Case("first line ≤ 1 s", "margin run --date D (no server)", ["run", "--date", DEMO_LAST, "--no-summary"],
             "first", 1.0),
        Case("first line ≤ 1 s", "margin backfill (3 demo dates)", ["backfill", "--start", DEMO_FIRST, "--end", DEMO_LAST],
             "first", 1.0),
        Case("first line ≤ 1 s", "margin generate --accounts 200", ["generate", "--date", "2026-11-20", "--accounts",
                                                                   "200", "--out", str(work / "gen")], "first", 1.0),
        Case("first line ≤ 1 s", "margin publish --date D", ["publish", "--date", DEMO_LAST], "first", 1.0, None),
        Case("first line ≤ 1 s", "margin sql (v_account_today)",
             ["sql", "select binding_status, count(*) from v_account_today group by 1"], "first", 1.0),
        Case("first line ≤ 1 s", "margin whatif --date D --trades F",
             ["whatif", "--date", DEMO_LAST, "--trades", str(trades)], "first", 1.0),
        Case("first line ≤ 1 s", "margin report --date D", ["report", "--date", DEMO_LAST, "--out",
                                                            str(out / "report.html")], "first", 1.0),
        Case("first line ≤ 1 s", "margin explain --date D --account A",
             ["explain", "--date", DEMO_LAST, "--account", "ACC000972"], "first", 1.0),
        Case("first line ≤ 1 s", "margin export --format emir-csv",
             ["export", "--date", DEMO_LAST, "--format", "emir-csv", "--out", str(out), "--allow-partial"],
             "first", 1.0),
        Case("first line ≤ 1 s", "margin server status", ["server", "status"], "first", 1.0, None),
        Case("first line ≤ 1 s", "margin serve (no server)", ["serve"], "first", 1.0, 1),
        # argument and input-location errors
        Case("error ≤ 2 s", "run --date 2026-13-01 (bad date)", ["run", "--date", "2026-13-01"], "error", 2.0, 1),
        Case("error ≤ 2 s", "run --bogus (unknown option)", ["run", "--bogus"], "error", 2.0, 2),
        Case("error ≤ 2 s", "run --inputs /nonexistent", ["run", "--date", DEMO_LAST, "--inputs", "/nonexistent/in"],
             "error", 2.0, 1),
        Case("error ≤ 2 s", "run --date 2026-12-25 (no date folder)", ["run", "--date", "2026-12-25"], "error", 2.0, 1),
        Case("error ≤ 2 s", "backfill --inputs /nonexistent",
             ["backfill", "--start", DEMO_FIRST, "--end", DEMO_LAST, "--inputs", "/nonexistent/in"], "error", 2.0, 1),
        Case("error ≤ 2 s", "report --date 2026-12-25 (no results)", ["report", "--date", "2026-12-25"], "error", 2.0,
             1),
        Case("error ≤ 2 s", "sql with a misspelled column", ["sql", "select binding_statu from v_account_today"],
             "error", 2.0, 1),
        # whole runs
        Case("run", "margin run --date D, no server (≤ 4 s)", ["run", "--date", DEMO_LAST, "--no-summary"], "total",
             4.0),
    ]


def write_trades(path: Path) -> None:
    path.write_text("account_id,instrument_id,quantity\nACC000972,BTC-PERP,-1\n", encoding="utf-8")


def measure(rounds: int, work: Path, port: int) -> tuple[list[Case], list[Case]]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    write_trades(work / "trades.csv")
    demo = [Case("demo", "margin demo, fresh data folder: first line", ["demo"], "first", 1.0),
            Case("demo", "margin demo, fresh data folder: whole (≤ 15 s)", ["demo"], "total", 15.0)]
    data = work / "data"
    for round_ in range(rounds):
        shutil.rmtree(data, ignore_errors=True)
        timing = run_on_terminal(["demo"], environment(work, data))
        if timing.exit_code != 0:
            sys.exit(f"margin demo failed (exit {timing.exit_code}); see a manual run")
        for case in demo:
            case.timings.append(timing)
        print(f"round {round_ + 1}: demo {timing.total:.2f} s", file=sys.stderr)
    env = environment(work, data)
    table = cases(work)
    for round_ in range(rounds):
        for case in table:
            timing = run_on_terminal(case.args, env)
            if case.expect_exit is not None and timing.exit_code != case.expect_exit:
                print(f"  note: {case.label} exited {timing.exit_code} (expected {case.expect_exit}): "
                      f"{timing.first_text}", file=sys.stderr)
            case.timings.append(timing)
        print(f"round {round_ + 1}: commands done", file=sys.stderr)
    server = [Case("server", "margin server start", ["server", "start", "--port", str(port)], "total", float("inf")),
              Case("server", "margin run --date D against the server (≤ 6 s)",
                   ["run", "--date", DEMO_LAST, "--no-summary"], "total", 6.0),
              Case("server", "margin server stop", ["server", "stop"], "total", float("inf"))]
    start, run_, stop = server
    started = run_on_terminal(start.args, env)
    start.timings.append(started)
    if started.exit_code != 0:
        print(f"  note: margin server start failed: {started.first_text}", file=sys.stderr)
    else:
        for _ in range(rounds):
            run_.timings.append(run_on_terminal(run_.args, env))
    stop.timings.append(run_on_terminal(stop.args, env))
    return demo + table, server


def row(case: Case) -> str:
    figures = [case.figure(t) for t in case.timings]
    if not figures:
        return f"| {case.group} | `{case.label}` | – | – | – | not measured |"
    median, slowest = statistics.median(figures), max(figures)
    target = "–" if case.target == float("inf") else f"{case.target:g}"
    verdict = "–" if case.target == float("inf") else ("pass" if median <= case.target else "FAIL")
    what = {"first": "first line", "error": "error line", "total": "exit"}[case.measure]
    exit_median = statistics.median(t.total for t in case.timings)
    first = case.timings[0].first_text.replace("|", "\\|")
    return (f"| {case.group} | `{case.label}` | {what} | {median:.2f} | {slowest:.2f} | {target} | {verdict} "
            f"| {exit_median:.2f} | {first} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="measurements per command (median shown)")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "data" / "bench" / "command_times")
    parser.add_argument("--port", type=int, default=4200, help="loopback port of `margin server start`")
    options = parser.parse_args()
    if not MARGIN.exists():
        sys.exit(f"{MARGIN} is missing: run `uv sync --locked` first")
    load = os.getloadavg()
    measured, server = measure(options.rounds, options.workdir, options.port)
    print(f"Load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; after: "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f"; {os.cpu_count()} cores; rounds: {options.rounds}\n")
    print("| group | command | until | median s | slowest s | target s | median vs target | exit s (median) "
          "| first line |")
    print("|---|---|---|---:|---:|---:|---|---:|---|")
    for case in measured + server:
        print(row(case))


if __name__ == "__main__":
    main()
