"""One measurement, run in a fresh process by ``benchmarks.run`` (so each has its own peak RSS).

``python -m benchmarks.measure KIND INPUTS DATE WORKDIR`` prints one JSON line of
timings (seconds) on stdout.  Kinds:

- ``generate``: write the synthetic book (``market.generate.generate_day``), or tile a
  smaller cached book ×k with renamed accounts and groups (``--tile-from``, for 100M);
- ``full``: the production path ``flows.eod.run_end_of_day`` without Prefect task
  wrappers (load, compute, identity check, Parquet save, DuckDB publish), into a fresh
  warehouse under WORKDIR, with the peak RSS of each stage;
- ``profile``: the production ``compute_margin`` with each shared intermediate it
  collects timed and attributed to its stage, to show where the time goes;
- ``partitioned``: the same production path with ``partitions=N`` (margin-group
  partitions, in-process; positions and collateral streamed from their files into one
  file per partition, each partition's results written as Parquet and published from
  the files) — the memory-bounded path for books larger than RAM;
- ``floor-polars`` / ``floor-duckdb``: the netting-only pipeline (read positions, net per
  account × instrument, join prices and instruments, Σ notional per account ×
  underlying and per account) in Polars streaming and in DuckDB SQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("MARGIN_QUIET", "1")


class Stopwatch:
    """Named wall-clock timings, in the order they ran."""

    def __init__(self):
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - start, 4)


def measure_generate(inputs: Path, as_of: dt.date, accounts: int, tile_from: Path | None, tiles: int) -> dict:
    from market.generate import generate_day

    start = time.perf_counter()
    if tile_from is None:
        generate_day(inputs, as_of, accounts)
    else:
        tile_book(tile_from, inputs, as_of, tiles)
    return {"generate": round(time.perf_counter() - start, 3)}


def tile_book(source: Path, target: Path, as_of: dt.date, tiles: int) -> None:
    """``tiles`` copies of a generated book with account ids and margin groups suffixed
    ``~k`` (k ≥ 1; copy 0 keeps the original ids); instruments, prices, FX and the
    methodology are shared.  Streams through Parquet, so the book never sits in memory."""
    import polars as pl

    day = f"date={as_of.isoformat()}"
    (target / day).mkdir(parents=True, exist_ok=True)
    (target / "reference").mkdir(parents=True, exist_ok=True)
    for folder in ("reference", day):
        for path in (source / folder).iterdir():
            if path.name not in ("positions.parquet", "collateral.parquet", "accounts.parquet"):
                shutil.copy2(path, target / folder / path.name)

    def suffixed(column: str, k: int) -> pl.Expr:
        return pl.col(column) if k == 0 else pl.col(column) + pl.lit(f"~{k}")

    for folder, name, renamed in (
        (day, "positions", ["account_id"]),
        (day, "collateral", ["account_id"]),
        ("reference", "accounts", ["account_id", "margin_group"]),
    ):
        scans = [
            pl.scan_parquet(source / folder / f"{name}.parquet").with_columns(suffixed(c, k) for c in renamed)
            for k in range(tiles)
        ]
        pl.concat(scans).sink_parquet(target / folder / f"{name}.parquet")


def resident_gb(pid: int | str = "self") -> float:
    """Resident set size of a process (``VmRSS`` in ``/proc/<pid>/status``), in GB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) / 1024 / 1024


