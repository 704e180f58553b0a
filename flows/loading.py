"""Loading the day's inputs (SPEC §2): locate, read, type-check, checksum.

Structural problems — a missing file, a missing column, a column whose type cannot be
cast, a bad methodology table — raise ``StructuralError`` naming the file and column.
Problems of single values are left to ``transforms.validation`` (quarantine).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from transforms import contract
from transforms.contract import DATE, F64, I32, INPUT_TABLES, METHODOLOGY_TABLES, STR
from transforms.pipeline import MarginInputs

#: SPEC §2 table contracts (``transforms.contract``): column → type.  Optional columns are filled with nulls.
TABLE_SCHEMAS = contract.INPUT_SCHEMAS
OPTIONAL_COLUMNS = contract.OPTIONAL_COLUMNS
#: Optional tables (SPEC §11): absent in both folders, the run has no such output.
OPTIONAL_TABLES = contract.OPTIONAL_INPUT_TABLES
POLARS_TYPES = contract.POLARS_TYPES
#: The same contracts as Polars dtypes (for writers of input files: the generator, tests).
CONTRACT_SCHEMAS = contract.INPUT_POLARS_SCHEMAS
POLICY_DEFAULTS = {
    "maintenance_ratio": 0.75,
    "vol_floor": 0.01,
    "reporting_lei": None,
    "collateralisation_category": "OWC2",
    "max_quarantined_position_share": 0.01,
}


class StructuralError(Exception):
    """An input that cannot be used at all; the run fails before publishing anything."""

    def __init__(self, file: Path | str, column: str | None, reason: str):
        self.file, self.column, self.reason = str(file), column, reason
        label = "key" if self.file.endswith(".toml") else "column"
        where = f"{self.file}" + (f", {label} '{column}'" if column else "")
        super().__init__(f"{where}: {reason}")


@dataclass
class LoadedInputs:
    """Typed inputs plus what the run record needs: files, checksums, policy."""

    margin_inputs: MarginInputs
    files: dict[str, str]
    checksums: dict[str, str]
    policy: dict


def date_folder(inputs_root: Path, as_of: dt.date) -> Path:
    return Path(inputs_root) / f"date={as_of.isoformat()}"


def locate(inputs_root: Path, as_of: dt.date, file_name: str) -> Path:
    """The file in ``date=D/`` if present, else in ``reference/``, else a structural error.

    Something of that name that is not a file (a folder, a broken link) is a structural
    error, never a silent fall back to ``reference/``."""
    for folder in (date_folder(inputs_root, as_of), Path(inputs_root) / "reference"):
        candidate = folder / file_name
        if candidate.is_file():
            return candidate
        if candidate.exists() or candidate.is_symlink():
            kind = "a folder" if candidate.is_dir() else "a broken link" if not candidate.exists() else "not a file"
            raise StructuralError(candidate, None, f"is {kind}, not a regular file")
    raise StructuralError(
        date_folder(inputs_root, as_of) / file_name, None, f"file not found here nor in {Path(inputs_root) / 'reference'}"
    )


def locate_optional(inputs_root: Path, as_of: dt.date, file_name: str) -> Path | None:
    """``locate`` for an optional table: None when it is in neither folder."""
    try:
        return locate(inputs_root, as_of, file_name)
    except StructuralError:
        return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cast_column(schema: pl.Schema, path: Path, column: str, wanted: str) -> pl.Expr:
    dtype = schema[column]
    col = pl.col(column)
    if dtype == pl.Null:
        return col.cast(POLARS_TYPES[wanted])
    if wanted == STR:
        if dtype in (pl.String, pl.Categorical) or isinstance(dtype, (pl.Categorical, pl.Enum)):
            return col.cast(pl.String)
    elif wanted == F64:
        if dtype.is_numeric():
            return col.cast(pl.Float64)
    elif wanted == I32:
        if dtype.is_integer():
            return col.cast(pl.Int32, strict=True)
    elif wanted == DATE:
        if dtype == pl.Date:
            return col
        if isinstance(dtype, pl.Datetime):
            return col.dt.date()
    raise StructuralError(path, column, f"has type {dtype}, which cannot be read as {wanted}")


def _not_parquet(path: Path, error: Exception) -> StructuralError:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return StructuralError(path, None, f"not a readable Parquet file ({first_line[:200]})")


def _contract_columns(schema: pl.Schema, path: Path, table: str) -> list[pl.Expr]:
    """One expression per SPEC §2 column: the file's column cast to its contract type."""
    columns = []
    for column, wanted in TABLE_SCHEMAS[table].items():
        if column not in schema:
            if (table, column) in OPTIONAL_COLUMNS:
                columns.append(pl.lit(None, dtype=POLARS_TYPES[wanted]).alias(column))
                continue
            raise StructuralError(path, column, "required column is missing" + _near_miss(column, list(schema)))
        columns.append(_cast_column(schema, path, column, wanted).alias(column))
    return columns


