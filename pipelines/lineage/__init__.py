"""Column-level lineage and PII classification that travels with it (landed -> raw -> de-identified -> dbt -> published).

- `classification`: the tags a column carries (`pii/role`, `pii/entity`, `pii/operator`, `pii/state`, `pii/key_id`)
  and the rules that change them along a step (aggregate, generalize, pseudonymize, DP).
- `dbt`: static column lineage of every dbt model, from the project's SQL, with sqlglot.
- `metadata`: `dagster/column_lineage` and `dagster/column_schema` values for each asset, and the published
  columns' classification gate.
"""
