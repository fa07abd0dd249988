"""`pipelines-dbt`: dbt, tied to the process that started it.

dagster-dbt runs dbt as a child process. If the run worker is killed (kill -9, out of memory), a plain child
would keep writing to the warehouse for a while; this entry point asks the kernel to send dbt SIGTERM when its
parent dies, then becomes dbt (exec), so arguments, output and exit status are dbt's own.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pipelines.runs import die_with_parent


def real_dbt() -> str:
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


def main() -> None:
    die_with_parent()
    if os.getppid() == 1:  # the parent died before the request took effect
        sys.exit(143)
    if os.environ.get("PIPELINES_DBT_SPARK_SESSION"):  # the Spark engine: dbt joins a session this process opens
        from pipelines.engines.spark.dbt_session import run_dbt

        sys.exit(run_dbt(sys.argv[1:]))
    dbt = real_dbt()
    os.execv(dbt, [dbt, *sys.argv[1:]])


if __name__ == "__main__":
    main()
