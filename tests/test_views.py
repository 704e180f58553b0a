"""The analyst views of sql/views/: created with the schema, grain as stated, identities hold,
and usable from a plain DuckDB connection (no Python functions)."""

from __future__ import annotations

import duckdb
import pytest

from published_books import DAY, PREVIOUS_DAY, shared_warehouse
from flows.settings import SQL_DIR

VIEWS = sorted(p.stem for p in (SQL_DIR / "views").glob("*.sql"))


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    db, _ = shared_warehouse(tmp_path_factory)
    connection = duckdb.connect(str(db), read_only=True)  # a plain analyst session
    yield connection
    connection.close()


def rows(con, sql: str, params=None) -> list[dict]:
    frame = con.sql(sql, params=params).pl() if params else con.sql(sql).pl()
    return frame.to_dicts()


def test_every_view_file_states_its_grain_and_exists(con):
    assert len(VIEWS) >= 9
    existing = {r["view_name"] for r in rows(con, "SELECT view_name FROM duckdb_views() WHERE NOT internal")}
    for name in VIEWS:
        assert (SQL_DIR / "views" / f"{name}.sql").read_text().startswith("-- grain: ")
        assert name in existing
        con.sql(f"SELECT * FROM {name} LIMIT 1").fetchall()


@pytest.mark.parametrize("view, key", [
    ("v_account_latest", "account_id"),
    ("v_margin_calls", "as_of_date, account_id"),
    ("v_netting_benefit_by_mode", "as_of_date, margin_mode"),
    ("v_netting_benefit_by_group", "as_of_date, margin_group"),
    ("v_netting_benefit_by_underlying", "as_of_date, underlying"),
    ("v_risk_by_underlying", "as_of_date, underlying"),
    ("v_collateral_concentration", "as_of_date, asset"),
    ("v_account_change", "as_of_date, account_id"),
    ("v_quarantine_summary", "as_of_date, source_table, reason"),
    ("v_liquidation_distance", "as_of_date, book_type, book_id"),
    ("v_stress_cover", "as_of_date, stress_id"),
    ("v_position_contribution", "as_of_date, account_id, instrument_id"),
])
def test_grain_is_unique(con, view, key):
    duplicates = rows(con, f"SELECT {key}, count(*) AS n FROM {view} GROUP BY ALL HAVING n > 1")
    assert duplicates == []


def test_latest_per_account(con):
    latest = rows(con, "SELECT DISTINCT as_of_date, is_latest_date FROM v_account_latest")
    assert latest == [{"as_of_date": DAY, "is_latest_date": True}]


def test_margin_calls_say_why(con):
    calls = {r["account_id"]: r for r in rows(con, "SELECT * FROM v_margin_calls WHERE as_of_date = ?", [DAY])}
    assert set(calls) == {"ACC0004", "ACC0009"}
    unknown = calls["ACC0004"]  # not in accounts: mode unknown, im = max of the three (SPEC §2)
    assert unknown["binding_level"] == "account" and unknown["im_basis"].startswith("gross_im (mode unknown")
    assert unknown["why"] == "equity <= 0" and unknown["deficit"] == pytest.approx(unknown["im"] - unknown["equity"])
    member = calls["ACC0009"]  # GRP00's only member, isolated
    assert member["binding_level"] == "group" and member["im_basis"] == "gross_im"
    assert "margin group GRP00 is liquidation" in member["why"]
    assert member["binding_deficit"] == pytest.approx(-member["group_excess"])