def scan_table(path: Path, table: str) -> pl.LazyFrame:
    """``read_table`` without reading: the columns and types are checked from the file's
    metadata, the rows are read (and cast) when the plan runs — so a book larger than
    memory can be streamed, e.g. into partitions (``flows.partitioned``)."""
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as error:  # corrupt, truncated, not Parquet
        raise _not_parquet(path, error) from error
    return pl.scan_parquet(path).select(_contract_columns(schema, path, table))


def read_table(path: Path, table: str) -> pl.DataFrame:
    """Read one Parquet table and cast it to its SPEC §2 contract (extra columns dropped).

    Only the contract's columns are read, so an extra column of a type Polars cannot
    load (e.g. a decimal256 wider than 38 digits) is ignored like any extra column."""
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as error:  # corrupt, truncated, not Parquet
        raise _not_parquet(path, error) from error
    columns = _contract_columns(schema, path, table)  # names a missing column, with the file's near miss
    wanted = [column for column in TABLE_SCHEMAS[table] if column in schema]
    try:
        raw = pl.read_parquet(path, columns=wanted)
    except Exception as error:  # truncated data pages, or one contract column that cannot be loaded
        for column in wanted:
            try:
                pl.read_parquet(path, columns=[column])
            except Exception as column_error:
                reason = str(column_error).strip().splitlines()[0][:200] if str(column_error).strip() else ""
                raise StructuralError(path, column, f"cannot be read ({reason or type(column_error).__name__})") from error
        raise _not_parquet(path, error) from error
    try:
        return raw.select(columns)
    except pl.exceptions.PolarsError as error:
        for column in columns:  # one column at a time, so the message names the failing column
            try:
                raw.select(column)
            except pl.exceptions.PolarsError as column_error:
                name = column.meta.output_name()
                raise StructuralError(path, name, f"cannot be read as {TABLE_SCHEMAS[table][name]} "
                                                  f"({str(column_error).splitlines()[0][:200]})") from column_error
        raise StructuralError(path, None, f"cannot cast to the contract types ({str(error).splitlines()[0][:200]})")


def _near_miss(column: str, present: list[str]) -> str:
    """A hint naming the file's column that looks like the missing one (names are exact)."""
    folded = {name.strip().lower().replace(" ", "_"): name for name in present}
    if column in folded:
        return f" (found {folded[column]!r}; column names are exact)"
    close = difflib.get_close_matches(column, present, n=1, cutoff=0.8)
    return f" (found {close[0]!r}; column names are exact)" if close else ""


def _require(condition: bool, path: Path, column: str, reason: str) -> None:
    if not condition:
        raise StructuralError(path, column, reason)


def _check_finite(frame: pl.DataFrame, path: Path) -> None:
    for column, dtype in frame.schema.items():
        values = frame[column]
        _require(values.null_count() == 0, path, column, "null value in a methodology table")
        if dtype == pl.Float64:
            _require(bool(values.is_finite().all()), path, column, "NaN or infinite value in a methodology table")


