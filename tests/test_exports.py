"""``margin export`` (SPEC §10): EMIR margin report checks, formats and round trips; analyst
extracts with row_hash and manifest; byte-identical reruns; nothing outside --out."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from decimal import Decimal

import polars as pl
import pytest
from lxml import etree

from conftest import margin_cli
from outputs.exports import (
    AUTH_108_NAMESPACE, FIELD_NAMES, ExportError, _valid_leis, check_record, emir_csv_bytes, emir_csv_frame_bytes,
    emir_xml_bytes, emir_xml_frame_bytes, export_files, format_decimal, format_decimals, lei_problem,
    parse_emir_csv, parse_emir_xml, portfolio_code, portfolio_codes, record_rejections, row_hash, safe_component,
)
from published_books import DAY, INVALID_LEI, INVALID_LEI_ACCOUNT, shared_warehouse, valid_lei

REPORTING_TIME = dt.datetime(2025, 3, 15, 6, 30, 0, tzinfo=dt.timezone.utc)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    return shared_warehouse(tmp_path_factory)


def export(book, fmt, out, **options):
    db, inputs = book
    return export_files(db, DAY, fmt, out, REPORTING_TIME, inputs=inputs, **options)


# --- value checks ----------------------------------------------------------------------

def test_lei_vectors():
    assert lei_problem("724500VKKSH9QOLTFR81") is None
    assert "MOD 97-10" in lei_problem("969500T3MBS4SQAMHJ45")
    assert "20" in lei_problem("724500VKKSH9QOLTFR8")  # 19 characters
    assert lei_problem("724500vkksh9qoltfr81") is not None  # lower case is not an LEI as reported
    assert lei_problem("7245-0VKKSH9QOLTFR81") is not None
    assert lei_problem(None) == "LEI is missing"
    assert lei_problem(valid_lei("ACC0042")) is None


@pytest.mark.parametrize("value, text", [
    (0.000005, "0.00001"),          # half up, from the decimal the float stands for
    (0.000004999, "0"),
    (-0.000001, "0"),               # no negative zero
    (2.675, "2.675"),
    (1.123455, "1.12346"),          # half up at the 6th decimal (half even would give the same; next one differs)
    (1.123445, "1.12345"),          # half even would give 1.12344
    (1e-7, "0"),
    (1e20, "100000000000000000000"),  # no exponent
    (123456789.5, "123456789.5"),
    (100.0, "100"),
    (0, "0"),
    (Decimal("12.345678"), "12.34568"),
])
def test_decimal_formatting(value, text):
    assert format_decimal(value) == text


def test_non_finite_amount_is_refused():
    with pytest.raises(ValueError, match="not a finite number"):
        format_decimal(float("nan"))


def good_record() -> dict:
    lei = "724500VKKSH9QOLTFR81"
    return {
        "reporting_timestamp": "2025-03-15T06:30:00Z", "report_submitting_entity_id": lei,
        "entity_responsible_for_reporting": lei, "counterparty_1": lei, "counterparty_2_identifier_type": "true",
        "counterparty_2": valid_lei("ACC0001"), "collateral_timestamp": "2025-03-14T23:59:59Z",
        "collateral_portfolio_indicator": "true", "collateral_portfolio_code": "MRGACC0001", "uti": "",
        "collateralisation_category": "OWC2", "initial_margin_collected_pre_haircut": "100.5",
        "initial_margin_collected_post_haircut": "90", "currency_of_initial_margin_collected": "USD",
        "variation_margin_collected_pre_haircut": "0", "variation_margin_collected_post_haircut": "0",
        "currency_of_variation_margin_collected": "USD", "action_type": "MARU", "event_date": "2025-03-14",
    }


def test_a_good_record_passes():
    assert check_record(good_record(), DAY) == []


@pytest.mark.parametrize("changes, reason", [
    ({"counterparty_2": INVALID_LEI}, "MOD 97-10"),
    ({"counterparty_1": "ABC"}, "not 20"),
    ({"initial_margin_collected_post_haircut": "100.6"}, "exceeds"),
    ({"initial_margin_collected_pre_haircut": "-1"}, "negative"),
    ({"initial_margin_collected_pre_haircut": "1.123456"}, "more than 5 decimals"),
    ({"initial_margin_collected_pre_haircut": "12345678901234567890123456"}, "more than 25 digits"),
    ({"initial_margin_collected_pre_haircut": "1E+3"}, "exponent"),
    ({"currency_of_initial_margin_collected": "XBT"}, "ISO 4217"),
    ({"currency_of_variation_margin_collected": ""}, "requires variation margin"),
    ({"collateralisation_category": "UNCL"}, "excludes initial margin"),
    ({"collateralisation_category": "OWC9"}, "is not one of"),
    ({"uti": "UTI123"}, "blank for portfolio"),
    ({"collateral_timestamp": "2025-03-13T23:59:59Z"}, "not on the as-of date"),
    ({"reporting_timestamp": "2025-03-15 06:30:00"}, "YYYY-MM-DDThh:mm:ssZ"),
    ({"collateral_portfolio_code": "MRG-ACC"}, "1-52 letters or digits"),
])
def test_a_broken_record_is_rejected_with_its_reason(changes, reason):
    reasons = check_record({**good_record(), **changes}, DAY)
    assert any(reason in r for r in reasons), reasons


def test_portfolio_codes_are_stable_alphanumeric_and_short():
    assert portfolio_code("ACC0001") == "MRGACC0001"
    odd = portfolio_code("desk/α 7")
    assert odd == portfolio_code("desk/α 7") and odd.isalnum() and len(odd) == 52


def test_file_name_parts_cannot_escape():
    assert safe_component("../../etc/passwd") == "______etc_passwd"
    assert safe_component("") == "_"


# --- EMIR report -------------------------------------------------------------------------

def test_rejected_record_blocks_the_export_unless_partial(book, tmp_path):
    result = export(book, "emir-csv", tmp_path)
    assert [a for a, _ in result.rejected] == [INVALID_LEI_ACCOUNT]
    assert "MOD 97-10" in result.rejected[0][1][0]
    assert not result.written and result.files == []
    assert [p.name for p in tmp_path.iterdir()] == [result.rejections_file.name]
    listed = list(csv.reader(io.StringIO(result.rejections_file.read_text())))
    assert listed[1][0] == INVALID_LEI_ACCOUNT and INVALID_LEI in listed[1][1]


@pytest.mark.parametrize("fmt", ["emir-csv", "emir-xml"])
def test_emir_export_round_trips_and_passes_its_own_checks(book, tmp_path, fmt):
    result = export(book, fmt, tmp_path, allow_partial=True)
    assert result.written and len(result.files) == 1
    payload = result.files[0].read_bytes()
    records = parse_emir_csv(payload) if fmt == "emir-csv" else parse_emir_xml(payload)
    # 12 accounts on the day, all hold positions or collateral; ACC0003 is rejected
    assert len(records) == result.records == 11
    assert all(check_record(r, DAY) == [] for r in records)
    by_party = {r["collateral_portfolio_code"]: r for r in records}
    assert "MRG" + INVALID_LEI_ACCOUNT not in by_party
    assert by_party["MRGACC0007"]["counterparty_2_identifier_type"] == "false"  # no LEI: account id
    assert by_party["MRGACC0007"]["counterparty_2"] == "ACC0007"
    assert by_party["MRGACC0000"]["variation_margin_collected_pre_haircut"] == "1234.56789"  # 1234.567891
    assert by_party["MRGACC0002"]["variation_margin_collected_pre_haircut"] == "0.00001"  # 0.000005 half up
    assert by_party["MRGACC0001"]["variation_margin_collected_pre_haircut"] == "0"  # not in the file
    assert {r["reporting_timestamp"] for r in records} == {"2025-03-15T06:30:00Z"}
    manifest = json.loads(result.manifest.read_text())
    assert manifest["files"][0]["sha256"] == hashlib.sha256(payload).hexdigest()
    assert manifest["rejected_records"][0]["account_id"] == INVALID_LEI_ACCOUNT


def test_emir_amounts_match_the_warehouse(book, tmp_path):
    db, _ = book
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        pre, post = con.sql(
            "SELECT sum(value_usd), sum(value_after_haircut_usd) FROM collateral_valuation "
            "WHERE as_of_date = ? AND account_id = 'ACC0000' AND value_usd > 0", params=[DAY]
        ).fetchall()[0]
    finally:
        con.close()
    records = parse_emir_csv(export(book, "emir-csv", tmp_path, allow_partial=True).files[0].read_bytes())
    acc0 = next(r for r in records if r["collateral_portfolio_code"] == "MRGACC0000")
    assert Decimal(acc0["initial_margin_collected_pre_haircut"]) == pytest.approx(Decimal(repr(pre)), abs=Decimal("0.00001"))
    assert Decimal(acc0["initial_margin_collected_post_haircut"]) == pytest.approx(Decimal(repr(post)), abs=Decimal("0.00001"))


def test_xml_is_well_formed_in_the_auth_108_namespace(book, tmp_path):
    payload = export(book, "emir-xml", tmp_path, allow_partial=True).files[0].read_bytes()
    root = etree.fromstring(payload)
    assert root.tag == f"{{{AUTH_108_NAMESPACE}}}Document"
    ns = {"d": AUTH_108_NAMESPACE}
    assert root.findtext("d:DerivsTradMrgnDataRpt/d:RptHdr/d:NbRcrds", namespaces=ns) == "11"
    amounts = root.findall(".//d:RcvdMrgnOrColl/*", ns)
    assert amounts and all(a.get("Ccy") == "USD" for a in amounts)


def test_csv_is_rfc_4180(book, tmp_path):
    payload = export(book, "emir-csv", tmp_path, allow_partial=True).files[0].read_bytes()
    assert payload.count(b"\r\n") == 12 and b"\n" not in payload.replace(b"\r\n", b"")
    assert not payload.startswith(b"\xef\xbb\xbf")  # no BOM


def test_same_inputs_and_reporting_time_give_the_same_bytes(book, tmp_path):
    for fmt in ("emir-xml", "csv", "parquet"):
        first = export(book, fmt, tmp_path / "one", allow_partial=True)
        second = export(book, fmt, tmp_path / "two", allow_partial=True)
        for a, b in zip(first.files + [first.manifest], second.files + [second.manifest]):
            assert a.name == b.name and a.read_bytes() == b.read_bytes()


def test_missing_variation_margin_file_gives_zero_with_a_warning(book, tmp_path):
    db, _ = book
    result = export_files(db, DAY, "emir-csv", tmp_path, REPORTING_TIME, allow_partial=True, inputs=tmp_path / "none")
    assert any("variation_margin.parquet not found" in w for w in result.warnings)
    records = parse_emir_csv(result.files[0].read_bytes())
    assert {r["variation_margin_collected_pre_haircut"] for r in records} == {"0"}


def test_date_without_results_is_a_clear_error(book, tmp_path):
    db, inputs = book
    with pytest.raises(ExportError, match="no results for 2025-03-20"):
        export_files(db, dt.date(2025, 3, 20), "emir-csv", tmp_path, REPORTING_TIME, inputs=inputs)
    with pytest.raises(ExportError, match="--format must be one of"):
        export_files(db, DAY, "xlsx", tmp_path)


# --- analyst extracts -------------------------------------------------------------------

def test_csv_extract_row_hash_is_recomputable_from_the_file(book, tmp_path):
    result = export(book, "csv", tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["account_margin_2025-03-14.csv", "collateral_valuation_2025-03-14.csv",
                     "manifest_csv_2025-03-14.json"]
    manifest = json.loads(result.manifest.read_text())
    for path, entry in zip(result.files, manifest["files"]):
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
        header, body = rows[0], rows[1:]
        assert header[-1] == "row_hash" and "run_id" not in header and header[0] == "as_of_date"
        assert entry["rows"] == len(body) and entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        buffer = io.StringIO(newline="")
        for row in body:
            buffer.seek(0), buffer.truncate()
            csv.writer(buffer, lineterminator="").writerow(row[:-1])
            assert hashlib.sha256(buffer.getvalue().encode()).hexdigest() == row[-1]
    assert [e["rows"] for e in manifest["files"]] == [12, 28]


def test_parquet_extract_matches_csv_hashes(book, tmp_path):
    csv_result = export(book, "csv", tmp_path / "csv")
    parquet_result = export(book, "parquet", tmp_path / "parquet")
    for csv_path, parquet_path in zip(csv_result.files, parquet_result.files):
        frame = pl.read_parquet(parquet_path)
        from_csv = [row[-1] for row in csv.reader(io.StringIO(csv_path.read_text()))][1:]
        assert frame["row_hash"].to_list() == from_csv
        first = frame.drop("row_hash").row(0)
        assert row_hash(list(first)) == frame["row_hash"][0]


def test_row_hash_ignores_the_run_id_and_sees_a_changed_figure():
    assert row_hash(["2025-03-14", "ACC0001", 1.5, None, True]) == row_hash(["2025-03-14", "ACC0001", 1.5, None, True])
    assert row_hash(["2025-03-14", "ACC0001", 1.5]) != row_hash(["2025-03-14", "ACC0001", 1.5000001])


def test_cli_exit_codes(book, tmp_path):
    db, inputs = book
    common = ["--date", DAY.isoformat(), "--db", str(db), "--inputs", str(inputs),
              "--reporting-time", "2025-03-15T06:30:00Z", "--format", "emir-xml", "--out", str(tmp_path)]
    refused = margin_cli("export", *common)
    assert refused.returncode == 1
    assert f"rejected {INVALID_LEI_ACCOUNT}:" in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("margin: error: 1 record(s) failed their checks")
    partial = margin_cli("export", *common, "--allow-partial")
    assert partial.returncode == 0, partial.stderr
    assert (tmp_path / "emir_margin_5493001KJTIIGC8Y1R12_2025-03-14.xml").exists()


# --- the EMIR report is built by column; each step gives what the record-by-record one did --

def test_vectorised_decimal_format_is_format_decimal():
    import numpy as np

    rng = np.random.default_rng(16)
    values = np.concatenate([
        rng.random(20_000) * 10.0 ** rng.integers(-9, 19, 20_000),  # every magnitude, exponents included
        rng.integers(0, 10**7, 5_000) / 100.0, -rng.random(2_000) * 1e6,
        [0.0, -0.0, 5.0, 0.000005, -0.000005, 0.000015, 1234.567891, 99999.999995, 1e13, 123456789012345.67,
         float("nan"), float("inf"), -float("inf"), 1e-320],
    ])
    expected = []
    for value in values.tolist():
        try:
            expected.append(format_decimal(value))
        except ValueError:
            expected.append(str(value))
    assert format_decimals(pl.Series(values)).to_list() == expected


def test_vectorised_lei_check_and_portfolio_codes_agree_with_the_one_by_one_functions():
    leis = [valid_lei("5493001KJTIIGC8Y1R"), INVALID_LEI, "724500VKKSH9QOLTFR81", "969500T3MBS4SQAMHJ45",
            "724500vkksh9qoltfr81", "7245-0VKKSH9QOLTFR81", "724500VKKSH9QOLTFR8", "", "ÄÖ4500VKKSH9QOLTFR81"]
    assert _valid_leis(pl.Series(leis)).to_list() == [lei_problem(lei or None) is None for lei in leis]
    ids = ["ACC0001", "desk/α 7", "A" * 49, "A" * 50, "acc,1", 'q"uote']
    assert portfolio_codes(pl.Series(ids)).to_list() == [portfolio_code(a) for a in ids]


def _odd_records() -> pl.DataFrame:
    """Records whose fields need CSV quoting or XML escaping, or that break the checks."""
    good = {name: "" for name in FIELD_NAMES}
    good.update({
        "reporting_timestamp": "2025-03-15T06:30:00Z", "report_submitting_entity_id": valid_lei("5493001KJTIIGC8Y1R"),
        "entity_responsible_for_reporting": valid_lei("5493001KJTIIGC8Y1R"),
        "counterparty_1": valid_lei("5493001KJTIIGC8Y1R"), "counterparty_2_identifier_type": "false",
        "counterparty_2": "ACC1", "collateral_timestamp": "2025-03-14T23:59:59Z",
        "collateral_portfolio_indicator": "true", "collateral_portfolio_code": "MRGACC1",
        "collateralisation_category": "OWC2", "initial_margin_collected_pre_haircut": "100.5",
        "initial_margin_collected_post_haircut": "90", "currency_of_initial_margin_collected": "USD",
        "variation_margin_collected_pre_haircut": "0", "variation_margin_collected_post_haircut": "0",
        "currency_of_variation_margin_collected": "USD", "action_type": "MARU", "event_date": "2025-03-14",
    })
    variants = [
        {}, {"counterparty_2": 'desk "7", floor\r\n2'}, {"counterparty_2": "R&D <desk>"},
        {"counterparty_2_identifier_type": "true", "counterparty_2": INVALID_LEI},
        {"counterparty_2_identifier_type": "true", "counterparty_2": valid_lei("724500VKKSH9QOLTFR")},
        {"initial_margin_collected_post_haircut": "100.6"}, {"initial_margin_collected_pre_haircut": "-1"},
        {"variation_margin_collected_pre_haircut": "-2", "variation_margin_collected_post_haircut": "-2"},
        {"initial_margin_collected_pre_haircut": "", "initial_margin_collected_post_haircut": "",
         "currency_of_initial_margin_collected": ""},
        {"collateral_portfolio_code": "MRG-ACC"}, {"counterparty_2": ""},
    ]
    rows = [{**good, **variant, "_account_id": f"ACC{i}"} for i, variant in enumerate(variants)]
    return pl.DataFrame(rows, schema={name: pl.String for name in (*FIELD_NAMES, "_account_id")})


def test_vectorised_checks_and_files_match_the_record_by_record_ones():
    records = _odd_records()
    rows = records.to_dicts()
    expected = [(i, reasons) for i, row in enumerate(rows) if (reasons := check_record(row, DAY))]
    assert record_rejections(records, DAY) == expected
    for category in ("UNCL", "PRC2", "OWC9"):  # shared-field reasons, broadcast by pattern
        changed = records.with_columns(pl.lit(category).alias("collateralisation_category"))
        assert record_rejections(changed, DAY) == [
            (i, reasons) for i, row in enumerate(changed.to_dicts()) if (reasons := check_record(row, DAY))
        ]
    assert emir_csv_frame_bytes(records) == emir_csv_bytes(rows)
    assert emir_xml_frame_bytes(records) == emir_xml_bytes(rows)
    plain = records.filter(~pl.col("counterparty_2").str.contains('[&"<]') & (pl.col("counterparty_2") != ""))
    assert emir_xml_frame_bytes(plain) == emir_xml_bytes(plain.to_dicts())
    assert emir_csv_frame_bytes(records.head(0)) == emir_csv_bytes([])
    assert emir_xml_frame_bytes(records.head(0)) == emir_xml_bytes([])
