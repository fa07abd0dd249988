"""SQL text helpers shared by ingestion, the privacy engine and the checks (no project imports: any layer may use it)."""


def quote_ident(name: str) -> str:
    """A DuckDB identifier in double quotes, embedded quotes doubled: safe for any column or table name."""
    return '"' + name.replace('"', '""') + '"'