def _check_range(frame: pl.DataFrame, path: Path, column: str, low: float, high: float, *, open_low=False,
                 open_high=False) -> None:
    values = frame[column]
    if values.len() == 0:
        return
    low_ok = (values > low).all() if open_low else (values >= low).all()
    high_ok = (values < high).all() if open_high else (values <= high).all()
    interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    _require(bool(low_ok and high_ok), path, column, f"value outside {interval}")


def _check_unique(frame: pl.DataFrame, path: Path, key: list[str]) -> None:
    _require(not frame.select(key).is_duplicated().any(), path, ", ".join(key), "duplicate key")


def check_methodology(tables: dict[str, pl.DataFrame], paths: dict[str, Path]) -> None:
    """SPEC §2: methodology tables are trusted configuration; any bad value is structural."""
    for name in METHODOLOGY_TABLES:
        _check_finite(tables[name], paths[name])
    haircuts, hp = tables["haircuts"], paths["haircuts"]
    _check_range(haircuts, hp, "haircut", 0, 1)
    _check_range(haircuts, hp, "tier_start_usd", 0, math.inf)
    _check_unique(haircuts, hp, ["asset", "tier_start_usd"])
    first_tiers = haircuts.group_by("asset").agg(pl.col("tier_start_usd").min())
    _require(bool((first_tiers["tier_start_usd"] == 0).all()), hp, "tier_start_usd",
             "each asset's first tier must start at 0")
    risk, rp = tables["risk_params"], paths["risk_params"]
    _check_unique(risk, rp, ["underlying"])
    _check_range(risk, rp, "price_scan", 0, 1, open_low=True, open_high=True)
    _check_range(risk, rp, "vol_scan", 0, math.inf)
    for column in ("im_rate", "spread_rate", "short_option_min_rate"):
        _check_range(risk, rp, column, 0, 1)
    scenarios, sp = tables["scenarios"], paths["scenarios"]
    _require(scenarios.height > 0, sp, "scenario_id", "no scenarios")
    _check_unique(scenarios, sp, ["scenario_id"])
    _check_range(scenarios, sp, "cover", 0, 1)
    # Only downward moves can take a price to zero or below: 1 + price_scan_u × min_k price_move_k > 0
    # for every underlying (SPEC §2); upward moves are unbounded (extended grids, +10 scan ranges).
    lowest_move = float(scenarios["price_move"].min())
    if risk.height and lowest_move < 0:
        largest_scan = float(risk["price_scan"].max())
        _require(1 + largest_scan * lowest_move > 0, rp, "price_scan",
                 f"1 + price_scan × min price_move must be > 0 (a scenario would take a price to zero or below): "
                 f"1 + {largest_scan:g} × {lowest_move:g} with price_move from {sp}")
    offsets, op = tables["offsets"], paths["offsets"]
    _check_unique(offsets, op, ["priority"])
    _check_range(offsets, op, "ratio_a", 0, math.inf, open_low=True)
    _check_range(offsets, op, "ratio_b", 0, math.inf, open_low=True)
    _check_range(offsets, op, "credit_rate", 0, 1)


def check_stress_scenarios(stresses: pl.DataFrame, path: Path) -> None:
    """SPEC §11: the stress table is trusted configuration; a bad value is structural, naming the column.

    ``stress_id`` and ``underlying`` non-blank, ``price_move`` finite and > −1 (no price
    to zero or below), ``vol_move`` finite, key (``stress_id``, ``underlying``) unique.
    """
    for column in ("stress_id", "underlying"):
        values = stresses[column]
        _require(values.null_count() == 0 and not bool((values.str.strip_chars() == "").any()), path, column,
                 "null or blank value in the stress table")
    for column in ("price_move", "vol_move"):
        values = stresses[column]
        _require(values.null_count() == 0, path, column, "null value in the stress table")
        _require(bool(values.is_finite().all()), path, column, "NaN or infinite value in the stress table")
    _require(bool((stresses["price_move"] > -1).all()), path, "price_move",
             "value ≤ −1 (a stress would take a price to zero or below)")
    _check_unique(stresses, path, ["stress_id", "underlying"])

