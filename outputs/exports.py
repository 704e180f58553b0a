"""Regulatory and analyst exports of one as-of date (SPEC §10).

``export_files(db, as_of, fmt, out)`` writes, under the folder ``out``:

* ``emir-csv`` / ``emir-xml``: the EMIR Refit Table 3 margin report, one record per
  account holding positions or collateral on ``D``, as RFC 4180 CSV or as an ISO 20022
  ``auth.108.001.01`` document.  Every record is checked first (``check_record``); a
  record that fails is not exported and is listed with its reasons in
  ``…_rejected.csv``.  Without ``allow_partial`` nothing but that list is written when a
  record fails.
* ``csv`` / ``parquet``: analyst extracts of ``account_margin`` and
  ``collateral_valuation`` for ``D``, each row with ``row_hash`` (SHA-256 of the
  canonical CSV line of its business columns, see ``canonical_line``).

Each successful export also writes ``manifest_<kind>_<D>.json`` (files, row counts,
SHA-256).  There is no run id and no clock in any file except ``reporting_time``, so the
same warehouse, inputs and reporting time give byte-identical files.  File names are
built from sanitised parts and checked to stay inside ``out``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import functools
import hashlib
import io
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import polars as pl
import pycountry
from lxml import etree
from stdnum.iso7064 import mod_97_10

from flows.settings import DEFAULT_INPUTS
from flows.warehouse import open_warehouse
from transforms.contract import REPORTING_CURRENCY

FORMATS = ("emir-csv", "emir-xml", "csv", "parquet")
AUTH_108_NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:auth.108.001.01"
ACTION_TYPE = "MARU"
MAX_DIGITS = 25
FRACTION_DIGITS = 5
QUANTUM = Decimal(1).scaleb(-FRACTION_DIGITS)

#: EMIR Refit Table 3 fields of the margin report, in file order (SPEC §10).
EMIR_FIELDS = (
    ("3.1", "reporting_timestamp"),
    ("3.2", "report_submitting_entity_id"),
    ("3.3", "entity_responsible_for_reporting"),
    ("3.4", "counterparty_1"),
    ("3.5", "counterparty_2_identifier_type"),
    ("3.6", "counterparty_2"),
    ("3.7", "collateral_timestamp"),
    ("3.8", "collateral_portfolio_indicator"),
    ("3.9", "collateral_portfolio_code"),
    ("3.10", "uti"),
    ("3.11", "collateralisation_category"),
    ("3.20", "initial_margin_collected_pre_haircut"),
    ("3.21", "initial_margin_collected_post_haircut"),
    ("3.22", "currency_of_initial_margin_collected"),
    ("3.23", "variation_margin_collected_pre_haircut"),
    ("3.24", "variation_margin_collected_post_haircut"),
    ("3.25", "currency_of_variation_margin_collected"),
    ("3.28", "action_type"),
    ("3.29", "event_date"),
)
EMIR_HEADER = tuple(f"{number} {name}" for number, name in EMIR_FIELDS)
FIELD_NAMES = tuple(name for _, name in EMIR_FIELDS)

#: Which margin the reporting firm (counterparty 1) collects from counterparty 2 under
#: each collateralisation category (ESMA EMIR Refit validation rules, field 3.11):
#: (initial margin collected, variation margin collected) — True mandatory, False blank.
CATEGORY_COLLECTS = {
    "UNCL": (False, False),
    "PRC1": (False, False),
    "PRC2": (False, True),
    "PRCL": (False, True),
    "OWC1": (False, False),
    "OWC2": (True, True),
    "OWP1": (False, True),
    "OWP2": (True, True),
    "FLCL": (True, True),
}
LEI_PATTERN = re.compile(r"^[A-Z0-9]{18}[0-9]{2}$")
PORTFOLIO_CODE_PATTERN = re.compile(r"^[A-Za-z0-9]{1,52}$")
TIMESTAMP_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
AMOUNT_FIELDS = (
    ("initial_margin_collected_pre_haircut", "initial_margin_collected_post_haircut",
     "currency_of_initial_margin_collected"),
    ("variation_margin_collected_pre_haircut", "variation_margin_collected_post_haircut",
     "currency_of_variation_margin_collected"),
)
EXTRACT_TABLES = ("account_margin", "collateral_valuation")
EXTRACT_KEYS = {"account_margin": ("account_id",), "collateral_valuation": ("account_id", "asset")}


class ExportError(RuntimeError):
    """The export cannot be made at all (no results for the date, bad arguments)."""


@dataclass
class ExportResult:
    """What an export wrote and what it refused."""

    fmt: str
    as_of: dt.date
    out: Path
    files: list[Path] = field(default_factory=list)
    manifest: Path | None = None
    records: int = 0
    rejected: list[tuple[str, list[str]]] = field(default_factory=list)
    rejections_file: Path | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def written(self) -> bool:
        return self.manifest is not None


# --- value checks and formats -------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def lei_problem(lei: str | None) -> str | None:
    """Why ``lei`` is not a valid ISO 17442 LEI (20 chars, MOD 97-10), or None when it is."""
    if lei is None or lei == "":
        return "LEI is missing"
    if len(lei) != 20:
        return f"LEI {lei!r} has {len(lei)} characters, not 20"
    if not LEI_PATTERN.match(lei):
        return f"LEI {lei!r} is not 18 upper-case letters/digits followed by 2 check digits"
    if not mod_97_10.is_valid(lei):
        return f"LEI {lei!r} fails its ISO 17442 MOD 97-10 check digits"
    return None


def format_decimal(value: float | int | Decimal | None) -> str:
    """An amount as SPEC §10 wants it: ≤ 5 fraction digits rounded half up, no exponent,
    dot separator, no trailing zeros; '' for None.  Floats go through their shortest
    repr, so 0.000005 rounds to 0.00001 (not to the binary 4.99…e-06)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"amount {value!r} is not a finite number")
        number = Decimal(repr(value))
    else:
        number = Decimal(value)
    rounded = number.quantize(QUANTUM, rounding=ROUND_HALF_UP)
    if rounded == 0:
        return "0"
    text = format(rounded, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def amount_problem(name: str, text: str) -> str | None:
    """Why a formatted amount breaks the SPEC §10 rules, or None."""
    try:
        number = Decimal(text)
    except InvalidOperation:
        return f"{name} {text!r} is not a decimal number"
    if not number.is_finite():
        return f"{name} {text!r} is not finite"
    if "e" in text.lower():
        return f"{name} {text!r} uses an exponent"
    if number < 0:
        return f"{name} {text} is negative"
    integer, _, fraction = text.lstrip("-").partition(".")
    if len(fraction) > FRACTION_DIGITS:
        return f"{name} {text} has more than {FRACTION_DIGITS} decimals"
    if len(integer.lstrip("0")) + len(fraction) > MAX_DIGITS:
        return f"{name} {text} has more than {MAX_DIGITS} digits"
    return None


def currency_problem(name: str, code: str) -> str | None:
    if pycountry.currencies.get(alpha_3=code) is None:
        return f"{name} {code!r} is not an ISO 4217 currency"
    return None


def utc_timestamp(moment: dt.datetime) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` in UTC (a naive time is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def portfolio_code(account_id: str) -> str:
    """Stable alphanumeric collateral portfolio code (≤ 52 chars): ``MRG`` + the account id
    when it is short and alphanumeric, else ``MRGH`` + 48 hex digits of its SHA-256."""
    if re.fullmatch(r"[A-Za-z0-9]{1,49}", account_id):
        return "MRG" + account_id
    return "MRGH" + hashlib.sha256(account_id.encode("utf-8")).hexdigest()[:48].upper()


def safe_component(text: str, limit: int = 64) -> str:
    """A file-name part from data: letters, digits, '-', '_' only (others become '_')."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", str(text))[:limit]
    return cleaned or "_"


def _target(out: Path, name: str) -> Path:
    path = (out / name).resolve()
    if path.parent != out.resolve():
        raise ExportError(f"refusing to write {name!r} outside {out}")
    return path


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a new temporary file in the same folder.

    The temporary file is created by ``tempfile`` (``O_CREAT | O_EXCL``, a random name):
    never an existing file, nor a symlink that someone placed there to make the export
    write outside ``--out``; ``os.replace`` then renames it over ``path`` (a symlink at
    ``path`` is replaced, not followed)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def sha256_bytes(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


# --- EMIR margin report ---------------------------------------------------------------

def check_record(record: dict, as_of: dt.date) -> list[str]:
    """Every reason ``record`` (field name → text, '' = blank) may not be reported."""
    reasons = []
    for name in ("report_submitting_entity_id", "entity_responsible_for_reporting", "counterparty_1"):
        problem = lei_problem(record[name] or None)
        if problem:
            reasons.append(f"{name}: {problem}")
    if record["counterparty_2_identifier_type"] == "true":
        problem = lei_problem(record["counterparty_2"] or None)
        if problem:
            reasons.append(f"counterparty_2: {problem}")
    elif record["counterparty_2_identifier_type"] != "false" or not record["counterparty_2"]:
        reasons.append("counterparty_2: identifier type must be true/false and the identifier present")
    for name in ("reporting_timestamp", "collateral_timestamp"):
        if not TIMESTAMP_PATTERN.match(record[name]):
            reasons.append(f"{name} {record[name]!r} is not YYYY-MM-DDThh:mm:ssZ")
    if not record["collateral_timestamp"].startswith(as_of.isoformat()):
        reasons.append("collateral_timestamp is not on the as-of date")
    if record["collateral_portfolio_indicator"] != "true" or not PORTFOLIO_CODE_PATTERN.match(
        record["collateral_portfolio_code"]
    ):
        reasons.append("collateral_portfolio_code must be 1-52 letters or digits with the indicator true")
    if record["uti"]:
        reasons.append("uti must be blank for portfolio reporting")
    category = record["collateralisation_category"]
    if category not in CATEGORY_COLLECTS:
        reasons.append(f"collateralisation_category {category!r} is not one of {', '.join(CATEGORY_COLLECTS)}")
    collects = CATEGORY_COLLECTS.get(category, (True, True))
    for (pre, post, currency), required, label in zip(AMOUNT_FIELDS, collects, ("initial", "variation")):
        present = [bool(record[pre]), bool(record[post]), bool(record[currency])]
        if required and not all(present):
            reasons.append(f"category {category} requires {label} margin collected (pre, post and currency)")
            continue
        if not required and any(present):
            reasons.append(f"category {category} excludes {label} margin collected, but it is present")
            continue
        if not required:
            continue
        amount_reasons = [p for p in (amount_problem(pre, record[pre]), amount_problem(post, record[post])) if p]
        reasons += amount_reasons
        if not amount_reasons and Decimal(record[post]) > Decimal(record[pre]):
            reasons.append(f"{post} {record[post]} exceeds {pre} {record[pre]}")
        problem = currency_problem(currency, record[currency])
        if problem:
            reasons.append(problem)
    if record["action_type"] != ACTION_TYPE:
        reasons.append(f"action_type must be {ACTION_TYPE}")
    if record["event_date"] != as_of.isoformat():
        reasons.append("event_date is not the as-of date")
    return reasons


def _policy(con, db: Path, inputs: Path, as_of: dt.date) -> dict:
    """Reporting LEI and category: the publishing run's parameters, else the inputs' policy.toml."""
    row = con.sql(
        "SELECT r.parameters FROM runs AS r WHERE r.run_id = "
        "(SELECT any_value(run_id) FROM account_margin WHERE as_of_date = ?)",
        params=[as_of],
    ).fetchall()
    parameters = json.loads(row[0][0]) if row and row[0][0] else {}
    if parameters.get("reporting_lei"):  # text, even from a run record written before policy types were checked
        return {
            "reporting_lei": str(parameters["reporting_lei"]),
            "collateralisation_category": str(parameters.get("collateralisation_category") or "OWC2"),
        }
    from flows.loading import StructuralError, locate, read_policy

    try:
        path = locate(inputs, as_of, "policy.toml")
    except StructuralError:  # no inputs here (e.g. an analyst's machine): the SPEC defaults
        return {"reporting_lei": None, "collateralisation_category": "OWC2"}
    try:
        policy = read_policy(path)
    except StructuralError as error:
        raise ExportError(f"structural error: {error}") from error
    return {k: policy.get(k) for k in ("reporting_lei", "collateralisation_category")}


def variation_margin(inputs: Path, as_of: dt.date) -> tuple[dict[str, float], list[str]]:
    """Cumulative VM collected per account from ``date=D/variation_margin.parquet`` (SPEC §10)."""
    path = Path(inputs) / f"date={as_of.isoformat()}" / "variation_margin.parquet"
    if path.exists() and not path.is_file():
        raise ExportError(f"{path}: is a folder, not a Parquet file")
    if not path.is_file():
        return {}, [f"{path} not found: variation margin collected reported as 0"]
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as error:  # corrupt, truncated, not Parquet
        raise ExportError(f"{path}: not a readable Parquet file ({_first_line(error)})") from error
    missing = {"account_id", "vm_collected_usd"} - set(schema)
    if missing:
        raise ExportError(f"{path}: required column {sorted(missing)[0]!r} is missing")
    if schema["account_id"] not in (pl.String, pl.Categorical) or not schema["vm_collected_usd"].is_numeric():
        bad = "account_id" if schema["account_id"] not in (pl.String, pl.Categorical) else "vm_collected_usd"
        wanted = "text" if bad == "account_id" else "a number"
        raise ExportError(f"{path}: column {bad!r} has type {schema[bad]}, which cannot be read as {wanted}")
    try:
        frame = pl.read_parquet(path, columns=["account_id", "vm_collected_usd"]).select(
            pl.col("account_id").cast(pl.String), pl.col("vm_collected_usd").cast(pl.Float64))
    except Exception as error:
        raise ExportError(f"{path}: not a readable Parquet file ({_first_line(error)})") from error
    bad_values = frame.filter(~pl.col("vm_collected_usd").is_finite())
    if bad_values.height:
        raise ExportError(f"{path}: column 'vm_collected_usd' has {bad_values.height} NaN or infinite values "
                          f"(account {bad_values['account_id'][0]})")
    duplicated = frame.filter(pl.col("account_id").is_duplicated())["account_id"].unique().sort().to_list()
    warnings = [f"{path}: accounts listed more than once, values summed: {', '.join(duplicated[:5])}"] if duplicated else []
    summed = frame.group_by("account_id").agg(pl.col("vm_collected_usd").sum())
    return dict(zip(summed["account_id"].to_list(), summed["vm_collected_usd"].to_list())), warnings


def format_decimals(values: pl.Series) -> pl.Series:
    """``format_decimal`` of every value, vectorised: the shortest round-trip text of each
    float (Polars writes the same digits as Python's ``repr``, positionally) rounded half
    up at 5 decimals in integer arithmetic.  Values that text cannot carry exactly that
    way (an exponent, more than 13 integer digits, non-finite) go through
    ``format_decimal`` itself, so the result is the same text for every value."""
    values = values.cast(pl.Float64)
    frame = pl.DataFrame({"value": values}).with_columns(text=pl.col("value").abs().cast(pl.String))
    parts = pl.col("text").str.split_exact(".", 1)
    integer, fraction = parts.struct.field("field_0"), parts.struct.field("field_1").fill_null("")
    frame = frame.with_columns(
        fast=pl.col("value").is_finite() & ~pl.col("text").str.contains("[eE]") & (integer.str.len_bytes() <= 13),
        integer=integer, fraction=fraction.str.pad_end(FRACTION_DIGITS + 1, "0"),
    )
    scaled = (
        pl.col("integer").cast(pl.Int64, strict=False) * 10**FRACTION_DIGITS
        + pl.col("fraction").str.slice(0, FRACTION_DIGITS).cast(pl.Int64, strict=False)
        + (pl.col("fraction").str.slice(FRACTION_DIGITS, 1) >= "5").cast(pl.Int64)
    )
    whole = (pl.col("scaled") // 10**FRACTION_DIGITS).cast(pl.String)
    decimals = (pl.col("scaled") % 10**FRACTION_DIGITS).cast(pl.String).str.pad_start(FRACTION_DIGITS, "0") \
        .str.strip_chars_end("0")
    sign = pl.when(pl.col("value") < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    text = (
        pl.when(pl.col("scaled") == 0).then(pl.lit("0"))
        .when(decimals == "").then(pl.concat_str(sign, whole))
        .otherwise(pl.concat_str(sign, whole, pl.lit("."), decimals))
    )
    out = frame.with_columns(scaled=pl.when(pl.col("fast")).then(scaled)).select(
        pl.when(pl.col("fast")).then(text).alias("formatted"), "fast")
    formatted = out["formatted"]
    slow = (~out["fast"]).arg_true()
    if slow.len():
        def python_format(value: float) -> str:
            try:
                return format_decimal(value)
            except ValueError:
                return str(value)

        formatted = formatted.scatter(slow, [python_format(v) for v in values.gather(slow).to_list()])
    return formatted


def portfolio_codes(account_ids: pl.Series) -> pl.Series:
    """``portfolio_code`` of every account id: ``MRG`` + id, vectorised, for the short
    alphanumeric ids; the hashed form (computed one by one) for the others."""
    simple = account_ids.str.contains(r"^[A-Za-z0-9]{1,49}$").fill_null(False)
    codes = pl.Series(account_ids.name, ["MRG"] * len(account_ids), dtype=pl.String) + account_ids
    other = (~simple).arg_true()
    if other.len():
        codes = codes.scatter(other, [portfolio_code(a) for a in account_ids.gather(other).to_list()])
    return codes


def emir_record_frame(db: Path, as_of: dt.date, reporting_time: dt.datetime,
                      inputs: Path) -> tuple[pl.DataFrame, list[str]]:
    """The EMIR Table 3 records (one column per field name, text; ``_account_id``), one row
    per account holding positions or collateral on D, in account order — built by
    column, not account by account."""
    with open_warehouse(db, read_only=True) as con:
        accounts = con.sql(
            """
            SELECT a.account_id, a.lei,
                   coalesce(c.pre_haircut, 0) AS pre_haircut, coalesce(c.post_haircut, 0) AS post_haircut
            FROM account_margin AS a
            LEFT JOIN (
                SELECT account_id,
                       sum(value_usd) FILTER (WHERE value_usd > 0) AS pre_haircut,
                       sum(value_after_haircut_usd) FILTER (WHERE value_usd > 0) AS post_haircut,
                       count(*) FILTER (WHERE amount <> 0) AS balances
                FROM collateral_valuation WHERE as_of_date = $1 GROUP BY account_id
            ) AS c USING (account_id)
            WHERE a.as_of_date = $1 AND (a.position_count > 0 OR coalesce(c.balances, 0) > 0)
            ORDER BY a.account_id
            """,
            params=[as_of],
        ).pl()
        published = con.sql("SELECT count(*) FROM account_margin WHERE as_of_date = ?", params=[as_of]).fetchall()[0][0]
        policy = _policy(con, db, inputs, as_of)
    if not published:
        raise ExportError(f"no results for {as_of} in {db} (run `margin run --date {as_of}` first)")
    vm, warnings = variation_margin(inputs, as_of)
    reporting_lei = policy["reporting_lei"] or ""
    category = policy["collateralisation_category"] or ""
    collects_im, collects_vm = CATEGORY_COLLECTS.get(category, (True, True))
    vm_frame = pl.DataFrame({"account_id": list(vm), "vm": list(vm.values())},
                            schema={"account_id": pl.String, "vm": pl.Float64})
    accounts = accounts.with_columns(pl.col("pre_haircut", "post_haircut").cast(pl.Float64)).join(
        vm_frame, on="account_id", how="left", maintain_order="left").with_columns(pl.col("vm").fill_null(0.0))
    amounts = {name: format_decimals(accounts[column])
               for name, column in (("im_pre", "pre_haircut"), ("im_post", "post_haircut"), ("vm", "vm"))}

    def when_collected(collects: bool, value: str, text: pl.Series | str) -> pl.Expr:
        # A float is truthy when it is not 0 (NaN included), as in ``x if collects or value``.
        shown = pl.lit(True) if collects else (pl.col(value) != 0) | pl.col(value).is_nan()
        return pl.when(shown).then(pl.lit(text) if isinstance(text, str) else text).otherwise(pl.lit(""))

    constant = {
        "reporting_timestamp": utc_timestamp(reporting_time),
        "report_submitting_entity_id": reporting_lei,
        "entity_responsible_for_reporting": reporting_lei,
        "counterparty_1": reporting_lei,
        "collateral_timestamp": f"{as_of.isoformat()}T23:59:59Z",
        "collateral_portfolio_indicator": "true",
        "uti": "",
        "collateralisation_category": category,
        "action_type": ACTION_TYPE,
        "event_date": as_of.isoformat(),
    }
    has_lei = pl.col("lei").is_not_null() & (pl.col("lei") != "")
    records = accounts.select(
        *[pl.lit(value, dtype=pl.String).alias(name) for name, value in constant.items()],
        pl.when(has_lei).then(pl.lit("true")).otherwise(pl.lit("false")).alias("counterparty_2_identifier_type"),
        pl.when(has_lei).then(pl.col("lei")).otherwise(pl.col("account_id")).alias("counterparty_2"),
        portfolio_codes(accounts["account_id"]).alias("collateral_portfolio_code"),
        when_collected(collects_im, "pre_haircut", amounts["im_pre"]).alias("initial_margin_collected_pre_haircut"),
        when_collected(collects_im, "post_haircut", amounts["im_post"]).alias("initial_margin_collected_post_haircut"),
        when_collected(collects_im, "pre_haircut", REPORTING_CURRENCY).alias("currency_of_initial_margin_collected"),
        when_collected(collects_vm, "vm", amounts["vm"]).alias("variation_margin_collected_pre_haircut"),
        when_collected(collects_vm, "vm", amounts["vm"]).alias("variation_margin_collected_post_haircut"),
        when_collected(collects_vm, "vm", REPORTING_CURRENCY).alias("currency_of_variation_margin_collected"),
        pl.col("account_id").alias("_account_id"),
    ).select(*FIELD_NAMES, "_account_id")
    return records, warnings


def _valid_leis(leis: pl.Series) -> pl.Series:
    """Whether each text is a valid LEI (``lei_problem`` is None), vectorised: the pattern,
    then ISO 7064 MOD 97-10 over the characters (a letter counts as two digits, A = 10)."""
    shaped = leis.str.contains(LEI_PATTERN.pattern).fill_null(False)
    chars = np.frombuffer(
        "".join(lei if ok else "0" * 20 for lei, ok in zip(leis.to_list(), shaped.to_list())).encode("ascii"),
        dtype=np.uint8,
    ).reshape(-1, 20) if len(leis) else np.zeros((0, 20), dtype=np.uint8)
    is_digit = chars <= ord("9")
    values = np.where(is_digit, chars - ord("0"), chars - ord("A") + 10).astype(np.int64)
    remainder = np.zeros(len(leis), dtype=np.int64)
    for position in range(20):
        remainder = (remainder * np.where(is_digit[:, position], 10, 100) + values[:, position]) % 97
    return shaped & pl.Series(remainder == 1)


def record_rejections(records: pl.DataFrame, as_of: dt.date) -> list[tuple[int, list[str]]]:
    """(row, reasons) of every record ``check_record`` refuses, in row order.

    The fields that vary by account are screened by column: the counterparty's LEI (or
    account id), the portfolio code, and the IM amounts (plain decimals the fast formatter
    wrote, post ≤ pre).  A record that passes that screen can only be refused for its
    shared fields and which amounts are present, so one ``check_record`` per such
    pattern decides every record of it; the rest are checked one by one."""
    if records.height == 0:
        return []
    plain = r"^[0-9]{1,20}(\.[0-9]{1,5})?$"
    pre, post = pl.col("initial_margin_collected_pre_haircut"), pl.col("initial_margin_collected_post_haircut")

    def scaled(column: pl.Expr) -> pl.Expr:  # null above 13 integer digits: checked one by one
        parts = column.str.split_exact(".", 1)
        return (parts.struct.field("field_0").cast(pl.Int64, strict=False) * 10**FRACTION_DIGITS
                + parts.struct.field("field_1").fill_null("").str.pad_end(FRACTION_DIGITS, "0")
                .cast(pl.Int64, strict=False))

    is_lei = pl.col("counterparty_2_identifier_type") == "true"
    lei_ok = _valid_leis(records["counterparty_2"].fill_null(""))
    screen = records.with_columns(lei_ok=lei_ok).select(
        (
            pl.when(is_lei).then(pl.col("lei_ok"))
            .otherwise((pl.col("counterparty_2_identifier_type") == "false") & (pl.col("counterparty_2") != ""))
            & pl.col("collateral_portfolio_code").str.contains(PORTFOLIO_CODE_PATTERN.pattern)
            & ((pre == "") | (pre.str.contains(plain) & post.str.contains(plain) & (scaled(post) <= scaled(pre))))
            & ((pl.col("variation_margin_collected_pre_haircut") == "")
               | pl.col("variation_margin_collected_pre_haircut").str.contains(plain))
        ).fill_null(False).alias("clean"),
        *[(pl.col(name) != "").alias(f"has|{name}") for name, _, _ in AMOUNT_FIELDS],
        *[(pl.col(name) != "").alias(f"has|{name}") for _, name, _ in AMOUNT_FIELDS],
        *[(pl.col(name) != "").alias(f"has|{name}") for _, _, name in AMOUNT_FIELDS],
    ).with_row_index("row")
    pattern_columns = [c for c in screen.columns if c.startswith("has|")]
    rejected: dict[int, list[str]] = {}
    clean = screen.filter(pl.col("clean"))
    for pattern in clean.select(pattern_columns).unique().iter_rows():
        rows = clean.filter(pl.all_horizontal(pl.col(c) == v for c, v in zip(pattern_columns, pattern)))["row"]
        reasons = check_record(records.row(rows[0], named=True), as_of)
        if reasons:
            rejected.update({row: reasons for row in rows.to_list()})
    for row in screen.filter(~pl.col("clean"))["row"].to_list():
        reasons = check_record(records.row(row, named=True), as_of)
        if reasons:
            rejected[row] = reasons
    return sorted(rejected.items())


def emir_csv_bytes(records: list[dict]) -> bytes:
    """RFC 4180 CSV (CRLF, header row, minimal quoting), UTF-8."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(EMIR_HEADER)
    for record in records:
        writer.writerow([record[name] for name in FIELD_NAMES])
    return buffer.getvalue().encode("utf-8")


def _csv_field(name: str) -> pl.Expr:
    """A field as ``csv.writer`` writes it with minimal quoting: quoted (quotes doubled)
    when it holds the delimiter, a quote, CR or LF."""
    column = pl.col(name).fill_null("")
    needs_quotes = column.str.contains(r'[,"\r\n]')
    return pl.when(needs_quotes).then(
        pl.concat_str(pl.lit('"'), column.str.replace_all('"', '""', literal=True), pl.lit('"'))
    ).otherwise(column)


def _lines_bytes(lines: pl.DataFrame, terminator: str) -> bytes:
    """The one text column of ``lines`` written as is, each value followed by ``terminator``."""
    buffer = io.BytesIO()
    lines.write_csv(buffer, include_header=False, quote_style="never", line_terminator=terminator)
    return buffer.getvalue()


def emir_csv_frame_bytes(records: pl.DataFrame) -> bytes:
    """``emir_csv_bytes`` of a record frame, each line built by column (same bytes)."""
    header = emir_csv_bytes([])
    if records.height == 0:
        return header
    quoted = records.select(pl.col(n).fill_null("").str.contains(r'[,"\r\n]').any() for n in FIELD_NAMES).row(0)
    fields = [_csv_field(n) if needs else pl.col(n).fill_null("") for n, needs in zip(FIELD_NAMES, quoted)]
    lines = records.select(pl.concat_str(fields, separator=",").alias("line"))
    return header + _lines_bytes(lines, "\r\n")


#: Text lxml writes unchanged inside an element or a double-quoted attribute.
_PLAIN_XML_TEXT = r"^[A-Za-z0-9 _.:+/=@#%()\[\]{}|~^*!?$;,'`-]+$"