def test_netting_benefit_adds_up(con):
    by_mode = rows(con, "SELECT sum(netting_benefit) AS b, sum(gross_im - im) AS check_b FROM v_netting_benefit_by_mode "
                        "WHERE as_of_date = ?", [DAY])[0]
    assert by_mode["b"] == pytest.approx(by_mode["check_b"])
    groups = {r["margin_group"]: r for r in rows(con, "SELECT * FROM v_netting_benefit_by_group WHERE as_of_date = ?", [DAY])}
    assert set(groups) == {"(none)", "GRP00", "GRP01"}
    grp01 = groups["GRP01"]
    assert grp01["total_benefit"] == pytest.approx(grp01["member_netting_benefit"] + grp01["aggregation_benefit"])
    assert grp01["aggregation_benefit"] == pytest.approx(51576.56196010005)  # expected.json of book A
    totals = rows(con, "SELECT sum(gross_im) AS g, sum(net_im) AS n FROM position_margin WHERE as_of_date = ?", [DAY])[0]
    by_underlying = rows(con, "SELECT sum(gross_im) AS g, sum(rule_netting_benefit) AS b "
                              "FROM v_netting_benefit_by_underlying WHERE as_of_date = ?", [DAY])[0]
    assert by_underlying["g"] == pytest.approx(totals["g"])
    assert by_underlying["b"] == pytest.approx(totals["g"] - totals["n"])


def test_risk_by_underlying_and_its_worst_scenario(con):
    risk = {r["underlying"]: r for r in rows(con, "SELECT * FROM v_risk_by_underlying WHERE as_of_date = ?", [DAY])}
    assert set(risk) == {"BTC", "ETH", "SOL"}
    # the worst scenario of the whole book is the argmax of the summed losses, recomputed here
    losses = rows(con, "SELECT underlying, scenario_losses FROM underlying_risk WHERE as_of_date = ?", [DAY])
    summed = []
    for underlying in risk:
        books = [r["scenario_losses"] for r in losses if r["underlying"] == underlying]
        summed.append({"underlying": underlying, "total": [sum(k) for k in zip(*books)]})
    for row in summed:
        worst = max(row["total"])
        assert risk[row["underlying"]]["worst_scenario_loss"] == pytest.approx(max(worst, 0))
        assert risk[row["underlying"]]["worst_scenario_position"] == row["total"].index(worst) + 1
        assert risk[row["underlying"]]["worst_scenario"] == row["total"].index(worst) + 1  # ids 1..16 here


def test_collateral_shares(con):
    assets = rows(con, "SELECT * FROM v_collateral_concentration WHERE as_of_date = ?", [DAY])
    assert sum(a["share_of_collateral"] for a in assets) == pytest.approx(1.0)
    total = rows(con, "SELECT sum(collateral_value_usd) AS v FROM account_margin WHERE as_of_date = ?", [DAY])[0]["v"]
    assert sum(a["collateral_value_usd"] for a in assets) == pytest.approx(total)
    assert {a["asset"]: a["eligible"] for a in assets}["MEME"] is False


def test_day_over_day_drivers_add_up(con):
    changes = rows(con, "SELECT * FROM v_account_change")
    assert {r["as_of_date"] for r in changes} == {DAY} and {r["prev_date"] for r in changes} == {PREVIOUS_DAY}
    for r in changes:
        assert r["im_change"] == pytest.approx(r["im_price_effect"] + r["im_position_effect"], abs=1e-6)
        assert r["equity_change"] == pytest.approx(
            r["equity_collateral_effect"] + r["equity_price_effect"] + r["equity_position_effect"], abs=1e-6)
    by_account = {r["account_id"]: r for r in changes}
    # ACC0005 kept the same positions: its whole position-value change is price (prices are 5 % up)
    assert by_account["ACC0005"]["equity_position_effect"] == pytest.approx(0, abs=1e-6)
    # collateral was 10 % larger yesterday, so the collateral driver is negative for holders
    assert by_account["ACC0001"]["equity_collateral_effect"] < 0
    # a cross account's im is net_im: its price effect is exact (same positions, prices × 1/0.95)
    cross = rows(con, """
        SELECT c.account_id, c.im_price_effect, c.im_change FROM v_account_change c
        JOIN account_margin a ON a.account_id = c.account_id AND a.as_of_date = c.as_of_date
        WHERE a.margin_mode = 'cross' AND c.account_id = 'ACC0010'""")
    assert cross and cross[0]["im_price_effect"] == pytest.approx(cross[0]["im_change"], rel=1e-9)


