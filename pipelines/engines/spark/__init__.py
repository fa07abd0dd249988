"""The Spark engine: a session resource, de-identification as Arrow batches, dbt-spark's session method."""
