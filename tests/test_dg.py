"""Dagster's project conventions: `dg` finds the code location from `[tool.dg]` and loads every definition."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"


def dg(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "PIPELINES_DATA_DIR": str(tmp_path / "data"),
        "NO_COLOR": "1",
        "COLUMNS": "300",
    }
    return subprocess.run([str(DG), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_dg_check_defs_passes(tmp_path):
    done = dg("check", "defs", tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_dg_lists_the_departments_jobs_and_sensors(tmp_path):
    done = dg("list", "defs", "--json", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in (
        "deidentified_hr_employees",
        "published_mart_org_unit_activity",
        "integrate_all",
        "hr_employees_landing_sensor",
        "integrate_all_daily",
    ):
        assert name in done.stdout
