"""Differential privacy: OpenDP releases of approved marts, per-consumer budgets, audited analyst queries."""
