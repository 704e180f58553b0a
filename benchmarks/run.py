"""Benchmark the end-of-day run against two netting-only floors, at exchange sizes.

    uv run python -m benchmarks.run                       # 1M and 10M position rows
    uv run python -m benchmarks.run --sizes 1M            # quick (about a minute)
    uv run python -m benchmarks.run --sizes 10M,100M      # 100M: needs ~24 GB and a long while

For each size the harness generates a book with the project's generator
(``market.generate.generate_day``, ≈10 position rows per account, a third of them
options, 1–3 sources per leg; 100M is the 10M book tiled ×10 with renamed accounts and
groups) and caches it under ``data/bench/`` (git-ignored).  Every measurement runs in a
fresh subprocess, so its peak RSS (``ru_maxrss`` from ``wait4``) is its own:

- ``full``      the production path (``run_end_of_day``: load, one ``collect_all``,
                identity checks, Parquet save, DuckDB publish), median of ``--repeat``;
- ``profile``   the production ``compute_margin`` with each shared intermediate it
                collects timed and attributed to its stage (validate, net, value,
                portfolio margin, collateral, accounts, groups; ``outputs`` = the
                final collect) — where the time goes;
- ``floors``    the netting-only pipeline in Polars streaming and in DuckDB SQL on the
                same files, median of ``--repeat``;
- ``versus``    ``margin run`` (whole process) against the SQL yardstick
                (``benchmarks.sql_method``), alternating rounds, like for like on the
                book without its stress table; the run with the stresses beside it
                (``--versus-only`` runs only this; README, "Against the analyst's SQL").

It prints one table (sizes as columns) with the ratios full/floor, and writes the raw
numbers to ``data/bench/results-<timestamp>.json``.  ``--markdown`` prints the table
as Markdown for docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.measure import resident_gb

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = PROJECT_ROOT / "data" / "bench"
AS_OF = dt.date(2026, 11, 16)
ROWS_PER_ACCOUNT = 10
PROFILE_STAGES = ("load", "validate", "net", "value", "portfolio_margin", "collateral", "accounts", "groups", "outputs",
                  "other")


def parse_size(text: str) -> int:
    """``1M`` → 1_000_000 position rows (``k``, ``M`` suffixes; plain integers too)."""
    text = text.strip().upper()
    factor = {"K": 1_000, "M": 1_000_000}.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in ("K", "M") else text
    return int(float(number) * factor)


def size_label(rows: int) -> str:
    return f"{rows // 1_000_000}M" if rows % 1_000_000 == 0 else f"{rows // 1_000}k"


def run_child(kind: str, inputs: Path, workdir: Path, *extra: str) -> dict:
    """Run one ``benchmarks.measure`` in a fresh process; adds its ``peak_rss_gb`` and ``wall``."""
    (workdir / "data").mkdir(parents=True, exist_ok=True)  # MARGIN_DATA_DIR: Prefect home, nothing else
    log = open(workdir / f"{kind}.log", "ab")
    env = {**os.environ, "MARGIN_QUIET": "1", "MARGIN_DATA_DIR": str(workdir / "data")}
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.measure", kind, str(inputs), AS_OF.isoformat(), str(workdir), *extra],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=log,
    )
    stopped = threading.Event()
    watchdog = threading.Thread(target=_memory_watchdog, args=(process, stopped), daemon=True)
    watchdog.start()
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    stopped.set()
    process.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    if process.returncode != 0:
        why = f"; stopped by the memory watchdog above {RSS_LIMIT_GB} GB" if getattr(process, "over_limit", False) else ""
        raise SystemExit(f"benchmarks: {kind} on {inputs} failed (exit {process.returncode}{why}); see {log.name}")
    result = json.loads(output.decode().strip().splitlines()[-1])
    result["peak_rss_gb"] = round(usage.ru_maxrss / 1024 / 1024, 3)  # ru_maxrss is in KiB on Linux
    return result


#: A measurement whose resident memory passes this is killed (the machine has 24 GB, no swap).
RSS_LIMIT_GB = float(os.environ.get("BENCH_RSS_LIMIT_GB", "22"))


def _memory_watchdog(process: subprocess.Popen, stopped: threading.Event) -> None:
    """Kill ``process`` if its resident set passes ``RSS_LIMIT_GB`` (checked every 0.5 s)."""
    while not stopped.wait(0.5):
        try:
            rss_gb = resident_gb(process.pid)
        except (OSError, StopIteration, ValueError):
            return
        if rss_gb > RSS_LIMIT_GB:
            process.over_limit = True
            process.kill()
            return


def ensure_book(rows: int) -> Path:
    """The cached synthetic book for ``rows`` position rows, generated on first use."""
    accounts = rows // ROWS_PER_ACCOUNT
    inputs = BENCH_DIR / f"accounts_{accounts}"
    marker = inputs / f".complete-{AS_OF.isoformat()}"
    if marker.exists():
        return inputs
    if rows > 10_000_000 and rows % 10_000_000 == 0:
        source = ensure_book(10_000_000)
        tiles = rows // 10_000_000
        print(f"  tiling the 10M book ×{tiles} into {inputs} …", file=sys.stderr, flush=True)
        run_child("generate", inputs, BENCH_DIR / "work", "--tile-from", str(source), "--tiles", str(tiles))
    else:
        print(f"  generating {accounts:,} accounts into {inputs} …", file=sys.stderr, flush=True)
        run_child("generate", inputs, BENCH_DIR / "work", "--accounts", str(accounts))
    marker.touch()
    return inputs


def median_run(kind: str, inputs: Path, workdir: Path, repeat: int, *extra: str) -> dict:
    runs = [run_child(kind, inputs, workdir, *extra) for _ in range(repeat)]
    totals = [r["timings"]["total"] for r in runs]
    best = runs[totals.index(sorted(totals)[len(totals) // 2])]
    best["all_totals"] = totals
    best["peak_rss_gb"] = max(r["peak_rss_gb"] for r in runs)
    return best


def run_process(command: list[str], env: dict) -> tuple[float, float]:
    """Run ``command`` to its end; (wall seconds, peak RSS GB of the process from ``wait4``)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    stopped = threading.Event()
    threading.Thread(target=_memory_watchdog, args=(process, stopped), daemon=True).start()
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    stopped.set()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmarks: {' '.join(command)} failed:\n{errors.decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024 / 1024


def engine_publishes_worst_scenario_loss() -> bool:
    return "worst_scenario_loss" in (PROJECT_ROOT / "sql" / "schema.sql").read_text()


STRESS_FILE = "stress_scenarios.parquet"


def without_stress(inputs: Path) -> Path:
    """A view of the book ``inputs`` without its stress table (SPEC §11): the same files,
    linked, except ``reference/stress_scenarios.parquet``.  The SQL method has no stress
    step, so the like-for-like ``margin run`` reads this view; the book as it is (with
    its stresses) is timed beside it."""
    overriding = sorted(str(f) for f in inputs.glob(f"date=*/{STRESS_FILE}"))
    if overriding:  # a per-day stress table would still be read through the linked date folder
        raise SystemExit(f"benchmarks: {', '.join(overriding)}: a per-day stress table; the like-for-like view "
                         "links the date folders whole")
    view = inputs.with_name(inputs.name + ".no-stress")
    (view / "reference").mkdir(parents=True, exist_ok=True)
    for item in inputs.iterdir():
        if item.name.startswith("."):
            continue
        if item.name == "reference":
            for file in item.iterdir():
                link = view / "reference" / file.name
                if file.name != STRESS_FILE and not link.exists():
                    link.symlink_to(file.resolve())
        elif not (view / item.name).exists():
            (view / item.name).symlink_to(item.resolve())
    return view


def measure_versus(inputs: Path, workdir: Path, repeat: int, prefect_api: str | None) -> dict:
    """``margin run`` (whole process, no Prefect; published into a fresh warehouse) against
    the SQL yardstick (``benchmarks.sql_method``, whole process, into a fresh DuckDB file),
    alternating A B A B … ``repeat`` times, like for like: ``margin run`` reads the book
    without its stress table (``without_stress``), as the yardstick has no stress step.
    When the book has a stress table, ``margin run`` of the book as it is joins each
    round (``margin_run_stress``); with ``prefect_api``, ``margin run`` through the
    Prefect server at that URL (on the like-for-like book) does too."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    env = {**os.environ, "MARGIN_QUIET": "1", "MARGIN_DATA_DIR": str(workdir / "data")}
    warehouse = workdir / "versus.duckdb"
    yardstick = workdir / "sql_method.duckdb"
    def margin_run(book: Path) -> list[str]:
        return [sys.executable, "-m", "flows.cli", "run", "--date", AS_OF.isoformat(), "--inputs", str(book),
                "--db", str(warehouse), "--no-summary"]

    like_for_like = without_stress(inputs)
    sql_method = [sys.executable, "-m", "benchmarks.sql_method", str(inputs), AS_OF.isoformat(), str(yardstick)]
    if not engine_publishes_worst_scenario_loss():
        sql_method.append("--no-worst-scenario-loss")
    commands = {
        "margin_run": (margin_run(like_for_like), {**env, "MARGIN_ORCHESTRATION": "none"}),
        "sql_method": (sql_method, env),
    }
    if (inputs / "reference" / STRESS_FILE).exists():
        commands["margin_run_stress"] = (margin_run(inputs), {**env, "MARGIN_ORCHESTRATION": "none"})
    if prefect_api:
        commands["margin_run_prefect"] = (margin_run(like_for_like), {**env, "MARGIN_ORCHESTRATION": "prefect",
                                                                      "PREFECT_API_URL": prefect_api})
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, (command, command_env) in commands.items():
            for stale in workdir.glob("versus.duckdb*"):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
            runs[name].append(run_process(command, command_env))
    out = {name: {"seconds": [round(w, 3) for w, _ in r], "peak_rss_gb": [round(m, 3) for _, m in r],
                  "median_seconds": statistics.median(w for w, _ in r),
                  "max_peak_rss_gb": max(m for _, m in r)} for name, r in runs.items()}
    pairs = [a / b for (a, _), (b, _) in zip(runs["margin_run"], runs["sql_method"])]
    out["ratio_pairs"] = [round(x, 3) for x in pairs]
    out["ratio_median"] = statistics.median(pairs)
    if prefect_api:
        extra = [a - b for (a, _), (b, _) in zip(runs["margin_run_prefect"], runs["margin_run"])]
        out["prefect_extra_seconds_median"] = statistics.median(extra)
    if "margin_run_stress" in runs:
        with_stress = [a / b for (a, _), (b, _) in zip(runs["margin_run_stress"], runs["margin_run"])]
        out["stress_ratio_median"] = statistics.median(with_stress)
    return out


#: Above this many rows the whole-book run cannot fit in 24 GB: only floors and the partitioned run.
IN_MEMORY_LIMIT_ROWS = 10_000_000
#: ``--partitions auto``: one partition per this many position rows (≈1.5 GB peak each).
ROWS_PER_PARTITION = 2_500_000


def partition_count(option: str, rows: int) -> int:
    """``--partitions``: a number, ``auto`` (from 10M rows on, one partition per
    ``ROWS_PER_PARTITION`` rows: the same partition size at 10M and 100M, so the two
    runs show how time grows with the day), or 0 (skip)."""
    if option != "auto":
        return int(option)
    return max(2, -(-rows // ROWS_PER_PARTITION)) if rows >= 10_000_000 else 0


def position_rows(inputs: Path) -> int:
    """Rows of the benchmark day's positions file (from the Parquet footer)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(inputs / f"date={AS_OF.isoformat()}" / "positions.parquet").metadata.num_rows


def measure_size(rows: int, repeat: int, profile: bool, partitions: int, versus: bool = True,
                 versus_only: bool = False, prefect_api: str | None = None) -> dict:
    inputs = ensure_book(rows)
    workdir = BENCH_DIR / "work" / size_label(rows)
    say = lambda text: print(f"  {size_label(rows)}: {text}", file=sys.stderr, flush=True)  # noqa: E731
    if versus_only:
        say(f"margin run against the SQL method, {max(repeat, 3)} alternating rounds …")
        return {"rows": position_rows(inputs), "inputs": str(inputs),
                "versus": measure_versus(inputs, workdir, max(repeat, 3), prefect_api)}
    say("Polars floor …")
    floor_pl = median_run("floor-polars", inputs, workdir, repeat)
    say("DuckDB floor …")
    floor_db = median_run("floor-duckdb", inputs, workdir, repeat)
    result = {"rows": position_rows(inputs), "inputs": str(inputs), "floor_polars": floor_pl, "floor_duckdb": floor_db}
    if rows <= IN_MEMORY_LIMIT_ROWS:
        say("full run …")
        result["full"] = median_run("full", inputs, workdir, repeat)
        if profile:
            say("stage profile …")
            result["profile"] = run_child("profile", inputs, workdir)
    else:
        say(f"whole-book run skipped above {IN_MEMORY_LIMIT_ROWS:,} rows (partitioned only)")
    if versus:
        say(f"margin run against the SQL method, {max(repeat, 3)} alternating rounds …")
        result["versus"] = measure_versus(inputs, workdir, max(repeat, 3), prefect_api)
    if partitions:
        say(f"partitioned run ({partitions} partitions) …")
        result["partitioned"] = median_run("partitioned", inputs, workdir, repeat, "--partitions", str(partitions))
    return result


def table_rows(results: dict[str, dict]) -> list[tuple[str, list[str]]]:
    """(metric, one cell per size) rows of the printed table."""
    def cell(value, fmt="{:.2f}"):
        return "–" if value is None else fmt.format(value)

    rows: list[tuple[str, list[str]]] = []
    sizes = list(results)
    rows.append(("position rows", [f"{results[s]['rows']:,}" for s in sizes]))
    if any("versus" in results[s] for s in sizes):
        versus = {s: results[s].get("versus") for s in sizes}
        figure = lambda s, f: f(versus[s]) if versus[s] else None  # noqa: E731
        rows += [
            ("margin run, end to end, no Prefect (s, median)", [cell(figure(s, lambda v: v["margin_run"]["median_seconds"])) for s in sizes]),
            ("SQL method, end to end (s, median)", [cell(figure(s, lambda v: v["sql_method"]["median_seconds"])) for s in sizes]),
            ("ratio margin run / SQL method (median of pairs; bar < 1, goal ≤ 0.5)",
             [cell(figure(s, lambda v: v["ratio_median"])) for s in sizes]),
            ("ratio per round", [" ".join(f"{x:.2f}" for x in versus[s]["ratio_pairs"]) if versus[s] else "–" for s in sizes]),
            ("margin run peak RSS (GB)", [cell(figure(s, lambda v: v["margin_run"]["max_peak_rss_gb"])) for s in sizes]),
            ("SQL method peak RSS (GB)", [cell(figure(s, lambda v: v["sql_method"]["max_peak_rss_gb"])) for s in sizes]),
        ]
        if any(v and "margin_run_stress" in v for v in versus.values()):
            rows += [
                ("margin run with the book's stress table (s, median; beside, not compared)",
                 [cell(figure(s, lambda v: v.get("margin_run_stress", {}).get("median_seconds"))) for s in sizes]),
                ("with stresses / without (median of pairs)",
                 [cell(figure(s, lambda v: v.get("stress_ratio_median"))) for s in sizes]),
                ("margin run with stresses, peak RSS (GB)",
                 [cell(figure(s, lambda v: v.get("margin_run_stress", {}).get("max_peak_rss_gb"))) for s in sizes]),
            ]
        if any(v and "margin_run_prefect" in v for v in versus.values()):
            rows += [
                ("margin run through a running Prefect server (s, median)",
                 [cell(figure(s, lambda v: v.get("margin_run_prefect", {}).get("median_seconds"))) for s in sizes]),
                ("Prefect's extra seconds (median of pairs; goal ≤ 2)",
                 [cell(figure(s, lambda v: v.get("prefect_extra_seconds_median"))) for s in sizes]),
            ]
    if all("floor_polars" not in results[s] for s in sizes):
        return rows
    for stage in PROFILE_STAGES:
        rows.append((f"profile: {stage} (s)",
                     [cell(results[s].get("profile", {}).get("timings", {}).get(stage)) for s in sizes]))
    full = {s: results[s].get("full", {}).get("timings") for s in sizes}
    floor_pl = {s: results[s]["floor_polars"]["timings"]["total"] for s in sizes}
    floor_db = {s: results[s]["floor_duckdb"]["timings"]["total"] for s in sizes}

    def of_full(figure):  # a cell per size; "–" where the whole-book run was skipped
        return [cell(figure(s, full[s]) if full[s] else None) for s in sizes]

    ready = lambda s, f: f["load"] + f["compute"] + f.get("check", 0.0)  # noqa: E731
    rows += [
        ("full: load (s)", of_full(lambda s, f: f["load"])),
        ("full: compute, one collect_all (s)", of_full(lambda s, f: f["compute"])),
        ("full: identity checks (s)", of_full(lambda s, f: f.get("check"))),
        ("full: publish-ready = load+compute+check (s)", of_full(ready)),
        ("full: save Parquet (s)", of_full(lambda s, f: f.get("save"))),
        ("full: publish DuckDB (s)", of_full(lambda s, f: f.get("publish"))),
        ("full: end to end (s)", of_full(lambda s, f: f["total"])),
        ("full: peak RSS (GB)", of_full(lambda s, f: results[s]["full"]["peak_rss_gb"])),
        ("full: rows per second, end to end",
         [f"{results[s]['rows'] / full[s]['total']:,.0f}" if full[s] else "–" for s in sizes]),
        ("floor Polars streaming (s)", [cell(floor_pl[s]) for s in sizes]),
        ("floor Polars peak RSS (GB)", [cell(results[s]["floor_polars"]["peak_rss_gb"]) for s in sizes]),
        ("floor DuckDB SQL (s)", [cell(floor_db[s]) for s in sizes]),
        ("floor DuckDB peak RSS (GB)", [cell(results[s]["floor_duckdb"]["peak_rss_gb"]) for s in sizes]),
        ("ratio publish-ready / Polars floor (target ≤ 3)", of_full(lambda s, f: ready(s, f) / floor_pl[s])),
        ("ratio end to end / Polars floor (target ≤ 5)", of_full(lambda s, f: f["total"] / floor_pl[s])),
        ("ratio publish-ready / DuckDB floor", of_full(lambda s, f: ready(s, f) / floor_db[s])),
        ("ratio end to end / DuckDB floor", of_full(lambda s, f: f["total"] / floor_db[s])),
    ]
    if any("partitioned" in results[s] for s in sizes):
        part = {s: results[s].get("partitioned", {}) for s in sizes}
        timing = lambda s, k: part[s].get("timings", {}).get(k)  # noqa: E731
        rows += [
            ("partitioned: partitions", [str(part[s].get("partitions", "–")) for s in sizes]),
            ("partitioned: split inputs into partition files (s)", [cell(timing(s, "compute_split")) for s in sizes]),
            ("partitioned: partitions computed + results written (s)",
             [cell(timing(s, "compute_partitions")) for s in sizes]),
            ("partitioned: load + split + compute + check (s)",
             [cell(sum(timing(s, k) or 0 for k in ("load", "compute", "check")) if part[s] else None) for s in sizes]),
            ("partitioned: save + publish (s)",
             [cell(sum(timing(s, k) or 0 for k in ("save", "publish")) if part[s] else None) for s in sizes]),
            ("partitioned: end to end (s)", [cell(timing(s, "total")) for s in sizes]),
            ("partitioned: ratio end to end / Polars floor",
             [cell(timing(s, "total") / floor_pl[s] if part[s] else None) for s in sizes]),
            ("partitioned: seconds per million rows",
             [cell(timing(s, "total") / (part[s]["rows"] / 1e6) if part[s] else None) for s in sizes]),
            ("partitioned: peak RSS (GB)", [cell(part[s].get("peak_rss_gb")) for s in sizes]),
            *[(f"partitioned: peak RSS in {stage} (GB)",
               [cell(part[s].get("peak_rss_gb_by_stage", {}).get(stage)) for s in sizes])
              for stage in ("compute_split", "compute_partitions", "publish")],
        ]
    return rows


def render(results: dict[str, dict], markdown: bool) -> str:
    rows = table_rows(results)
    header = ["metric", *results]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join([name, *cells]) + " |" for name, cells in rows]
        return "\n".join(lines)
    width = max(len(name) for name, _ in rows)
    cell_width = max(12, *(len(c) for _, cells in rows for c in cells))
    lines = [f"{header[0]:<{width}}  " + "  ".join(f"{h:>{cell_width}}" for h in header[1:])]
    lines += [f"{name:<{width}}  " + "  ".join(f"{c:>{cell_width}}" for c in cells) for name, cells in rows]
    return "\n".join(lines)


