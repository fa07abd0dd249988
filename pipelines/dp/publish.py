"""The DP release an approval declares: its request, charged to the release consumer's budget, and its card."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.dp import budget as budgets
from pipelines.dp.query import answer
from pipelines.dp.release import Request, Statistic
from pipelines.governance.approvals import Approval


def release_request(approval: Approval) -> Request:
    """The approval's `dp_release` as an OpenDP request over its person-level join."""
    spec, join = approval.dp_release, approval.person_join
    if spec is None or join is None:
        raise ValueError("the approval declares no dp_release")
    statistics = tuple(Statistic(m.name, m.kind, m.column, m.bounds) for m in spec.measures)
    return Request(
        privacy_unit=join.privacy_unit,
        group_by=tuple(spec.group_by),
        statistics=statistics,
        epsilon=spec.epsilon,
        delta=spec.delta,
        max_contributions=spec.max_contributions,
        max_group_rows=spec.max_group_rows,
    )


def publish_release(
    data_dir: Path, mart: str, approval: Approval, frame: pl.DataFrame, today: date | None = None
) -> budgets.Outcome:
    """The release's table, paid by `release_consumer` once per data version (BudgetExceeded: nothing)."""
    spec = approval.dp_release
    assert spec is not None
    return answer(
        budgets.Ledger(Path(data_dir)),
        mart,
        approval,
        release_request(approval),
        frame,
        consumer=spec.release_consumer,
        purpose=approval.purpose,
        kind="release",
        today=today,
    )


def _bounds(mechanism: dict[str, Any]) -> str:
    return ", ".join(
        f"{s['name']} ({s['kind']}"
        + (
            f" of {s['column']} clipped to [{s['bounds'][0]:g}, {s['bounds'][1]:g}] per person"
            if s.get("bounds")
            else ""
        )
        + ")"
        for s in mechanism["statistics"]
    )


def dp_card(
    mart: str, approval: Approval, mechanism: dict[str, Any], outcome: budgets.Outcome, budget: dict[str, Any]
) -> str:
    """The steward's page on a DP release: mechanism, loss, bounds, unit, noise per column, budget spent."""
    spec = approval.dp_release
    assert spec is not None
    noise = mechanism.get("noise", {})
    rows = [
        f"| {c} | {n.get('aggregate', '-')} | {n.get('distribution', '-')} | {n.get('scale', 0):.4g} | "
        f"{'-' if n.get('accuracy') is None else format(n['accuracy'], '.4g')} |"
        for c, n in noise.items()
    ]
    consumers = [
        f"| {c} | {b['period']} | {b['epsilon_spent']:g} of {b['epsilon_budget']:g} | {b['epsilon_remaining']:g} | "
        f"{b['delta_spent']:.3g} of {b['delta_budget']:.3g} |"
        for c, b in budget.items()
    ]
    return "\n".join(
        [
            f"## Differential privacy: {spec.table} (from {mart})",
            "",
            f"**Mechanism**: {mechanism['library']}; {mechanism['partition_selection']}; noise never seeded.  ",
            f"**Privacy unit**: one person = one `{mechanism['privacy_unit']}` across departments, at most "
            f"{mechanism['max_contributions']} row(s) each.  ",
            f"**Loss of this release**: epsilon {mechanism['epsilon']:g}, delta {mechanism['delta']:g} "
            f"({'served from cache: nothing spent this run' if outcome.cached else 'spent by ' + spec.release_consumer + ' in this run'}).  ",
            f"**Statistics**: {_bounds(mechanism)}; grouped by {', '.join(mechanism['group_by'])}.  ",
            f"**Intervals**: each value has `_lower`/`_upper`, its {100 * (1 - mechanism['accuracy_alpha']):.0f}% accuracy interval.",
            "",
            "| column | aggregate | noise | scale | 95% accuracy (+/-) |",
            "|---|---|---|---|---|",
            *rows,
            "",
            "### Budgets on this approval (current period)",
            "| consumer | period | epsilon spent | epsilon remaining | delta spent |",
            "|---|---|---|---|---|",
            *consumers,
        ]
    )
