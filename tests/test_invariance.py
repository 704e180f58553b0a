"""Invariants of the run (issue 7), as properties over random books (hypothesis).

* a rerun on the same inputs gives the same outputs;
* the outputs do not depend on the order of rows in any input table;
* nor on how ``positions.parquet`` is split into row groups.

Random books are drawn from the two worked books: a random subset of their position
and collateral rows (so netting, groups, quarantine and the scenario grid all vary).

"The same" means: every key, text, flag, count, status and worst scenario identical,
and every amount equal to within 1e-12 of its column's magnitude.  Amounts are *not*
bit-identical between two evaluations: Polars' streaming engine sums in parallel, in
an order that varies from one collect to the next, so the last bits of a sum move
(measured: relative differences up to ~5e-14, absolute up to ~5e-10 USD on
million-dollar figures).  Exports round to 5 decimals, far above that noise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import EXAMPLE_BOOKS, EXAMPLES
from flows.loading import load_inputs
from transforms.pipeline import INPUT_TABLES, METHODOLOGY_TABLES, RESULT_TABLES, MarginInputs, MarginResults, compute_margin

AS_OF = dt.date(2025, 3, 14)
RELATIVE = 1e-12
PROPERTY = settings(max_examples=10, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def loaded(book: str) -> MarginInputs:
    return load_inputs(EXAMPLES / book / "inputs", AS_OF).margin_inputs


#: A random book: ("example", worked book, seed, share of position/collateral rows kept)
#: or ("generated", accounts, seed) from ``market.generate`` (with its deliberately bad rows).
random_books = st.one_of(
    st.tuples(st.just("example"), st.sampled_from(EXAMPLE_BOOKS), st.integers(0, 2**32 - 1),
              st.sampled_from([0.3, 0.6, 0.9, 1.0])),
    st.tuples(st.just("generated"), st.integers(2, 40), st.integers(0, 2**16)),
)
GENERATED_DAY = dt.date(2026, 11, 16)


def write_book(spec: tuple, folder: Path) -> tuple[Path, dt.date]:
    """Write the input root of the random book ``spec`` under ``folder``; returns (root, as-of date)."""
    root = Path(folder) / "inputs"
    if spec[0] == "generated":
        from market.generate import generate_day

        _, accounts, seed = spec
        generate_day(root, GENERATED_DAY, accounts, seed=seed, bad_rows=True)
        return root, GENERATED_DAY
    _, book, seed, keep = spec
    shutil.copytree(EXAMPLES / book / "inputs", root)
    rng = np.random.default_rng(seed)
    for table in ("positions", "collateral"):
        path = root / f"date={AS_OF}" / f"{table}.parquet"
        rows = pl.read_parquet(path)
        path.unlink()
        rows.filter(pl.Series(rng.random(rows.height) < keep)).write_parquet(path)
    return root, AS_OF


def sub_book(*spec) -> MarginInputs:
    """The random book ``spec``, loaded (the files are read eagerly, so the folder can go)."""
    with tempfile.TemporaryDirectory() as folder:
        root, as_of = write_book(spec, Path(folder))
        return load_inputs(root, as_of).margin_inputs


def _table_scale(frame: pl.DataFrame) -> float:
    """Largest magnitude of any amount in the table: a difference such as
    ``aggregation_benefit = sum_member_im − group_im`` carries the float noise of its
    operands, not of its own (possibly tiny) value."""
    floats = [c for c, t in frame.schema.items() if t == pl.Float64]
    return max([float(frame[c].abs().max() or 0.0) for c in floats] + [1.0])


def _float_columns_match(table: str, column: str, left: pl.Series, right: pl.Series, scale: float = 1.0) -> list[str]:
    if not left.is_null().equals(right.is_null()):
        return [f"{table}.{column}: nulls differ"]
    scale = max(float(left.abs().max() or 0.0), float(right.abs().max() or 0.0), scale)
    difference = (left - right).abs().fill_null(0.0)
    worst = float(difference.max() or 0.0)
    return [f"{table}.{column}: differs by {worst:.3g} (scale {scale:.3g})"] if worst > RELATIVE * scale else []


def result_differences(left: MarginResults, right: MarginResults) -> list[str]:
    """Every way ``right`` differs from ``left`` beyond the float noise described above."""
    problems = []
    for table in RESULT_TABLES:
        a, b = left.tables[table], right.tables[table]
        if a.columns != b.columns or a.height != b.height:
            problems.append(f"{table}: shape {a.shape} vs {b.shape}")
            continue
        scale = max(_table_scale(a), _table_scale(b))
        for column, dtype in a.schema.items():
            if dtype == pl.Float64:
                problems += _float_columns_match(table, column, a[column], b[column], scale)
            elif dtype == pl.List(pl.Float64):
                if not a[column].list.len().equals(b[column].list.len()):
                    problems.append(f"{table}.{column}: list lengths differ")
                else:
                    problems += _float_columns_match(table, column, a[column].explode(), b[column].explode())
            elif not a[column].equals(b[column]):
                problems.append(f"{table}.{column}: values differ")
    if not left.counts.sort("table").equals(right.counts.sort("table")):
        problems.append("row counts differ")
    if not left.warnings.equals(right.warnings):
        problems.append("warnings differ")
    return problems


def permuted(inputs: MarginInputs, seed: int, tables: list[str]) -> MarginInputs:
    """``inputs`` with the rows of each of ``tables`` in a random order."""
    rng = np.random.default_rng(seed)
    changes = {}
    for table in tables:
        value = getattr(inputs, table)
        frame = value.collect() if isinstance(value, pl.LazyFrame) else value
        frame = frame[rng.permutation(frame.height)]
        changes[table] = frame.lazy() if isinstance(value, pl.LazyFrame) else frame
    return dataclasses.replace(inputs, **changes)


# ----------------------------------------------------------------------- reruns


@PROPERTY
@given(book=random_books)
def test_rerun_gives_the_same_results(book):
    inputs = sub_book(*book)
    assert result_differences(compute_margin(inputs), compute_margin(inputs)) == []


def test_rerun_of_the_whole_run_publishes_the_same_rows(tmp_path):
    """Two end-of-day runs of one date (no Prefect): the date's rows are replaced by equal rows."""
    import duckdb

    from flows.eod import run_end_of_day

    inputs = tmp_path / "inputs"
    shutil.copytree(EXAMPLES / EXAMPLE_BOOKS[0] / "inputs", inputs)
    db = tmp_path / "warehouse.duckdb"
    published = []
    for _ in range(2):
        record = run_end_of_day(AS_OF, inputs, db, use_tasks=False)
        con = duckdb.connect(str(db), read_only=True)
        try:
            tables = {t: con.sql(f"SELECT * EXCLUDE (run_id, as_of_date) FROM {t}").pl() for t in RESULT_TABLES}
            run_ids = con.sql("SELECT DISTINCT run_id FROM account_margin").fetchall()
            runs = con.sql("SELECT run_id, status, input_checksums FROM runs ORDER BY started_at").pl()
        finally:
            con.close()
        assert run_ids == [(record["run_id"],)]
        published.append(MarginResults(tables=_sorted(tables), counts=pl.DataFrame({"table": []}), warnings=pl.DataFrame()))
    assert result_differences(*published) == []
    assert runs["status"].to_list() == ["succeeded", "succeeded"]
    assert runs["input_checksums"][0] == runs["input_checksums"][1]


