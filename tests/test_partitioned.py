"""The one compute path (flows.partitioned.compute_day) with 1 and several margin-group
partitions, in process and on Dask, gives the whole-book results (``compute_margin``).

Given a book (the worked examples, and a small generated book with groups, accounts
missing from ``accounts`` and deliberately bad rows), expect every output table, the
quarantine, the counts and the warnings of ``compute_day`` read back from its part files
to equal ``compute_margin``'s — bit for bit (SPEC §8).
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from conftest import EXAMPLES
from market.generate import generate_day
from flows.loading import load_inputs
from flows.partitioned import STREAMED_TABLES, DayResults, auto_partitions, compute_day, on_dask, split_day
from transforms.contract import RESULT_KEYS
from transforms.identities import count_violations
from transforms.pipeline import MarginResults, compute_margin

EXAMPLE_DATE = dt.date(2025, 3, 14)
GENERATED_DATE = dt.date(2026, 11, 16)


def read_day(day: DayResults) -> MarginResults:
    """The day's part files read back whole, each table sorted by its key (small books only)."""
    tables = {name: pl.read_parquet(files).sort(RESULT_KEYS[name]) for name, files in day.tables.items()}
    return MarginResults(tables=tables, counts=day.counts, warnings=day.warnings, scenario_ids=day.scenario_ids)


def assert_same_results(single: MarginResults, day: DayResults) -> None:
    """Every table, the quarantine, counts and warnings exactly equal (SPEC §8)."""
    assert day.problems == []
    partitioned = read_day(day)
    assert single.tables.keys() == partitioned.tables.keys()
    for name, expected in single.tables.items():
        assert_frame_equal(partitioned.tables[name], expected, check_exact=True), name
    assert_frame_equal(partitioned.counts, single.counts)
    assert_frame_equal(partitioned.warnings, single.warnings)
    assert partitioned.scenario_ids == single.scenario_ids


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory):
    """300 accounts, ≈3,000 position rows, margin groups and bad rows (quarantine)."""
    root = tmp_path_factory.mktemp("generated")
    generate_day(root, GENERATED_DATE, 300)
    return root


@pytest.fixture(scope="module")
def generated_book(generated_root):
    return load_inputs(generated_root, GENERATED_DATE).margin_inputs


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("book", ["book_a_12_accounts", "book_b_40_accounts_custom_grid"])
def test_worked_examples_by_partitions_equal_whole_book(book, partitions, tmp_path):
    inputs = load_inputs(EXAMPLES / book / "inputs", EXAMPLE_DATE, scan=STREAMED_TABLES).margin_inputs
    assert_same_results(compute_margin(inputs), compute_day(inputs, partitions, tmp_path))


def test_generated_book_partitioned_equal_single_process(generated_book, tmp_path):
    single = compute_margin(generated_book)
    assert single.tables["quarantine"].height > 0 and single.tables["group_margin"].height > 0
    assert_same_results(single, compute_day(generated_book, 4, tmp_path))


def test_streamed_to_files_equal_single_process(generated_root, generated_book, tmp_path):
    """Inputs streamed from their files, results written per partition: the same day."""
    scanned = load_inputs(generated_root, GENERATED_DATE, scan=STREAMED_TABLES).margin_inputs
    assert isinstance(scanned.positions, pl.LazyFrame)
    stored = compute_day(scanned, 4, tmp_path)
    assert_same_results(compute_margin(generated_book), stored)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(stored.tables)  # the spill files are gone
    assert [p.name for p in stored.tables["position_margin"]] == [f"part-{i:05d}.parquet" for i in range(4)]
    assert stored.tables["quarantine"][-1].name == "part-shared.parquet"
    for table, files in stored.tables.items():
        assert stored.rows[table] == pl.scan_parquet(files).select(pl.len()).collect().item(), table
    reasons = stored.quarantine_reasons()
    assert reasons["len"].sum() == stored.rows["quarantine"] == compute_margin(generated_book).tables["quarantine"].height


def test_day_count_identities_can_fail():
    counts = pl.DataFrame({"table": ["positions", "prices"], "read": [10, 5], "used": [8, 5], "quarantined": [2, 0]})
    assert count_violations(counts, {"positions": 2}) == []
    assert count_violations(counts, {"positions": 1}) == ["positions: 1 quarantine rows, counted 2"]
    assert count_violations(counts, {"positions": 2, "prices": 1}) == ["prices: 1 quarantine rows, counted 0"]
    short = counts.with_columns(pl.when(pl.col("table") == "prices").then(4).otherwise("used").alias("used"))
    assert count_violations(short, {"positions": 2}) == ["prices: read 5 != used 4 + quarantined 0"]


def test_auto_partitions_by_position_rows():
    assert [auto_partitions(n) for n in (0, 3_000, 4_941_520, 5_000_000, 5_000_001, 9_882_820, 98_828_200)] == [
        1, 1, 1, 1, 2, 2, 20]


def test_one_partition_is_the_day_itself(generated_book, tmp_path):
    assert split_day(generated_book, 1, tmp_path) == [generated_book]
    assert not (tmp_path / "positions").exists()  # no spill