#: One ``Rpt`` of ``emir_xml_bytes`` as lxml pretty-prints it; ``{field}`` is a record field,
#: ``{other}`` the counterparty-2 block and ``{received}`` the amounts block.
_XML_REPORT = """\
      <Rpt>
        <MrgnUpd>
          <RptgTmStmp>{reporting_timestamp}</RptgTmStmp>
          <CtrPtyId>
            <RptgCtrPty>
              <Id>
                <Lgl>
                  <Id>
                    <LEI>{counterparty_1}</LEI>
                  </Id>
                </Lgl>
              </Id>
            </RptgCtrPty>
            <OthrCtrPty>
              <IdTp>
                <Lgl>
                  <Id>
{other}\
                  </Id>
                </Lgl>
              </IdTp>
            </OthrCtrPty>
            <SubmitgAgt>
              <LEI>{report_submitting_entity_id}</LEI>
            </SubmitgAgt>
            <NttyRspnsblForRpt>
              <LEI>{entity_responsible_for_reporting}</LEI>
            </NttyRspnsblForRpt>
          </CtrPtyId>
          <EvtDt>{event_date}</EvtDt>
          <Coll>
            <CollPrtflCd>
              <Prtfl>
                <Cd>{collateral_portfolio_code}</Cd>
              </Prtfl>
            </CollPrtflCd>
            <CollstnCtgy>{collateralisation_category}</CollstnCtgy>
            <TmStmp>{collateral_timestamp}</TmStmp>
          </Coll>
{received}\
        </MrgnUpd>
      </Rpt>
"""
_XML_LEI_COUNTERPARTY = "                    <LEI>{counterparty_2}</LEI>\n"
_XML_ACCOUNT_COUNTERPARTY = """\
                    <Othr>
                      <Id>{counterparty_2}</Id>
                      <SchmeNm>
                        <Prtry>ACCOUNT</Prtry>
                      </SchmeNm>
                    </Othr>
"""
_XML_AMOUNTS = (
    ("InitlMrgnRcvdPreHrcut", "initial_margin_collected_pre_haircut", "currency_of_initial_margin_collected"),
    ("InitlMrgnRcvdPstHrcut", "initial_margin_collected_post_haircut", "currency_of_initial_margin_collected"),
    ("VartnMrgnRcvdPreHrcut", "variation_margin_collected_pre_haircut", "currency_of_variation_margin_collected"),
    ("VartnMrgnRcvdPstHrcut", "variation_margin_collected_post_haircut", "currency_of_variation_margin_collected"),
)


