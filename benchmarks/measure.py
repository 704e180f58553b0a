"""One measurement, run in a fresh process by ``benchmarks.run`` (so each has its own peak RSS).

``python -m benchmarks.measure KIND INPUTS DATE WORKDIR`` prints one JSON line of
timings (seconds) on stdout.  Kinds:

- ``generate``: write the synthetic book (``flows.generate.generate_day``), or tile a
  smaller cached book ×k with renamed accounts and groups (``--tile-from``, for 100M);
- ``full``: the production path ``flows.eod.run_end_of_day`` without Prefect task
  wrappers (load, compute = one ``collect_all``, identity check, Parquet save, DuckDB
  publish), into a fresh warehouse under WORKDIR;
- ``profile``: the same methodology stage by stage, each stage's plan collected
  separately from materialised inputs, to show where the time goes (slower in total
  than ``full``: no work is shared across stages);
- ``partitioned``: the same production path with ``MARGIN_PARTITIONS=N`` (margin-group
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
    from flows.generate import generate_day

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


def measure_full(inputs: Path, as_of: dt.date, workdir: Path) -> dict:
    from flows.eod import run_end_of_day

    db = workdir / "warehouse.duckdb"
    for stale in workdir.glob("warehouse.duckdb*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    start = time.perf_counter()
    record = run_end_of_day(as_of, inputs, db, use_tasks=False)
    total = time.perf_counter() - start
    timings = dict(record["timings"])
    timings["total"] = round(total, 4)
    return {"timings": timings, "rows": record["row_counts"]["positions"]["read"]}


def measure_profile(inputs: Path, as_of: dt.date) -> dict:
    """Stage by stage, each collected from the previous stages' materialised frames."""
    import polars as pl

    from flows.loading import load_inputs
    from transforms import collateral as coll
    from transforms import encoding, groups, netting, portfolio_margin, rule_margin, validation, valuation
    from transforms.account_health import account_health

    watch = Stopwatch()
    with watch.stage("load"):
        margin_inputs = load_inputs(inputs, as_of).margin_inputs
    scenario_ids = sorted(margin_inputs.scenarios["scenario_id"].to_list())

    with watch.stage("encode"):  # as margin_plan: ids to dense integer codes
        coded, account_ids = encoding.encode_accounts({t: getattr(margin_inputs, t)
                                                       for t in ("positions", "collateral", "accounts")})
        instrument_ids = encoding.sorted_ids(margin_inputs.instruments, "instrument_id")
    account_code = pl.col(encoding.ACCOUNT_CODE).alias("account_id")

    with watch.stage("validate"):
        fx_checked = validation.check_fx_rates(margin_inputs.fx_rates)
        fx = validation.usable_fx(fx_checked)
        instruments_checked = validation.check_instruments(margin_inputs.instruments)
        prices_checked = validation.check_prices(margin_inputs.prices)
        market = validation.instrument_market(
            validation.usable_rows(instruments_checked), validation.usable_rows(prices_checked), fx,
            margin_inputs.risk_params.lazy(), as_of,
        ).join(encoding.code_table(instrument_ids, encoding.INSTRUMENT_CODE), on="instrument_id", how="left")
        checked_plans = {
            "positions": validation.check_positions(coded["positions"], market),
            "prices": prices_checked,
            "collateral": validation.check_collateral(coded["collateral"], fx),
            "fx_rates": fx_checked,
            "instruments": instruments_checked,
            "accounts": validation.check_accounts(coded["accounts"]),
        }
        frames = pl.collect_all([*checked_plans.values(), fx, market])
        checked = dict(zip(checked_plans, frames))
        fx, market = frames[-2].lazy(), frames[-1].lazy()
        pl.collect_all([validation.quarantine_rows(frame.lazy(), table) for table, frame in checked.items()])
        positions = validation.usable_rows(checked["positions"].lazy()).select(
            account_code, pl.col(encoding.INSTRUMENT_CODE).alias("instrument_id"), "quantity"
        ).collect().lazy()
        collateral_rows = validation.usable_rows(checked["collateral"].lazy()).select(
            account_code, "asset", "amount"
        ).collect().lazy()
        accounts = validation.usable_rows(checked["accounts"].lazy()).select(
            account_code, "margin_group", "margin_mode", "lei"
        ).collect().lazy()

    with watch.stage("net"):
        netted = netting.net_positions(positions, "account_id").collect().lazy()

    with watch.stage("value"):
        instrument_values = valuation.value_instruments(
            market.filter(pl.col("hold_reason").is_null()), as_of
        ).drop("instrument_id").rename({encoding.INSTRUMENT_CODE: "instrument_id"}).collect().lazy()
        valued = rule_margin.rule_margin(
            valuation.value_positions(netted, instrument_values, "account_id")
        ).collect().lazy()

    with watch.stage("portfolio_margin"):
        unit_losses = portfolio_margin.scenario_unit_losses(
            instrument_values, margin_inputs.scenarios.lazy(), scenario_ids, margin_inputs.vol_floor
        ).collect().lazy()
        scan = portfolio_margin.underlying_scan(valued, unit_losses, scenario_ids, "account_id").collect().lazy()
        risk = portfolio_margin.underlying_risk(scan, margin_inputs.offsets, "account_id").collect().lazy()
        account_pm = portfolio_margin.portfolio_margin(risk, "account_id").collect().lazy()

    with watch.stage("collateral"):
        collateral_valuation = coll.value_collateral(
            coll.collateral_balances(collateral_rows, "account_id"), fx, margin_inputs.haircuts.lazy(), "account_id"
        ).collect().lazy()
        account_collateral = coll.collateral_value(collateral_valuation, "account_id").collect().lazy()

    with watch.stage("accounts"):
        marked = pl.col("kind").is_in(["option", "spot"])
        summary = valued.group_by("account_id").agg(
            (pl.col("net_qty") != 0).sum().cast(pl.Int64).alias("position_count"),
            pl.col("gross_im").sum(), pl.col("net_im").sum(),
            pl.when(marked).then(pl.col("mv_usd")).otherwise(0.0).sum().alias("position_value_usd"),
        ).join(account_pm, on="account_id", how="left")
        zero_filled = ["position_count", "gross_im", "net_im", "position_value_usd", "portfolio_im", "inter_credit",
                       "collateral_value_usd", "haircut_usd"]
        seen_ids = pl.concat([accounts.select("account_id"), checked["positions"].lazy().select(account_code),
                              checked["collateral"].lazy().select(account_code)]).drop_nulls().unique()
        account_margin = account_health(
            seen_ids.join(accounts, on="account_id", how="left")
            .join(summary, on="account_id", how="left")
            .join(account_collateral, on="account_id", how="left")
            .with_columns(pl.col(zero_filled).fill_null(0)),
            margin_inputs.maintenance_ratio,
        ).collect().lazy()

    with watch.stage("groups"):
        from transforms.pipeline import book_plan

        membership = groups.group_membership(accounts).collect().lazy()
        group_book = book_plan(groups.group_rows(positions, membership), instrument_values, unit_losses,
                               scenario_ids, margin_inputs.offsets, "margin_group")
        group_collateral = coll.collateral_value(
            coll.value_collateral(coll.collateral_balances(groups.group_rows(collateral_rows, membership),
                                                           "margin_group"),
                                  fx, margin_inputs.haircuts.lazy(), "margin_group"),
            "margin_group",
        )
        group_figures = (
            membership.select("margin_group").unique()
            .join(group_book.summary.select("margin_group", "position_count", "position_value_usd",
                                            pl.col("portfolio_im").alias("group_im")), on="margin_group", how="left")
            .join(group_collateral, on="margin_group", how="left")
        )
        groups.group_margin(membership, group_figures, account_margin, margin_inputs.maintenance_ratio).collect()
    return {"timings": watch.timings}


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