def measure_eod(inputs: Path, as_of: dt.date, db: Path, partitions: int = 1) -> dict:
    """The production path (``run_end_of_day`` without Prefect task wrappers) into a fresh
    warehouse ``db``, with ``partitions`` margin-group partitions (1: the whole book as one);
    RSS sampled every 0.25 s for the peak of each stage."""
    from flows.eod import run_end_of_day

    for stale in db.parent.glob(f"{db.name}*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    samples: list[tuple[float, float]] = []  # (seconds since start, RSS GB)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            samples.append((time.perf_counter() - start, resident_gb()))

    start = time.perf_counter()
    threading.Thread(target=sample, daemon=True).start()
    record = run_end_of_day(as_of, inputs, db, use_tasks=False, partitions=partitions)
    done.set()
    timings = dict(record["timings"])
    timings["total"] = round(time.perf_counter() - start, 4)
    # Peak RSS per stage: the stages ran in this order, back to back (a partitioned
    # compute as its split, partitions and merge).
    compute = ["compute_split", "compute_partitions", "compute_merge"] if "compute_split" in timings else ["compute"]
    peaks, begin = {}, 0.0
    for stage in ["load", *compute, "check", "save", "publish"]:
        end = begin + timings.get(stage, 0.0)
        inside = [gb for t, gb in samples if begin <= t <= end]
        peaks[stage] = round(max(inside), 3) if inside else None
        begin = end
    return {"timings": timings, "rows": record["row_counts"]["positions"]["read"], "partitions": partitions,
            "peak_rss_gb_by_stage": peaks}


def profile_stage(columns: list[str]) -> str:
    """The methodology stage a shared intermediate of ``margin_plan`` belongs to, from its columns."""
    cols = set(columns)
    book = "groups" if columns and columns[0] == "margin_group" else None
    if "reason" in cols or "hold_reason" in cols or cols in ({"account_id", "instrument_id", "quantity"},
                                                           {"account_id", "asset", "amount"},
                                                           {"account_id", "margin_group", "margin_mode", "lei"}):
        return "validate"
    if "status" in cols:
        return "accounts"
    if "value_after_haircut_usd" in cols:
        return "collateral"
    if cols == {"account_id", "margin_group"} or cols == {"margin_group", "account_id"}:
        return "groups"
    if "scan_risk" in cols:
        return book or "portfolio_margin"
    if "mv_usd" in cols or ("delta" in cols and "account_id" not in cols):
        return book or "value"
    if "gross_qty" in cols:
        return book or "net"
    if "account_id" not in cols and "instrument_id" in cols:
        return "portfolio_margin"  # scenario P&L per instrument
    if "currency" in cols:
        return "validate"
    return "other"


def measure_profile(inputs: Path, as_of: dt.date) -> dict:
    """Where the production compute's time goes: ``compute_margin`` itself, with each shared
    intermediate it materialises timed and attributed to its stage (``profile_stage``);
    ``outputs`` is the final collect (quarantine, counts, warnings, the tables' last
    gathers, sorts and id decoding). Lazy work is counted where it is collected: id
    encoding inside ``validate``, the scenario scan inside ``portfolio_margin``."""
    from collections import defaultdict

    from flows.loading import load_inputs
    from transforms.pipeline import compute_margin

    watch = Stopwatch()
    with watch.stage("load"):
        margin_inputs = load_inputs(inputs, as_of).margin_inputs
    stages: dict[str, float] = defaultdict(float)

    def timed(frame):
        begin = time.perf_counter()
        collected = frame.collect()
        stages[profile_stage(collected.columns)] += time.perf_counter() - begin
        return collected.lazy()

    begin = time.perf_counter()
    compute_margin(margin_inputs, materialize=timed)
    total = time.perf_counter() - begin
    timings = {"load": watch.timings["load"], **{k: round(v, 4) for k, v in stages.items()}}
    timings["outputs"] = round(total - sum(stages.values()), 4)
    timings["compute"] = round(total, 4)
    return {"timings": timings}


def floor_polars(inputs: Path, as_of: dt.date) -> dict:
    """Netting-only floor in Polars streaming: net, join prices and instruments, Σ notional."""
    import polars as pl

    day = inputs / f"date={as_of.isoformat()}"
    start = time.perf_counter()
    positions = pl.scan_parquet(day / "positions.parquet")
    prices = pl.scan_parquet(day / "prices.parquet").select("instrument_id", "price")
    instruments = pl.scan_parquet(day / "instruments.parquet").select("instrument_id", "underlying", "multiplier")
    netted = positions.group_by("account_id", "instrument_id").agg(pl.col("quantity").sum().alias("net_qty"))
    per_underlying = (
        netted.join(prices, on="instrument_id").join(instruments, on="instrument_id")
        .with_columns((pl.col("net_qty") * pl.col("multiplier") * pl.col("price")).abs().alias("notional"))
        .group_by("account_id", "underlying").agg(pl.col("notional").sum())
    )
    per_account = per_underlying.group_by("account_id").agg(pl.col("notional").sum())
    by_underlying, by_account = pl.collect_all([per_underlying, per_account], engine="streaming")
    return {"timings": {"total": round(time.perf_counter() - start, 4)},
            "rows_out": [by_underlying.height, by_account.height]}


def floor_duckdb(inputs: Path, as_of: dt.date) -> dict:
    """Netting-only floor in DuckDB SQL over the same Parquet files."""
    import duckdb

    day = inputs / f"date={as_of.isoformat()}"
    start = time.perf_counter()
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    con.execute(f"""
        CREATE TEMP TABLE per_underlying AS
        WITH netted AS (
            SELECT account_id, instrument_id, sum(quantity) AS net_qty
            FROM read_parquet('{day / "positions.parquet"}') GROUP BY ALL
        )
        SELECT n.account_id, i.underlying, sum(abs(n.net_qty * i.multiplier * p.price)) AS notional
        FROM netted n
        JOIN read_parquet('{day / "prices.parquet"}') p USING (instrument_id)
        JOIN read_parquet('{day / "instruments.parquet"}') i USING (instrument_id)
        GROUP BY ALL
    """)
    by_underlying = con.sql("SELECT * FROM per_underlying").to_arrow_table()
    by_account = con.sql("SELECT account_id, sum(notional) AS notional FROM per_underlying GROUP BY ALL").to_arrow_table()
    con.close()
    return {"timings": {"total": round(time.perf_counter() - start, 4)},
            "rows_out": [by_underlying.num_rows, by_account.num_rows]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["generate", "full", "profile", "partitioned", "floor-polars",
                                         "floor-duckdb"])
    parser.add_argument("inputs", type=Path)
    parser.add_argument("date", type=dt.date.fromisoformat)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--accounts", type=int, default=0)
    parser.add_argument("--tile-from", type=Path, default=None)
    parser.add_argument("--tiles", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.kind == "generate":
        out = measure_generate(args.inputs, args.date, args.accounts, args.tile_from, args.tiles)
    elif args.kind == "full":
        out = measure_eod(args.inputs, args.date, args.workdir / "warehouse.duckdb")
    elif args.kind == "profile":
        out = measure_profile(args.inputs, args.date)
    elif args.kind == "partitioned":
        out = measure_eod(args.inputs, args.date, args.workdir / "partitioned.duckdb", args.partitions)
    elif args.kind == "floor-polars":
        out = floor_polars(args.inputs, args.date)
    else:
        out = floor_duckdb(args.inputs, args.date)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