def _template(text: str, blocks: dict[str, pl.Expr]) -> pl.Expr:
    """``text`` with each ``{name}`` replaced by the record field ``name`` (or a block)."""
    import string

    parts: list[pl.Expr] = []
    for literal, name, _, _ in string.Formatter().parse(text):
        if literal:
            parts.append(pl.lit(literal))
        if name is not None:
            parts.append(blocks[name] if name in blocks else pl.col(name))
    return pl.concat_str(parts)


def emir_xml_frame_bytes(records: pl.DataFrame) -> bytes:
    """``emir_xml_bytes`` of a record frame: when every field is plain text (nothing lxml
    would escape, no empty element), each record's ``Rpt`` is one string built by column
    in lxml's pretty-printed layout — the same bytes; otherwise the records go through
    ``emir_xml_bytes``."""
    element_fields = [n for n in FIELD_NAMES if n not in {name for _, name, _ in _XML_AMOUNTS}
                      and n not in {currency for _, _, currency in _XML_AMOUNTS}
                      and n not in ("uti", "collateral_portfolio_indicator", "action_type",
                                    "counterparty_2_identifier_type")]
    amount_fields = [n for _, name, currency in _XML_AMOUNTS for n in (name, currency)]
    plain = records.height > 0 and records.select(pl.all_horizontal(
        *[pl.col(n).str.contains(_PLAIN_XML_TEXT).fill_null(False).all() for n in element_fields],
        *[(pl.col(n).str.contains(_PLAIN_XML_TEXT) | (pl.col(n) == "")).fill_null(False).all()
          for n in amount_fields],
        pl.col("counterparty_2_identifier_type").is_in(["true", "false"]).all(),
    )).item()
    if not plain:
        return emir_xml_bytes(records.to_dicts())
    lines = [
        pl.when(pl.col(name) != "").then(pl.concat_str(
            pl.lit(f"            <{tag} Ccy=\""), pl.col(currency), pl.lit('">'), pl.col(name), pl.lit(f"</{tag}>\n")
        )).otherwise(pl.lit(""))
        for tag, name, currency in _XML_AMOUNTS
    ]
    received = pl.when(pl.any_horizontal(pl.col(name) != "" for _, name, _ in _XML_AMOUNTS)).then(
        pl.concat_str(pl.lit("          <RcvdMrgnOrColl>\n"), *lines, pl.lit("          </RcvdMrgnOrColl>\n"))
    ).otherwise(pl.lit(""))
    other = pl.when(pl.col("counterparty_2_identifier_type") == "true").then(
        _template(_XML_LEI_COUNTERPARTY, {})).otherwise(_template(_XML_ACCOUNT_COUNTERPARTY, {}))
    reports = records.select(_template(_XML_REPORT, {"other": other, "received": received}).alias("xml"))
    head = (
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        f'<Document xmlns="{AUTH_108_NAMESPACE}">\n'
        "  <DerivsTradMrgnDataRpt>\n    <RptHdr>\n"
        f"      <NbRcrds>{records.height}</NbRcrds>\n    </RptHdr>\n    <TradData>\n"
    )
    tail = "    </TradData>\n  </DerivsTradMrgnDataRpt>\n</Document>\n"
    return head.encode("utf-8") + _lines_bytes(reports, "") + tail.encode("utf-8")


