"""Privacy budgets per consumer, approval and period, kept in an append-only, tamper-evident ledger.

The ledger is an audit log of its own (`<data_dir>/audit/dp_ledger.jsonl`, hash-chained and keyed like every
audit log; see pipelines.audit). Each record says who spent how much on what, when, for which purpose and by
which mechanism; never an answer. A consumer's spending in a period is the sum of its `dp_spend` records for
that approval and period; a request that would take it past the budget is refused (and the refusal recorded)
before anything is computed, so nothing is released.

Caching rule: a release is identified by the approval, the request (statistics, grouping, epsilon, delta,
bounds) and the version of the data (a content hash of the person-level table). When the same consumer makes
the same request of the same data again, the answer stored when it was first paid for is returned and
nothing is spent (a `dp_reuse` record notes the access). New data, another request or a lost cache means new
noise, which is new information: that is charged again. Cached answers are the released (noisy) tables only,
owner-only under `<data_dir>/dp/cache/`.

Budgets come from the approval's `dp_release.budgets`, and from a budgets file (`$PIPELINES_DP_BUDGETS`, else
`<data_dir>/dp/budgets.yaml`: `{approval: [{consumer, epsilon, delta}]}`), whose entries replace the
approval's for the same consumer. A consumer without a budget has none: every request is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from pipelines import audit
from pipelines.governance.approvals import DPBudget, DPRelease

LEDGER_LOG = "dp_ledger.jsonl"
BUDGETS_ENV = "PIPELINES_DP_BUDGETS"
_TOLERANCE = 1e-12  # float sums of epsilons: 0.1 + 0.2 must not exceed 0.3


class BudgetExceeded(RuntimeError):
    """The request would exceed the consumer's budget; nothing was computed or released."""


class LedgerBroken(RuntimeError):
    """The ledger does not verify, so spending cannot be trusted; nothing is released."""


@dataclass(frozen=True)
class Charge:
    """One request for privacy loss: who, on which approval, how much, why, and what exactly."""

    consumer: str
    approval: str
    epsilon: float
    delta: float
    purpose: str
    kind: str  # release | query
    request: str  # the request's fingerprint
    data_version: str
    mechanism: str

    @property
    def cache_key(self) -> str:
        """Same consumer, approval, request and data: the same answer, paid once."""
        parts = [self.consumer, self.approval, self.request, self.data_version]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]


@dataclass
class Outcome:
    """The answer and what it cost."""

    table: pl.DataFrame
    record: dict[str, Any]
    cached: bool
    spent: tuple[float, float]
    remaining: tuple[float, float]
    mechanism: dict[str, Any] | None = None


@dataclass(frozen=True)
class Ledger:
    """Where the ledger, its lock and the answer cache live for one data directory."""

    root: Path

    @property
    def path(self) -> Path:
        return self.root / "audit" / LEDGER_LOG

    @property
    def cache_dir(self) -> Path:
        return self.root / "dp" / "cache"

    @property
    def budgets_file(self) -> Path:
        return Path(os.environ.get(BUDGETS_ENV) or self.root / "dp" / "budgets.yaml")


def period_key(period: str, today: date | None = None) -> str:
    """The budget period a day falls in: 2026-12-03, 2026-12, 2026-Q4 or 2026."""
    today = today or date.today()
    return {
        "day": today.isoformat(),
        "month": f"{today.year}-{today.month:02d}",
        "quarter": f"{today.year}-Q{(today.month - 1) // 3 + 1}",
        "year": str(today.year),
    }[period]


def load_budgets_file(path: Path) -> dict[str, dict[str, DPBudget]]:
    """approval -> consumer -> budget, from a budgets file (absent: none)."""
    if not path.exists():
        return {}
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a mapping of approval -> list of {{consumer, epsilon, delta}} is expected")
    return {
        str(a): {b.consumer: b for b in (DPBudget.model_validate(e) for e in entries or [])}
        for a, entries in raw.items()
    }


def budgets_for(ledger: Ledger, approval: str, release: DPRelease) -> dict[str, DPBudget]:
    """Every consumer's budget on one approval: the approval's, overridden by the budgets file."""
    declared = {b.consumer: b for b in release.budgets}
    return declared | load_budgets_file(ledger.budgets_file).get(approval, {})


