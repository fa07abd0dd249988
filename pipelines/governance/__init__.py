"""Governance: departments' data meets only inside approved dbt models (see `approvals`)."""