def test_up_to_three_partitions_read_their_rows_without_a_spill(generated_book, tmp_path):
    """Two partitions: each reads its own rows of the day's tables (no spill files); every
    position and collateral row is in exactly one of them; four partitions spill."""
    parts = split_day(generated_book, 2, tmp_path)
    assert not list(tmp_path.iterdir())
    for table in STREAMED_TABLES:
        whole = getattr(generated_book, table).collect()
        pieces = pl.concat([getattr(part, table).collect() for part in parts])
        assert pieces.height == whole.height
        assert_frame_equal(pieces.sort(pl.all()), whole.sort(pl.all()))
    split_day(generated_book, 4, tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(STREAMED_TABLES)


@pytest.mark.parametrize("partitions", [2, 4])
def test_a_margin_group_stays_in_one_partition(generated_book, tmp_path, partitions):
    parts = split_day(generated_book, partitions, tmp_path)
    owners = pl.concat(
        [part.accounts.select("margin_group", pl.lit(i).alias("partition")) for i, part in enumerate(parts)]
    ).drop_nulls("margin_group").unique().collect()
    assert owners["margin_group"].is_duplicated().sum() == 0
    seen = pl.concat([part.positions.select("account_id").unique() for part in parts]).collect()
    assert seen["account_id"].is_duplicated().sum() == 0


def test_the_next_partition_is_resolved_while_one_computes(generated_book, tmp_path, monkeypatch):
    """``run_in_process`` resolves partition i+1 on a second thread while partition i
    computes: the second ``resolve_day`` starts before the first partition's margin is done."""
    from flows import partitioned

    events = []
    real_resolve, real_margin = partitioned.resolve_day, partitioned.margin_partition

    def resolve(partition, shared):
        events.append("resolve starts")
        return real_resolve(partition, shared)

    def margin(resolved, **kwargs):
        results = real_margin(resolved, **kwargs)
        events.append("margin done")
        return results

    monkeypatch.setattr(partitioned, "resolve_day", resolve)
    monkeypatch.setattr(partitioned, "margin_partition", margin)
    stored = compute_day(generated_book, 2, tmp_path)
    assert events[:3] == ["resolve starts", "resolve starts", "margin done"]
    assert_same_results(compute_margin(generated_book), stored)


def test_two_dask_workers_equal_single_process(generated_book, prefect_api, tmp_path):
    single = compute_margin(generated_book)
    stored = compute_day(generated_book, 2, tmp_path, on_dask(workers=2, processes=False))
    assert_same_results(single, stored)


def test_a_failed_save_can_be_retried_with_the_part_files(generated_book, tmp_path, monkeypatch):
    """The save task retries on OSError: a second attempt of the same run finds its part
    files (linked, not moved) and replaces its own half-written staging folder."""
    from flows import results_store

    results_dir = tmp_path / "warehouse.duckdb.results"
    with results_store.scratch_folder(results_dir, GENERATED_DATE, "run-1") as scratch:
        stored = compute_day(generated_book, 3, scratch)
        real_fsync_dir = results_store._fsync_dir
        failures = iter([OSError(28, "No space left on device")])

        def flaky_fsync_dir(path):
            failure = next(failures, None) if path.name.endswith("staging-run-1") else None
            if failure is not None:
                raise failure
            real_fsync_dir(path)

        monkeypatch.setattr(results_store, "_fsync_dir", flaky_fsync_dir)
        with pytest.raises(OSError, match="No space"):
            results_store.save_results(results_dir, GENERATED_DATE, "run-1", stored.tables, {"run_id": "run-1"})
        final = results_store.save_results(results_dir, GENERATED_DATE, "run-1", stored.tables, {"run_id": "run-1"})
    files, record = results_store.load_results(results_dir, GENERATED_DATE)
    assert record == {"run_id": "run-1"} and final.name == f"date={GENERATED_DATE}"
    assert {t: len(f) for t, f in files.items()} == {t: len(f) for t, f in stored.tables.items()}
    assert pl.scan_parquet(files["position_margin"]).select(pl.len()).collect().item() == stored.rows["position_margin"]
    assert sorted(p.name for p in results_dir.iterdir()) == [final.name]  # scratch and staging gone


def test_merged_warnings_do_not_depend_on_how_the_day_was_partitioned():
    """The run record samples the first warnings of each code, so their order is fixed by
    their values (code, account, then detail), not by which partition raised them."""
    from flows.partitioned import merge_warnings

    raised = pl.DataFrame({"code": ["ghost", "ghost", "ghost", "fx"], "account_id": ["A2", "A1", "A1", None],
                           "detail": ["d", "second", "first", "z"]})
    one_partition = merge_warnings([raised])
    three_partitions = merge_warnings([raised[2:], raised[:1], raised[1:2]])
    assert one_partition.equals(three_partitions)
    assert one_partition.rows() == [("fx", None, "z"), ("ghost", "A1", "first"), ("ghost", "A1", "second"),
                                    ("ghost", "A2", "d")]