def _sorted(tables: dict[str, pl.DataFrame]) -> dict[str, pl.DataFrame]:
    keys = {"position_margin": ["account_id", "instrument_id"], "underlying_risk": ["account_id", "underlying"],
            "collateral_valuation": ["account_id", "asset"], "account_margin": ["account_id"],
            "group_margin": ["margin_group"], "quarantine": ["source_table", "reason", "row_json"],
            "stress_results": ["stress_id", "book_type", "book_id"], "stress_summary": ["stress_id"],
            "liquidation_distance": ["book_type", "book_id"]}
    return {t: frame.sort(keys[t]) for t, frame in tables.items()}


# -------------------------------------------------------------------- row order


@PROPERTY
@given(book=random_books, seed=st.integers(0, 2**32 - 1),
       tables=st.lists(st.sampled_from(INPUT_TABLES + METHODOLOGY_TABLES), min_size=1, unique=True))
def test_row_order_does_not_matter(book, seed, tables):
    """Shuffling the rows of any input tables (daily or methodology) changes nothing."""
    inputs = sub_book(*book)
    assert result_differences(compute_margin(inputs), compute_margin(permuted(inputs, seed, tables))) == []


def test_every_table_reversed():
    """A fixed case alongside the random ones: every table of book B in reverse order."""
    inputs = loaded(EXAMPLE_BOOKS[1])
    changes = {}
    for table in INPUT_TABLES + METHODOLOGY_TABLES:
        value = getattr(inputs, table)
        changes[table] = value.reverse() if isinstance(value, pl.DataFrame) else value.collect().reverse().lazy()
    assert result_differences(compute_margin(inputs), compute_margin(dataclasses.replace(inputs, **changes))) == []


# ------------------------------------------------------------------- row groups


@PROPERTY
@given(book=random_books, row_group_size=st.integers(1, 64), seed=st.integers(0, 2**32 - 1))
def test_positions_row_groups_do_not_matter(book, row_group_size, seed):
    """The same positions written as one row group or as many (of random size, in a random
    row order) give the same results through the loader."""
    with tempfile.TemporaryDirectory() as folder:
        root, as_of = write_book(book, Path(folder))
        whole = compute_margin(load_inputs(root, as_of).margin_inputs)
        path = root / f"date={as_of}" / "positions.parquet"
        positions = pl.read_parquet(path)
        path.unlink()
        positions[np.random.default_rng(seed).permutation(positions.height)].write_parquet(
            path, row_group_size=row_group_size
        )
        assert pq.ParquetFile(path).num_row_groups == max(1, -(-positions.height // row_group_size))
        split = compute_margin(load_inputs(root, as_of).margin_inputs)
    assert result_differences(whole, split) == []


def test_one_row_per_row_group():
    """The extreme split, every position row its own row group, on the whole of book A."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "inputs"
        shutil.copytree(EXAMPLES / EXAMPLE_BOOKS[0] / "inputs", root)
        path = root / f"date={AS_OF}" / "positions.parquet"
        frame = pl.read_parquet(path)
        path.unlink()
        frame.write_parquet(path, row_group_size=1)
        assert pq.ParquetFile(path).num_row_groups == frame.height
        split = compute_margin(load_inputs(root, AS_OF).margin_inputs)
    assert result_differences(compute_margin(loaded(EXAMPLE_BOOKS[0])), split) == []


def test_differences_are_detected():
    """The comparison is not blind: one changed amount is reported."""
    results = compute_margin(loaded(EXAMPLE_BOOKS[0]))
    tables = dict(results.tables)
    tables["account_margin"] = tables["account_margin"].with_columns(pl.col("im") * (1 + 1e-9))
    changed = dataclasses.replace(results, tables=tables)
    problems = result_differences(results, changed)
    assert len(problems) == 1 and problems[0].startswith("account_margin.im: differs by")