def machine() -> str:
    cpu = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    import duckdb
    import polars

    return (f"{cpu}, {os.cpu_count()} CPUs, {memory_gb:.1f} GiB RAM, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, polars {polars.__version__}, duckdb {duckdb.__version__}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1M,10M", help="Comma-separated position-row counts (default 1M,10M).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs per measurement; the median is reported.")
    parser.add_argument("--no-profile", action="store_true", help="Skip the stage-by-stage profile run.")
    parser.add_argument("--partitions", default="auto",
                        help="Also time the margin-group partitioned run (margin run --partitions N) with N "
                             "partitions; 'auto' (default): from 10M rows on, one partition per 2.5M rows; "
                             "0: never.")
    parser.add_argument("--no-versus", action="store_true",
                        help="Skip the alternating rounds of margin run against the SQL method.")
    parser.add_argument("--versus-only", action="store_true",
                        help="Only the alternating rounds of margin run against the SQL method (at least 3).")
    parser.add_argument("--prefect-api", default=None,
                        help="Also time margin run through the Prefect server at this URL in each round.")
    parser.add_argument("--markdown", action="store_true", help="Print the table as Markdown.")
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    results = {}
    for rows in sizes:
        results[size_label(rows)] = measure_size(rows, args.repeat, not args.no_profile,
                                                   partition_count(args.partitions, rows), not args.no_versus,
                                                   args.versus_only, args.prefect_api)
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    out = BENCH_DIR / f"results-{stamp}.json"
    out.write_text(json.dumps({"machine": machine(), "as_of": AS_OF.isoformat(), "results": results}, indent=1))
    print(f"Machine: {machine()}")
    print(render(results, args.markdown))
    print(f"\nraw numbers: {out.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
