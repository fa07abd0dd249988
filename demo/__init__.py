"""Seeded demo-data generator: realistic departmental landing CSVs plus PII ground truth."""

from demo.generator import DEPARTMENTS, MAX_ROWS, SPECS, WrittenFile, generate, generate_files

__all__ = ["DEPARTMENTS", "MAX_ROWS", "SPECS", "WrittenFile", "generate", "generate_files"]
