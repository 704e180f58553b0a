"""Time the EMIR margin report (``margin export --format emir-csv|emir-xml``) of a published date.

    uv run python -m benchmarks.export_emir DB DATE INPUTS [--out DIR] [--formats emir-csv,emir-xml]

``DB`` is a warehouse with ``DATE`` published (e.g. the 10M benchmark book: 1,000,000
accounts), opened read-only.  Each format is exported once with ``allow_partial`` (the
generated books carry accounts with invalid LEIs, which are listed as rejections).
Prints one JSON line per format: seconds, records written, records rejected, bytes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

from outputs.exports import export_files

REPORTING_TIME = dt.datetime(2026, 11, 17, 6, 0, 0, tzinfo=dt.timezone.utc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path)
    parser.add_argument("date", type=dt.date.fromisoformat)
    parser.add_argument("inputs", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--formats", default="emir-csv,emir-xml")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="emir-export-"))
    for fmt in args.formats.split(","):
        start = time.perf_counter()
        result = export_files(args.db, args.date, fmt, out, REPORTING_TIME, allow_partial=True, inputs=args.inputs)
        seconds = time.perf_counter() - start
        print(json.dumps({
            "format": fmt, "seconds": round(seconds, 3), "records": result.records, "rejected": len(result.rejected),
            "bytes": sum(path.stat().st_size for path in result.files),
        }), flush=True)


if __name__ == "__main__":
    main()
