"""Environment settings (flows.settings)."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import PROJECT_ROOT


def test_prefect_home_is_created_when_the_data_dir_does_not_exist_yet(tmp_path):
    """A fresh MARGIN_DATA_DIR must not make Prefect's temporary server time out (minutes)."""
    data_dir = tmp_path / "not" / "there" / "yet"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"} | {"MARGIN_DATA_DIR": str(data_dir)}
    code = "from flows.settings import configure_prefect; configure_prefect(); import os; print(os.environ['PREFECT_HOME'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str(data_dir / ".prefect")
    assert (data_dir / ".prefect").is_dir()


def test_only_settings_reads_the_environment():
    """Issue 11: partitions, the Dask address, the lock timeout and the orchestration mode
    travel as parameters; ``os.environ`` / ``os.getenv`` appear in flows/settings.py only."""
    import re

    readers = []
    for folder in ("flows", "transforms", "market", "outputs"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            if path.relative_to(PROJECT_ROOT).as_posix() == "flows/settings.py":
                continue
            code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
            if re.search(r"\bos\.(environ|getenv|putenv)\b|\bfrom os import .*\b(environ|getenv)\b", code):
                readers.append(path.relative_to(PROJECT_ROOT).as_posix())
    assert readers == []
