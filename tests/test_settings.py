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
