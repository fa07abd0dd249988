"""Where the project's files live: the one definition of every project path (the data directory is a setting,
see `resources.default_data_dir`)."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS_DIR = PROJECT_ROOT / "contracts"  # one YAML per department's dataset
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"  # reviewed Great Expectations suites
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"  # the approved models
WORKSPACE = PROJECT_ROOT / "workspace.yaml"  # the code location, for `dagster job launch`
