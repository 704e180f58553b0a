"""The cost of ``position_margin.worst_scenario_loss`` (SPEC §5.2) and the speed of ``margin explain`` (§13).

    uv run python -m benchmarks.explain --sizes 1M               # generates the 1M book if absent
    uv run python -m benchmarks.explain --sizes 10M --repeat 3   # the 10M book (big: run alone)

Per size, the same book (``benchmarks.run.ensure_book``) goes through the full end-of-day
run (``benchmarks.measure.measure_eod``: load to publish, a fresh process each) in two
variants, alternating (without, with, without, with …):

- ``with``: the production code;
- ``without``: the same process with the column's two steps replaced by nothing —
  ``portfolio_margin.worst_scenario_loss`` adds an all-null column (so the published
  tables keep their schema) and the identity ``Σ worst_scenario_loss = scan_risk`` is
  not checked.

The medians of compute, check and total (end to end) are reported with the ratio with /
without, and the two steps' own seconds inside the ``with`` runs (``step_*``) with their
share of the run without them (the save and publish of the extra column come on top).  Then ``margin explain`` is timed as a command on the warehouse the last ``with``
run published (and the same inputs), from process start to exit: a portfolio-mode
account holding the most underlyings, a margin-group member, and ``--group`` of that
member's group, ``--repeat`` times each (at least 3).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

from benchmarks.run import AS_OF, BENCH_DIR, PROJECT_ROOT, ensure_book, parse_size, size_label


def child(variant: str, inputs: Path, db: Path) -> None:
    """One full run in this process (``variant`` without: the column's steps removed); prints JSON."""
    import polars as pl

    from benchmarks.measure import measure_eod
    from transforms import identities, portfolio_margin

    steps = {"worst_scenario_loss": 0.0, "identity": 0.0}
    if variant == "without":
        def no_worst_scenario_loss(positions, scan, unit_losses, scenario_ids, book_key):
            return positions.with_columns(pl.lit(None, dtype=pl.Float64).alias("worst_scenario_loss"))

        portfolio_margin.worst_scenario_loss = no_worst_scenario_loss
        identities.worst_loss_violations = lambda positions, underlying_risk, in_key_order: []
    else:
        # The two steps timed where they run: the run materialises the column's frame at once
        # (collected here instead, the same work) and checks the identity on eager frames.
        with_column, identity = portfolio_margin.worst_scenario_loss, identities.worst_loss_violations

        def timed_worst_scenario_loss(positions, scan, unit_losses, scenario_ids, book_key):
            started = time.perf_counter()
            frame = with_column(positions, scan, unit_losses, scenario_ids, book_key).collect()
            steps["worst_scenario_loss"] += time.perf_counter() - started
            return frame.lazy()

        def timed_identity(positions, underlying_risk, in_key_order):
            started = time.perf_counter()
            problems = identity(positions, underlying_risk, in_key_order)
            steps["identity"] += time.perf_counter() - started
            return problems

        portfolio_margin.worst_scenario_loss = timed_worst_scenario_loss
        identities.worst_loss_violations = timed_identity
    result = measure_eod(inputs, AS_OF, db)
    result["step_seconds"] = {name: round(value, 4) for name, value in steps.items()}
    print(json.dumps(result))


def run_variant(variant: str, inputs: Path, db: Path, log: Path) -> dict:
    with open(log, "ab") as err:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.explain", "child", variant, str(inputs), str(db)],
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=err,
            env={**__import__("os").environ, "MARGIN_QUIET": "1", "MARGIN_DATA_DIR": str(db.parent / "data")},
        )
    if done.returncode != 0:
        raise SystemExit(f"benchmarks: full run ({variant}) failed; see {log}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def explain_targets(db: Path) -> dict[str, list[str]]:
    """A portfolio account with the most underlyings, a group member, and that member's group."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        portfolio = con.sql(
            "SELECT account_id FROM underlying_risk u JOIN account_margin a USING (as_of_date, account_id) "
            "WHERE a.as_of_date = $1 AND a.margin_mode = 'portfolio' GROUP BY account_id "
            "ORDER BY count(*) DESC, account_id LIMIT 1", params=[AS_OF]).fetchall()[0][0]
        member, group = con.sql(
            "SELECT account_id, margin_group FROM account_margin WHERE as_of_date = $1 AND margin_group IS NOT NULL "
            "ORDER BY account_id LIMIT 1", params=[AS_OF]).fetchall()[0]
    finally:
        con.close()
    return {"portfolio account": ["--account", portfolio], "group member": ["--account", member],
            "group": ["--group", group]}


def time_explain(db: Path, inputs: Path, repeat: int) -> dict:
    """``margin explain`` as a command (``python -m flows.cli``), wall time from start to exit."""
    results = {}
    for label, target in explain_targets(db).items():
        walls = []
        for _ in range(repeat):
            command = [sys.executable, "-m", "flows.cli", "explain", "--date", AS_OF.isoformat(), *target,
                       "--db", str(db), "--inputs", str(inputs), "--format", "json"]
            started = time.perf_counter()
            done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
            walls.append(round(time.perf_counter() - started, 3))
            if done.returncode != 0:
                raise SystemExit(f"benchmarks: explain failed: {done.stderr.strip()}")
        results[label] = {"target": target[1], "seconds": walls, "median": statistics.median(walls), "max": max(walls)}
    return results


def measure(rows: int, repeat: int) -> dict:
    inputs = ensure_book(rows)
    workdir = BENCH_DIR / "work" / f"explain-{size_label(rows)}"
    workdir.mkdir(parents=True, exist_ok=True)
    say = lambda text: print(f"  {size_label(rows)}: {text}", file=sys.stderr, flush=True)  # noqa: E731
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for attempt in range(repeat):
        for variant in ("without", "with"):
            say(f"full run {variant} worst_scenario_loss ({attempt + 1}/{repeat}) …")
            runs[variant].append(run_variant(variant, inputs, workdir / variant / "warehouse.duckdb",
                                             workdir / f"{variant}.log"))
    result: dict = {"rows": rows, "book": str(inputs)}
    for stage in ("compute", "check", "publish", "total"):
        values = {v: [r["timings"].get(stage, 0.0) for r in runs[v]] for v in runs}
        without, with_ = statistics.median(values["without"]), statistics.median(values["with"])
        result[stage] = {"without": without, "with": with_, "ratio": round(with_ / without, 3) if without else None,
                         "all_without": values["without"], "all_with": values["with"]}
    for step in ("worst_scenario_loss", "identity"):
        values = [r["step_seconds"][step] for r in runs["with"]]
        result[f"step_{step}"] = {"median": statistics.median(values), "all": values}
    # The column's own cost (its step and its identity, timed inside the ``with`` runs) as a
    # share of the run without it: steadier on a shared machine than the ratio of two totals.
    step_total = result["step_worst_scenario_loss"]["median"] + result["step_identity"]["median"]
    result["step_share_of_total_without"] = round(step_total / result["total"]["without"], 4)
    say("margin explain …")
    result["explain"] = time_explain(workdir / "with" / "warehouse.duckdb", inputs, max(repeat, 3))
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        child(argv[1], Path(argv[2]), Path(argv[3]))
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.explain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1M", help="Comma-separated position-row counts (default 1M).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of each variant; medians are reported.")
    args = parser.parse_args(argv)
    results = [measure(parse_size(size), args.repeat) for size in args.sizes.split(",")]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