#: The type each ``policy.toml`` key must have (SPEC §2); ``None`` allowed where the default is.
POLICY_TYPES: dict[str, tuple[type, ...]] = {
    "maintenance_ratio": (int, float),
    "vol_floor": (int, float),
    "reporting_lei": (str,),
    "collateralisation_category": (str,),
    "max_quarantined_position_share": (int, float),
}


def read_policy(path: Path) -> dict:
    """``policy.toml`` with SPEC defaults for absent keys, range-checked.

    Trusted configuration (SPEC §2): an unreadable or non-UTF-8 file, an unknown key or a
    value of the wrong type or range is a ``StructuralError`` naming the file and the key."""
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise StructuralError(path, None, f"not UTF-8 text (byte {error.start}: {error.reason})") from error
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise StructuralError(path, None, f"not a readable TOML file ({error})") from error
    for key, value in raw.items():
        if key not in POLICY_TYPES:
            close = difflib.get_close_matches(key, list(POLICY_TYPES), n=1, cutoff=0.8)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(POLICY_TYPES)}"
            raise StructuralError(path, key, f"unknown policy key ({hint})")
        wanted = POLICY_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, wanted):
            kind = "a finite number" if float in wanted else "text"
            raise StructuralError(path, key, f"must be {kind}, not {type(value).__name__} {value!r}"[:200])
    policy = {**POLICY_DEFAULTS, **raw}
    for key in ("maintenance_ratio", "vol_floor", "max_quarantined_position_share"):
        _require(math.isfinite(policy[key]), path, key, "must be a finite number")
        policy[key] = float(policy[key])
    _require(0 < policy["maintenance_ratio"] <= 1, path, "maintenance_ratio", "value outside (0, 1]")
    _require(policy["vol_floor"] > 0, path, "vol_floor", "must be > 0")
    _require(0 <= policy["max_quarantined_position_share"] <= 1, path, "max_quarantined_position_share",
             "value outside [0, 1]")
    return policy


def load_inputs(inputs_root: Path, as_of: dt.date, scan: tuple[str, ...] = ()) -> LoadedInputs:
    """Locate, read, type-check and checksum every input of ``as_of`` (SPEC §2).

    Daily tables named in ``scan`` are not read: they stay lazy scans of their files
    (``scan_table``), for a caller that streams them (``flows.partitioned``).
    """
    inputs_root = Path(inputs_root)
    if not date_folder(inputs_root, as_of).is_dir():
        raise StructuralError(date_folder(inputs_root, as_of), None, "no input folder for this date")
    paths = {name: locate(inputs_root, as_of, f"{name}.parquet") for name in (*INPUT_TABLES, *METHODOLOGY_TABLES)}
    policy_path = locate(inputs_root, as_of, "policy.toml")
    tables = {name: read_table(path, name) for name, path in paths.items() if name not in scan}
    lazy = {name: scan_table(paths[name], name) for name in scan}
    check_methodology(tables, paths)
    policy = read_policy(policy_path)
    optional = {name: path for name in OPTIONAL_TABLES if (path := locate_optional(inputs_root, as_of, f"{name}.parquet"))}
    stress_scenarios = None
    if "stress_scenarios" in optional:
        stress_scenarios = read_table(optional["stress_scenarios"], "stress_scenarios")
        check_stress_scenarios(stress_scenarios, optional["stress_scenarios"])
    paths.update(optional)
    files = {name: str(path) for name, path in paths.items()} | {"policy": str(policy_path)}
    checksums = {name: sha256_of(Path(path)) for name, path in files.items()}
    margin_inputs = MarginInputs(
        as_of=as_of,
        **{name: lazy[name] if name in lazy else tables[name].lazy() for name in INPUT_TABLES},
        **{name: tables[name] for name in METHODOLOGY_TABLES},
        maintenance_ratio=policy["maintenance_ratio"],
        vol_floor=policy["vol_floor"],
        stress_scenarios=stress_scenarios,
    )
    return LoadedInputs(margin_inputs=margin_inputs, files=files, checksums=checksums, policy=policy)