def measure_partitioned(inputs: Path, as_of: dt.date, partitions: int, workdir: Path) -> dict:
    """The production path with ``MARGIN_PARTITIONS=N`` (``margin run --partitions N``), load to
    publish: positions and collateral streamed from their files into partitions, each
    partition's results written as Parquet, the warehouse loaded from those files."""
    os.environ["MARGIN_PARTITIONS"] = str(partitions)
    from flows.eod import run_end_of_day

    db = workdir / "partitioned.duckdb"
    for stale in workdir.glob("partitioned.duckdb*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    samples: list[tuple[float, float]] = []  # (seconds since start, RSS GB), every 0.25 s
    done = threading.Event()

    def sample() -> None:
        status = Path("/proc/self/status")
        while not done.wait(0.25):
            kb = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
            samples.append((time.perf_counter() - start, kb / 1024 / 1024))

    start = time.perf_counter()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    record = run_end_of_day(as_of, inputs, db, use_tasks=False)
    done.set()
    timings = dict(record["timings"])
    timings["total"] = round(time.perf_counter() - start, 4)
    # Peak RSS per stage: stages run in this order, back to back.
    order = ["load", "compute_split", "compute_partitions", "compute_merge", "check", "save", "publish"]
    peaks, begin = {}, 0.0
    for stage in order:
        end = begin + timings.get(stage, 0.0)
        inside = [gb for t, gb in samples if begin <= t <= end]
        peaks[stage] = round(max(inside), 3) if inside else None
        begin = end
    return {"timings": timings, "rows": record["row_counts"]["positions"]["read"], "partitions": partitions,
            "peak_rss_gb_by_stage": peaks}


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
        out = measure_full(args.inputs, args.date, args.workdir)
    elif args.kind == "profile":
        out = measure_profile(args.inputs, args.date)
    elif args.kind == "partitioned":
        out = measure_partitioned(args.inputs, args.date, args.partitions, args.workdir)
    elif args.kind == "floor-polars":
        out = floor_polars(args.inputs, args.date)
    else:
        out = floor_duckdb(args.inputs, args.date)
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
