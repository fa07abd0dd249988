"""Only pipelines/privacy/speedups.py touches private internals of Presidio, spaCy, thinc, phonenumbers or `re` (issue 19).

Read statically: an import of a private name from those libraries, a private attribute of one of their modules, and,
in a class derived from one of their classes, a private attribute (on `self`, `super()` or the class) that the library's
base class has, i.e. overriding or calling its private methods.
"""

import ast
import importlib
import inspect
from pathlib import Path

import pytest

PRIVACY = Path(__file__).resolve().parents[1] / "pipelines" / "privacy"
LIBRARIES = ("presidio_analyzer", "presidio_anonymizer", "spacy", "thinc", "phonenumbers", "re")
ALLOWED = {"speedups.py"}
MODULES = sorted(p for p in PRIVACY.rglob("*.py") if p.name not in ALLOWED)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _from_library(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in LIBRARIES


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PRIVACY.parents[1]).with_suffix("").parts)


def _library_bases(cls) -> list[type]:
    return [base for base in cls.__mro__[1:] if _from_library(base.__module__)]


def private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found, library_aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            library_aliases |= {(a.asname or a.name).split(".")[0] for a in node.names if _from_library(a.name)}
        elif isinstance(node, ast.ImportFrom) and _from_library(node.module):
            found += [f"from {node.module} import {a.name}" for a in node.names if _private(a.name)]
            if node.module.split(".")[-1].startswith("_"):
                found.append(f"from {node.module} import ...")
    module = importlib.import_module(_module_name(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in library_aliases:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ClassDef):
            cls = getattr(module, node.name, None)
            if not inspect.isclass(cls) or not _library_bases(cls):
                continue
            bases = _library_bases(cls)
            names = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            names |= {
                a.attr
                for a in ast.walk(node)
                if isinstance(a, ast.Attribute)
                and isinstance(a.value, (ast.Name, ast.Call))
                and ast.unparse(a.value) in ("self", "super()", "cls")
            }
            found += [
                f"class {node.name}: {name}"
                for name in sorted(names)
                if _private(name) and any(hasattr(base, name) for base in bases)
            ]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PRIVACY)))
def test_no_private_internals_outside_the_speedups_module(path):
    assert private_uses(path) == []


def test_the_check_finds_what_the_speedups_module_does():
    found = private_uses(PRIVACY / "speedups.py")
    assert any("_parse_and_verify" in f for f in found) and any("_extract_surrounding_words" in f for f in found)
    assert any("phonenumbers.phonenumbermatcher._PATTERN" in f for f in found)