def test_quarantine_summary_reconciles_with_the_run(con):
    summary = rows(con, "SELECT * FROM v_quarantine_summary WHERE as_of_date = ? ORDER BY reason", [DAY])
    assert [(r["reason"], r["rows"], r["rows_read"]) for r in summary] == [
        ("expired_instrument", 1, 200), ("unknown_instrument", 1, 200)]
    assert summary[0]["share_of_table"] == pytest.approx(1 / 200)


def test_within_ten_percent_of_liquidation_is_one_query(con):
    """Book A (tests/data/examples expected.json): ACC0004 and GRP00 are already below mm
    (distance 0); ACC0008 breaches at −25 %, ACC0011 at +45 %; the others never."""
    near = rows(con, "SELECT book_type, book_id, distance, nearer_side, status FROM v_liquidation_distance "
                     "WHERE as_of_date = ? AND distance <= 0.10 ORDER BY distance, book_type, book_id", [DAY])
    assert [(r["book_type"], r["book_id"], r["distance"]) for r in near] == [
        ("account", "ACC0004", 0.0), ("group", "GRP00", 0.0)]
    assert all(r["nearer_side"] == "already below mm" and r["status"] == "liquidation" for r in near)
    acc8 = rows(con, "SELECT * FROM v_liquidation_distance WHERE as_of_date = ? AND book_id = 'ACC0008'", [DAY])[0]
    assert (acc8["move_down"], acc8["move_up"], acc8["distance"], acc8["nearer_side"]) == (-0.25, None, 0.25, "down")
    # members of a group are not counterparties of their own
    assert rows(con, "SELECT * FROM v_liquidation_distance WHERE book_id = 'ACC0009'") == []


def test_stress_cover_names_who_makes_cover_2(con):
    cover = {r["stress_id"]: r for r in rows(con, "SELECT * FROM v_stress_cover WHERE as_of_date = ?", [DAY])}
    assert len(cover) == 24
    up20 = cover["ladder_up_20"]  # GRP00 183,473.12 then ACC0004 19,601.12: Cover 2 = 203,074.24
    assert (up20["cover1_counterparty"], up20["cover2_counterparty"], up20["ladder_move"]) == (
        "group GRP00", "account ACC0004", 0.2)
    assert up20["cover2_usd"] == pytest.approx(203_074.240576, rel=1e-9)
    assert up20["second_shortfall_usd"] == pytest.approx(203_074.240576 - 183_473.117568, rel=1e-8)
    crash = cover["crypto_crash"]
    assert crash["ladder_move"] is None and crash["cover2_counterparty"] is None
    assert crash["cover1_counterparty"] == "account ACC0004" and crash["cover1_lei"] is None  # not in accounts


def test_position_contribution_ranks_the_drivers_of_scan_risk(con):
    """Shares of an account's scan risk sum to 1; rank 1 is the largest worst-scenario loss; the
    book's rank 1 is the largest over every account."""
    contributions = rows(con, "SELECT * FROM v_position_contribution WHERE as_of_date = ?", [DAY])
    scan = {r["account_id"]: r["scan"] for r in rows(
        con, "SELECT account_id, sum(scan_risk) AS scan FROM underlying_risk WHERE as_of_date = ? GROUP BY 1", [DAY])}
    by_account: dict[str, list[dict]] = {}
    for row in contributions:
        by_account.setdefault(row["account_id"], []).append(row)
    assert len(by_account) >= 8
    for account, positions in by_account.items():
        assert sum(p["worst_scenario_loss"] for p in positions) == pytest.approx(scan[account], rel=1e-9)
        assert sum(p["share_of_account_scan_risk"] for p in positions) == pytest.approx(1.0, rel=1e-9)
        top = min(positions, key=lambda p: p["rank_in_account"])
        assert top["worst_scenario_loss"] == max(p["worst_scenario_loss"] for p in positions)
    book_top = min(contributions, key=lambda p: p["rank_in_book"])
    assert book_top["worst_scenario_loss"] == max(p["worst_scenario_loss"] for p in contributions)
    assert sum(p["share_of_book_scan_risk"] for p in contributions) == pytest.approx(1.0, rel=1e-9)
    grouped = [p for p in contributions if p["margin_group"] is not None]
    assert grouped and all(p["rank_in_group"] is not None for p in grouped)