def _sub(parent, tag: str, text: str | None = None, **attributes):
    element = etree.SubElement(parent, f"{{{AUTH_108_NAMESPACE}}}{tag}", **attributes)
    if text is not None:
        element.text = text
    return element


def _lei_party(parent, tag: str, lei: str) -> None:
    _sub(_sub(_sub(_sub(parent, tag), "Id"), "Lgl"), "Id").append(_leaf("LEI", lei))


def _leaf(tag: str, text: str):
    element = etree.Element(f"{{{AUTH_108_NAMESPACE}}}{tag}")
    element.text = text
    return element


def emir_xml_bytes(records: list[dict]) -> bytes:
    """ISO 20022 auth.108.001.01 DerivativesTradeMarginDataReport, one ``MrgnUpd`` (action
    type MARU) per record; amounts carry ``Ccy``.  Canonical layout, UTF-8, LF."""
    document = etree.Element(f"{{{AUTH_108_NAMESPACE}}}Document", nsmap={None: AUTH_108_NAMESPACE})
    report = _sub(document, "DerivsTradMrgnDataRpt")
    _sub(_sub(report, "RptHdr"), "NbRcrds", str(len(records)))
    trades = _sub(report, "TradData")
    for record in records:
        update = _sub(_sub(trades, "Rpt"), "MrgnUpd")
        _sub(update, "RptgTmStmp", record["reporting_timestamp"])
        parties = _sub(update, "CtrPtyId")
        _lei_party(parties, "RptgCtrPty", record["counterparty_1"])
        other = _sub(_sub(_sub(parties, "OthrCtrPty"), "IdTp"), "Lgl")
        if record["counterparty_2_identifier_type"] == "true":
            _sub(_sub(other, "Id"), "LEI", record["counterparty_2"])
        else:
            account = _sub(_sub(other, "Id"), "Othr")
            _sub(account, "Id", record["counterparty_2"])
            _sub(_sub(account, "SchmeNm"), "Prtry", "ACCOUNT")
        _sub(_sub(parties, "SubmitgAgt"), "LEI", record["report_submitting_entity_id"])
        _sub(_sub(parties, "NttyRspnsblForRpt"), "LEI", record["entity_responsible_for_reporting"])
        _sub(update, "EvtDt", record["event_date"])
        collateral = _sub(update, "Coll")
        _sub(_sub(_sub(collateral, "CollPrtflCd"), "Prtfl"), "Cd", record["collateral_portfolio_code"])
        _sub(collateral, "CollstnCtgy", record["collateralisation_category"])
        _sub(collateral, "TmStmp", record["collateral_timestamp"])
        amounts = [
            ("InitlMrgnRcvdPreHrcut", "initial_margin_collected_pre_haircut", "currency_of_initial_margin_collected"),
            ("InitlMrgnRcvdPstHrcut", "initial_margin_collected_post_haircut", "currency_of_initial_margin_collected"),
            ("VartnMrgnRcvdPreHrcut", "variation_margin_collected_pre_haircut", "currency_of_variation_margin_collected"),
            ("VartnMrgnRcvdPstHrcut", "variation_margin_collected_post_haircut", "currency_of_variation_margin_collected"),
        ]
        present = [(tag, record[name], record[currency]) for tag, name, currency in amounts if record[name]]
        if present:
            received = _sub(update, "RcvdMrgnOrColl")
            for tag, value, currency in present:
                _sub(received, tag, value, Ccy=currency)
    return etree.tostring(document, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def parse_emir_xml(payload: bytes) -> list[dict]:
    """Read an auth.108 file written by ``emir_xml_bytes`` back into records (field → text)."""
    ns = {"d": AUTH_108_NAMESPACE}
    root = etree.fromstring(payload)
    if root.tag != f"{{{AUTH_108_NAMESPACE}}}Document":
        raise ValueError(f"not an auth.108.001.01 document: root is {root.tag}")
    records = []

    def text(node, path: str) -> str:
        found = node.find(path, ns)
        return found.text if found is not None and found.text is not None else ""

    for update in root.iterfind("d:DerivsTradMrgnDataRpt/d:TradData/d:Rpt/d:MrgnUpd", ns):
        other_lei = text(update, "d:CtrPtyId/d:OthrCtrPty/d:IdTp/d:Lgl/d:Id/d:LEI")
        received = {
            tag: (element.text, element.get("Ccy"))
            for element in update.iterfind("d:RcvdMrgnOrColl/*", ns)
            for tag in [etree.QName(element).localname]
        }

        def amount(tag: str) -> tuple[str, str]:
            return received.get(tag, ("", ""))

        records.append({
            "reporting_timestamp": text(update, "d:RptgTmStmp"),
            "report_submitting_entity_id": text(update, "d:CtrPtyId/d:SubmitgAgt/d:LEI"),
            "entity_responsible_for_reporting": text(update, "d:CtrPtyId/d:NttyRspnsblForRpt/d:LEI"),
            "counterparty_1": text(update, "d:CtrPtyId/d:RptgCtrPty/d:Id/d:Lgl/d:Id/d:LEI"),
            "counterparty_2_identifier_type": "true" if other_lei else "false",
            "counterparty_2": other_lei or text(update, "d:CtrPtyId/d:OthrCtrPty/d:IdTp/d:Lgl/d:Id/d:Othr/d:Id"),
            "collateral_timestamp": text(update, "d:Coll/d:TmStmp"),
            "collateral_portfolio_indicator": "true" if text(update, "d:Coll/d:CollPrtflCd/d:Prtfl/d:Cd") else "false",
            "collateral_portfolio_code": text(update, "d:Coll/d:CollPrtflCd/d:Prtfl/d:Cd"),
            "uti": text(update, "d:TxId/d:UnqTxIdr"),
            "collateralisation_category": text(update, "d:Coll/d:CollstnCtgy"),
            "initial_margin_collected_pre_haircut": amount("InitlMrgnRcvdPreHrcut")[0],
            "initial_margin_collected_post_haircut": amount("InitlMrgnRcvdPstHrcut")[0],
            "currency_of_initial_margin_collected": amount("InitlMrgnRcvdPreHrcut")[1],
            "variation_margin_collected_pre_haircut": amount("VartnMrgnRcvdPreHrcut")[0],
            "variation_margin_collected_post_haircut": amount("VartnMrgnRcvdPstHrcut")[0],
            "currency_of_variation_margin_collected": amount("VartnMrgnRcvdPreHrcut")[1],
            "action_type": ACTION_TYPE,
            "event_date": text(update, "d:EvtDt"),
        })
    return records


def parse_emir_csv(payload: bytes) -> list[dict]:
    """Read an EMIR CSV written by ``emir_csv_bytes`` back into records (field → text)."""
    rows = list(csv.reader(io.StringIO(payload.decode("utf-8"), newline="")))
    if not rows or tuple(rows[0]) != EMIR_HEADER:
        raise ValueError("not an EMIR margin report CSV: unexpected header")
    return [dict(zip(FIELD_NAMES, row)) for row in rows[1:]]


def _rejections_csv(rejected: list[tuple[str, list[str]]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["account_id", "reasons"])
    for account_id, reasons in rejected:
        writer.writerow([account_id, "; ".join(reasons)])
    return buffer.getvalue().encode("utf-8")


# --- analyst extracts ------------------------------------------------------------------

def canonical_value(value) -> str:
    """Canonical text of one value in ``row_hash``: '' for null, shortest round-trip repr
    for floats, true/false, ISO dates, strings as they are."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, list):
        return json.dumps(value)
    return str(value)


def canonical_line(values: list) -> str:
    """One RFC 4180 CSV line (minimal quoting, no line end) of canonical values."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="").writerow([canonical_value(v) for v in values])
    return buffer.getvalue()


def row_hash(values: list) -> str:
    return hashlib.sha256(canonical_line(values).encode("utf-8")).hexdigest()


def extract_frame(db: Path, table: str, as_of: dt.date) -> pl.DataFrame:
    """The business columns of ``table`` for ``as_of`` (everything but run_id), in key
    order, with ``row_hash``."""
    keys = ", ".join(EXTRACT_KEYS[table])
    with open_warehouse(db, read_only=True) as con:
        frame = con.sql(
            f"SELECT * EXCLUDE (run_id) FROM {table} WHERE as_of_date = ? ORDER BY {keys}", params=[as_of]
        ).pl()
    hashes = [row_hash(list(row)) for row in frame.iter_rows()]
    return frame.with_columns(pl.Series("row_hash", hashes, dtype=pl.String))


def extract_csv_bytes(frame: pl.DataFrame) -> bytes:
    """CSV of the extract with the same canonical values that ``row_hash`` is computed on,
    so a reader can recompute any row's hash from the file."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(frame.columns)
    for row in frame.iter_rows():
        writer.writerow([canonical_value(v) for v in row])
    return buffer.getvalue().encode("utf-8")


def extract_parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=True)
    return buffer.getvalue()


# --- the command -----------------------------------------------------------------------

def _make_folder(out: Path) -> None:
    """Create ``--out`` (and its parents), or say in one line why it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExportError(f"--out {out} cannot be created ({error.strerror or _first_line(error)})") from error


def emir_outlook(db: Path, as_of: dt.date, inputs: Path | None = None) -> tuple[int, list[tuple[str, list[str]]]]:
    """What an EMIR export of ``as_of`` would do, without writing anything: the number
    of records and the (account, reasons) that their checks would reject."""
    moment = dt.datetime.combine(as_of, dt.time(23, 59, 59), dt.timezone.utc)
    records, _ = emir_record_frame(Path(db), as_of, moment, Path(inputs) if inputs is not None else DEFAULT_INPUTS)
    account_ids = records["_account_id"]
    return records.height, [(account_ids[row], reasons) for row, reasons in record_rejections(records, as_of)]


def export_files(
    db: Path,
    as_of: dt.date,
    fmt: str,
    out: Path,
    reporting_time: dt.datetime | None = None,
    allow_partial: bool = False,
    inputs: Path | None = None,
) -> ExportResult:
    """Write the ``fmt`` export of ``as_of`` under the folder ``out`` (SPEC §10)."""
    if fmt not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    db, out = Path(db), Path(out)
    if not db.exists():
        raise ExportError(f"warehouse {db} does not exist yet (run `margin demo` or `margin run` first)")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder")
    reporting_time = reporting_time or dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    inputs = Path(inputs) if inputs is not None else DEFAULT_INPUTS
    result = ExportResult(fmt=fmt, as_of=as_of, out=out)
    day = as_of.isoformat()
    payloads: list[tuple[str, bytes, int]] = []

    if fmt.startswith("emir"):
        records, result.warnings = emir_record_frame(db, as_of, reporting_time, inputs)
        rejections = record_rejections(records, as_of)
        account_ids = records["_account_id"]
        result.rejected = [(account_ids[row], reasons) for row, reasons in rejections]
        refused = pl.Series([row for row, _ in rejections], dtype=pl.UInt32)
        accepted = records.with_row_index("row").filter(~pl.col("row").is_in(refused.implode())).drop("row")
        reporter = safe_component(records["counterparty_1"][0] if records.height else "no_records", 20)
        stem = f"emir_margin_{reporter}_{day}"
        _make_folder(out)
        if result.rejected:
            result.rejections_file = _target(out, f"{stem}_rejected.csv")
            _write_atomic(result.rejections_file, _rejections_csv(result.rejected))
            if not allow_partial:
                return result
        payload = emir_csv_frame_bytes(accepted) if fmt == "emir-csv" else emir_xml_frame_bytes(accepted)
        payloads.append((f"{stem}.{'csv' if fmt == 'emir-csv' else 'xml'}", payload, accepted.height))
        result.records = accepted.height
        kind = "emir"
    else:
        for table in EXTRACT_TABLES:
            frame = extract_frame(db, table, as_of)
            if table == "account_margin" and frame.height == 0:
                raise ExportError(f"no results for {as_of} in {db} (run `margin run --date {as_of}` first)")
            payload = extract_csv_bytes(frame) if fmt == "csv" else extract_parquet_bytes(frame)
            payloads.append((f"{safe_component(table)}_{day}.{fmt}", payload, frame.height))
            result.records += frame.height
        kind = "extract"

    _make_folder(out)
    manifest_files = []
    for name, payload, rows in payloads:
        path = _target(out, name)
        _write_atomic(path, payload)
        result.files.append(path)
        manifest_files.append({"file": name, "rows": rows, "bytes": len(payload), "sha256": sha256_bytes(payload)})
    manifest = {
        "as_of_date": day,
        "format": fmt,
        "reporting_time": utc_timestamp(reporting_time),
        "files": manifest_files,
        "rejected_records": [{"account_id": a, "reasons": r} for a, r in result.rejected],
        "warnings": result.warnings,
    }
    if kind == "extract":
        manifest["row_hash"] = (
            "SHA-256 of the UTF-8 CSV line (RFC 4180, minimal quoting, no line end) of the row's other "
            "columns in file order: '' for null, floats as shortest round-trip repr, true/false, ISO dates"
        )
    result.manifest = _target(out, f"manifest_{safe_component(fmt)}_{day}.json")
    _write_atomic(result.manifest, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return result