def _records(path: Path) -> list[dict[str, Any]]:
    """The ledger's complete records (a torn last line is skipped, as audit.verify reports it)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def spent(ledger: Ledger, consumer: str, approval: str, period: str) -> tuple[float, float]:
    """(epsilon, delta) the consumer spent on the approval in the period (basic composition)."""
    eps = delta = 0.0
    for r in _records(ledger.path):
        if r.get("action") == "dp_spend" and (r.get("consumer"), r.get("approval"), r.get("period")) == (
            consumer,
            approval,
            period,
        ):
            eps, delta = eps + float(r["epsilon"]), delta + float(r["delta"])
    return eps, delta


def summary(ledger: Ledger, approval: str, release: DPRelease, today: date | None = None) -> dict[str, Any]:
    """Spent and remaining per consumer in the current period (for UI metadata and `dp budget`)."""
    period = period_key(release.period, today)
    out = {}
    for consumer, budget in sorted(budgets_for(ledger, approval, release).items()):
        eps, delta = spent(ledger, consumer, approval, period)
        out[consumer] = {
            "period": period,
            "epsilon_budget": budget.epsilon,
            "epsilon_spent": round(eps, 9),
            "epsilon_remaining": round(max(budget.epsilon - eps, 0.0), 9),
            "delta_budget": budget.delta,
            "delta_spent": delta,
            "delta_remaining": max(budget.delta - delta, 0.0),
        }
    return out


@contextlib.contextmanager
def _locked(ledger: Ledger) -> Iterator[None]:
    """One charge at a time per data directory: check, compute and record are one step."""
    ledger.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    ledger.cache_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(ledger.cache_dir.parent / "ledger.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _verified(ledger: Ledger) -> None:
    """Refuse to spend from a ledger whose chain does not verify."""
    ok, message = audit.verify(ledger.path)
    if not ok:
        raise LedgerBroken(f"the privacy budget ledger does not verify ({message}); nothing was released")


def _cache_file(ledger: Ledger, key: str) -> Path:
    return ledger.cache_dir / f"{key}.parquet"


def _paid_for(ledger: Ledger, charge: Charge) -> dict[str, Any] | None:
    """The spend record that paid for this exact answer, if its stored answer is still there."""
    if not _cache_file(ledger, charge.cache_key).exists():
        return None
    for r in reversed(_records(ledger.path)):
        if r.get("action") == "dp_spend" and r.get("cache_key") == charge.cache_key:
            return r
    return None


def _write_whole(target: Path, write: Callable[[Path], None]) -> None:
    """Write beside the target, owner-only, then rename: a reader sees the whole file or none."""
    partial = target.with_name(target.name + ".partial")
    write(partial)
    os.chmod(partial, 0o600)
    os.replace(partial, target)


def _store(ledger: Ledger, key: str, table: pl.DataFrame, mechanism: dict[str, Any]) -> None:
    """Keep a released (noisy) table and its mechanism; the table last, since it marks the entry complete."""
    ledger.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = json.dumps(mechanism, sort_keys=True, default=str)
    _write_whole(_cache_file(ledger, key).with_suffix(".json"), lambda p: p.write_text(text, encoding="utf-8"))
    _write_whole(_cache_file(ledger, key), table.write_parquet)


def _cached(ledger: Ledger, key: str) -> tuple[pl.DataFrame, dict[str, Any] | None]:
    meta = _cache_file(ledger, key).with_suffix(".json")
    return pl.read_parquet(_cache_file(ledger, key)), json.loads(
        meta.read_text(encoding="utf-8")
    ) if meta.exists() else None


def _event(action: str, charge: Charge, period: str, **extra: Any) -> dict[str, Any]:
    """A ledger record: who, what, why, how much; never a value of the answer."""
    return {
        "action": action,
        "consumer": charge.consumer,
        "approval": charge.approval,
        "period": period,
        "kind": charge.kind,
        "purpose": charge.purpose,
        "mechanism": charge.mechanism,
        "epsilon": charge.epsilon,
        "delta": charge.delta,
        "request": charge.request,
        "data_version": charge.data_version,
        "cache_key": charge.cache_key,
        **extra,
    }


def _refusal(charge: Charge, budget: DPBudget | None, used: tuple[float, float], period: str) -> str:
    """A clear refusal: who, what was asked, what is left, and that nothing was released."""
    if budget is None:
        return (
            f"consumer {charge.consumer} has no privacy budget on {charge.approval}; refused, nothing was released "
            "(budgets are declared in the approval's dp_release.budgets or the budgets file)"
        )
    return (
        f"refused: consumer {charge.consumer} asked for epsilon {charge.epsilon:g}, delta {charge.delta:g} on {charge.approval}, "
        f"but has spent epsilon {used[0]:g} of {budget.epsilon:g} and delta {used[1]:g} of {budget.delta:g} in period {period} "
        f"(remaining epsilon {max(budget.epsilon - used[0], 0):g}, delta {max(budget.delta - used[1], 0):g}); nothing was released"
    )


def _fits(charge: Charge, budget: DPBudget | None, used: tuple[float, float]) -> bool:
    return budget is not None and (
        used[0] + charge.epsilon <= budget.epsilon + _TOLERANCE and used[1] + charge.delta <= budget.delta + _TOLERANCE
    )


def charge(
    ledger: Ledger,
    charge: Charge,
    budget: DPBudget | None,
    period: str,
    compute: Callable[[], tuple[pl.DataFrame, dict[str, Any]]],
) -> Outcome:
    """Answer a request if the budget allows: the cached answer for free, else compute, store, record, return."""
    with _locked(ledger):
        _verified(ledger)
        used = spent(ledger, charge.consumer, charge.approval, period)
        limit = (budget.epsilon, budget.delta) if budget else (0.0, 0.0)
        paid = _paid_for(ledger, charge)
        if paid is not None:
            record = audit.append(
                ledger.path, _event("dp_reuse", charge, period, epsilon_charged=0.0, paid_by_seq=paid["seq"])
            )
            table, mechanism = _cached(ledger, charge.cache_key)
            return Outcome(table, record, True, used, (limit[0] - used[0], limit[1] - used[1]), mechanism)
        if not _fits(charge, budget, used):
            audit.append(ledger.path, _event("dp_refused", charge, period, spent_epsilon=used[0], spent_delta=used[1]))
            raise BudgetExceeded(_refusal(charge, budget, used, period))
        table, mechanism = compute()
        _store(ledger, charge.cache_key, table, mechanism)
        after = (used[0] + charge.epsilon, used[1] + charge.delta)
        record = audit.append(
            ledger.path,
            _event(
                "dp_spend",
                charge,
                period,
                spent_epsilon=after[0],
                spent_delta=after[1],
                remaining_epsilon=limit[0] - after[0],
                remaining_delta=limit[1] - after[1],
            ),
        )
        return Outcome(table, record, False, after, (limit[0] - after[0], limit[1] - after[1]), mechanism)
