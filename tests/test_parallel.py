"""The persistent scanning pool (`pipelines.privacy.parallel`): a fork-context ProcessPoolExecutor whose workers
inherit the loaded model, kept across calls, replaced when what they inherited is out of date, and ended cleanly."""

import multiprocessing
import os

import pytest

from pipelines.privacy import analyzer as an
from pipelines.privacy import parallel

pytestmark = pytest.mark.skipif(not parallel.can_fork(), reason="workers are forked")


class Index:
    """Stands in for a heavy object (the known-identifier index): the workers must use their inherited copy."""

    def __init__(self, words) -> None:
        self.words = set(words)


def _lookup(chunk, args):
    index, suffix = args
    return [(word in index.words, os.getpid(), suffix) for word in chunk]


@pytest.fixture(autouse=True)
def no_pool():
    parallel.shutdown()
    yield
    parallel.shutdown()


def test_the_pool_is_kept_across_calls_and_inherits_heavy_objects_instead_of_pickling_them():
    index = Index(["maria", "lopez"])
    index.unpicklable = lambda: None  # pickling the index would fail: the workers must take their inherited copy
    words = ["maria", "paris", "lopez", "ticket"] * 50
    first = parallel.map_in_processes(_lookup, words, 2, (index, "a"), 10)
    pids = parallel.pool_pids()
    assert len(pids) == 2 and os.getpid() not in pids
    assert [found for found, _, _ in first] == [w in index.words for w in words]
    assert {pid for _, pid, _ in first} <= set(pids)
    # plain arguments (here a string) go by value: a new one does not need a new pool
    second = parallel.map_in_processes(_lookup, words, 2, (index, "b"), 10)
    assert parallel.pool_pids() == pids
    assert {suffix for _, _, suffix in second} == {"b"}


def test_a_new_object_an_invalidation_or_another_process_count_forks_a_new_pool():
    words = ["maria"] * 40
    parallel.map_in_processes(_lookup, words, 2, (Index(["maria"]), ""), 10)
    pids = parallel.pool_pids()
    other = Index([])  # made after the fork: the workers do not have it
    assert [found for found, _, _ in parallel.map_in_processes(_lookup, words, 2, (other, ""), 10)] == [False] * 40
    assert not set(parallel.pool_pids()) & set(pids)
    pids = parallel.pool_pids()
    parallel.invalidate()  # a cache was cleared in the parent
    parallel.map_in_processes(_lookup, words, 2, (other, ""), 10)
    assert not set(parallel.pool_pids()) & set(pids)
    parallel.map_in_processes(_lookup, words, 3, (other, ""), 10)
    assert len(parallel.pool_pids()) == 3


def test_shutdown_leaves_no_worker_running():
    parallel.map_in_processes(_lookup, ["x"] * 40, 2, (Index([]), ""), 10)
    pids = parallel.pool_pids()
    parallel.shutdown()
    assert parallel.pool_pids() == []
    alive = {p.pid for p in multiprocessing.active_children()}
    assert not alive & set(pids)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _fail_on(chunk, args):
    if args[0] in chunk:
        raise ValueError("chunk holds the bad item")
    return chunk


def test_an_error_in_a_worker_is_raised_in_the_caller_and_the_pool_keeps_working():
    with pytest.raises(ValueError, match="bad item"):
        parallel.map_in_processes(_fail_on, list(range(100)), 2, (57,), 10)
    assert parallel.map_in_processes(_fail_on, list(range(100)), 2, (-1,), 10) == list(range(100))


def test_without_fork_everything_runs_in_the_calling_process(monkeypatch):
    monkeypatch.setattr(parallel, "_FORK", None)
    out = parallel.map_in_processes(_lookup, ["maria"] * 30, 2, (Index(["maria"]), ""), 10)
    assert {pid for _, pid, _ in out} == {os.getpid()}
    assert parallel.pool_pids() == []


def test_the_scan_in_two_processes_equals_one_and_reuses_the_pool_across_calls():
    texts = [f"Ticket {i}: call Maria Lopez-{i} on 0688 843 79 {i % 100:02d} in Paris" for i in range(600)]
    alone = an.scan_texts(texts, n_process=1)
    first = an.scan_texts(texts[:300], n_process=2)
    pids = parallel.pool_pids()
    second = an.scan_texts(texts[300:], n_process=2)
    assert parallel.pool_pids() == pids  # the second call ran on the same workers

    def keys(results):
        return [[(r.entity_type, r.start, r.end, round(r.score, 6)) for r in rs] for rs in results]

    assert keys(first + second) == keys(alone)
