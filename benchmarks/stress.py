"""The cost of the stress step (SPEC §11) and of ``margin whatif`` (SPEC §12).

    uv run python -m benchmarks.stress --sizes 1M              # generates the 1M book if absent
    uv run python -m benchmarks.stress --sizes 10M --repeat 3  # the 10M book (big: run alone)

Per size, the same book (``benchmarks.run.ensure_book``) is run twice as the full
end-of-day run (``benchmarks.measure full``: load to publish, fresh process each), once
without a stress table and once with the shipped one (``data/reference/
stress_scenarios.parquet``: the ladder and the named stresses, 24 stresses); the two
input roots differ only by that file (``data=D/`` and every other reference table are
symlinks to the book's).  Runs alternate (without, with, without, with …) and the median
of each is reported with the ratio with / without.  Then ``margin whatif`` for a few
accounts of the book (two outside groups and one group member, so its group is read
too) is timed as a command, from process start to exit, ``--repeat`` times.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from benchmarks.run import AS_OF, BENCH_DIR, PROJECT_ROOT, ensure_book, parse_size, run_child, size_label

SHIPPED_STRESSES = PROJECT_ROOT / "data" / "reference" / "stress_scenarios.parquet"


def stress_roots(book: Path, workdir: Path) -> dict[str, Path]:
    """Two input roots over ``book``: ``without`` (no stress table) and ``with`` (the shipped one)."""
    roots = {}
    for variant in ("without", "with"):
        root = workdir / f"inputs-{variant}-stress"
        if root.exists():
            shutil.rmtree(root)
        (root / "reference").mkdir(parents=True)
        for source in (book / "reference").iterdir():
            if source.name != "stress_scenarios.parquet":
                (root / "reference" / source.name).symlink_to(source.resolve())
        if variant == "with":
            shutil.copyfile(SHIPPED_STRESSES, root / "reference" / "stress_scenarios.parquet")
        day = f"date={AS_OF.isoformat()}"
        (root / day).symlink_to((book / day).resolve(), target_is_directory=True)
        roots[variant] = root
    return roots


def whatif_accounts(book: Path) -> list[str]:
    """Two accounts outside any group and one group member (valid accounts rows)."""
    accounts = pl.read_parquet(book / "reference" / "accounts.parquet")
    alone = accounts.filter(pl.col("margin_group").is_null())["account_id"].head(2).to_list()
    member = accounts.filter(pl.col("margin_group").is_not_null())["account_id"].head(1).to_list()
    return alone + member


def time_whatif(root: Path, workdir: Path, repeat: int) -> dict:
    """``margin whatif`` as a command, wall time from start to exit, for a few accounts."""
    accounts = whatif_accounts(root)
    trades = workdir / "whatif-trades.csv"
    rows = [f"{accounts[0]},BTC-PERP,-2,", f"{accounts[1]},BTC,0.5,", f"{accounts[2]},ETH-PERP,10,"]
    trades.write_text("account_id,instrument_id,quantity,price\n" + "\n".join(rows) + "\n")
    command = [sys.executable, "-m", "flows.cli", "whatif", "--date", AS_OF.isoformat(), "--trades", str(trades),
               "--inputs", str(root), "--format", "json"]
    walls, document = [], {}
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
        walls.append(round(time.perf_counter() - started, 3))
        if done.returncode != 0:
            raise SystemExit(f"benchmarks: whatif failed: {done.stderr.strip()}")
        document = json.loads(done.stdout)
    return {"seconds": walls, "median": statistics.median(walls), "accounts": accounts,
            "accounts_margined": document.get("accounts_margined")}


def measure(rows: int, repeat: int) -> dict:
    book = ensure_book(rows)
    workdir = BENCH_DIR / "work" / f"stress-{size_label(rows)}"
    workdir.mkdir(parents=True, exist_ok=True)
    roots = stress_roots(book, workdir)
    say = lambda text: print(f"  {size_label(rows)}: {text}", file=sys.stderr, flush=True)  # noqa: E731
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for attempt in range(repeat):
        for variant in ("without", "with"):
            say(f"full run {variant} stresses ({attempt + 1}/{repeat}) …")
            runs[variant].append(run_child("full", roots[variant], workdir / variant))

    def median_of(variant: str, stage: str) -> float:
        return statistics.median(r["timings"][stage] for r in runs[variant])

    result = {"rows": rows, "book": str(book), "stresses": pl.read_parquet(SHIPPED_STRESSES)["stress_id"].n_unique()}
    for stage in ("compute", "total"):
        without, with_ = median_of("without", stage), median_of("with", stage)
        result[stage] = {"without": without, "with": with_, "ratio": round(with_ / without, 3),
                         "all_without": [r["timings"][stage] for r in runs["without"]],
                         "all_with": [r["timings"][stage] for r in runs["with"]]}
    result["peak_rss_gb"] = {v: max(r["peak_rss_gb"] for r in runs[v]) for v in runs}
    say("margin whatif …")
    result["whatif"] = time_whatif(roots["without"], workdir, max(repeat, 3))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stress", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1M", help="Comma-separated position-row counts (default 1M).")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of each variant; medians are reported.")
    args = parser.parse_args(argv)
    for size in args.sizes.split(","):
        result = measure(parse_size(size), args.repeat)
        total, compute = result["total"], result["compute"]
        print(f"{size_label(result['rows'])} position rows, {result['stresses']} stresses: "
              f"run {total['without']:.2f}s without, {total['with']:.2f}s with stresses (× {total['ratio']:.3f}); "
              f"compute {compute['without']:.2f}s → {compute['with']:.2f}s (× {compute['ratio']:.3f}); "
              f"peak RSS {result['peak_rss_gb']['without']:.2f} → {result['peak_rss_gb']['with']:.2f} GB; "
              f"whatif {result['whatif']['median']:.2f}s for {len(result['whatif']['accounts'])} accounts "
              f"({result['whatif']['accounts_margined']} margined)")
        print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
