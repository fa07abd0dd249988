"""Section 10 of BENCHMARKS.md: free-text scanning at the speed limit of one machine, with its accuracy (issue 24).

Detection alone (`scan_texts`, no masking), side by side in one run with Presidio text by text and Presidio's
`BatchAnalyzerEngine`, each at 1 and at all usable processes, on the demo's free-text columns and on the held-out half
of the labelled texts (templates detection was not tuned on) and its lowercased copy: texts per CPU-second, wall
texts/s, the ratios, the project's speed-up per process count, and the held-out accuracy in the same table. With
py-spy installed (the `bench` extra), a sampling profile of the held-out scan says where the time goes.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import SHARED_DATA, fmt_rate, fmt_ratio, md_table, stamp
from bench.methods import processes as usable_processes
from bench.sections import TEXT_COLUMNS, BenchConfig

TITLE = "## 10. Free-text speed and accuracy"
METHODS = ("this project", "Presidio per text", "Presidio batch")
DEMO_COLUMNS = (*TEXT_COLUMNS, ("it_security_incidents", "description"))
MAX_DEMO_TEXTS = 1000  # per column: Presidio text by text runs ~100 texts per CPU-second
PROFILE_RATE = 100  # py-spy samples per second


@dataclass
class Runs:
    """Wall and CPU seconds of every repeat, per (method, processes)."""

    texts: int
    wall: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    cpu: dict[tuple[str, int], list[float]] = field(default_factory=dict)

    def add(self, key: tuple[str, int], wall: float, cpu: float) -> None:
        self.wall.setdefault(key, []).append(wall)
        self.cpu.setdefault(key, []).append(cpu)

    def rate(self, method: str, n: int) -> float:
        """Wall texts/s (best repeat)."""
        return self.texts / min(self.wall[(method, n)])

    def cpu_rate(self, method: str, n: int) -> float:
        """Texts per CPU-second, this process and its workers (best repeat)."""
        return self.texts / max(min(self.cpu[(method, n)]), 1e-9)


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (workers are reaped when their pool ends)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _per_text_chunk(texts: list[str], args: tuple) -> list:
    (baseline,) = args
    from pipelines.privacy.analyzer import LANGUAGE

    return [baseline.analyze(text, LANGUAGE) for text in texts]


def measure(texts: list[str], counts: tuple[int, ...], reps: int, log=None) -> tuple[Runs, Runs]:
    """Every method at every process count, interleaved (methods rotated, process counts reversed every other repeat)
    so they see the same load. The project starts cold every repeat (NER cache, phone verdicts, keyword memos);
    with n > 1 its pool is forked before the clock starts, as for a run's later chunks (`Runs` #2: the same scan with
    the fork in the timing, as a single call pays it)."""
    from presidio_analyzer import BatchAnalyzerEngine

    from pipelines.privacy import analyzer, parallel

    project, baseline = analyzer.get_analyzer(), analyzer.get_baseline_analyzer()
    batch = BatchAnalyzerEngine(baseline)
    warm = texts[:20]  # Presidio compiles each recognizer's patterns on first use
    analyzer.scan_texts(warm, n_process=1, score_threshold=0.0)
    [baseline.analyze(text, analyzer.LANGUAGE) for text in warm]

    def project_run(n: int, fork_in_timing: bool = False):
        analyzer.clear_memos(project)
        if n > 1 and not fork_in_timing:
            parallel.start(n, project, analyzer._scan_chunk_in_worker)
        return lambda: analyzer.scan_texts(texts, n_process=n, score_threshold=0.0)

    def per_text_run(n: int):
        if n == 1:
            return lambda: [baseline.analyze(text, analyzer.LANGUAGE) for text in texts]
        parallel.start(n, baseline, _per_text_chunk)
        return lambda: parallel.map_in_processes(_per_text_chunk, texts, n, (baseline,), 1)

    def batch_run(n: int):
        return lambda: list(batch.analyze_iterator(texts, analyzer.LANGUAGE, batch_size=256, n_process=n))

    prepare = {METHODS[0]: project_run, METHODS[1]: per_text_run, METHODS[2]: batch_run}
    kept, forked = Runs(len(texts)), Runs(len(texts))
    for rep in range(reps):
        for n in counts if rep % 2 == 0 else tuple(reversed(counts)):
            jobs = [(m, kept, lambda m=m, n=n: prepare[m](n)) for m in METHODS[rep % 3 :] + METHODS[: rep % 3]]
            if n > 1:
                jobs.append((METHODS[0], forked, lambda n=n: project_run(n, fork_in_timing=True)))
            for method, runs, make in jobs:
                parallel.shutdown()
                gc.collect()
                run = make()
                wall, cpu = time.perf_counter(), _cpu_seconds()
                run()
                wall = time.perf_counter() - wall
                parallel.shutdown()  # reaps the workers, so their CPU time is counted
                runs.add((method, n), wall, _cpu_seconds() - cpu)
            if log:
                log(f"    repeat {rep + 1}, {n} process(es) done")
    return kept, forked


def held_out_records(limit: int | None) -> list[dict]:
    from bench import eval_pii

    records = eval_pii.load_records(eval_pii.DEFAULT_DATA)
    return [r for r in records if eval_pii.split_half(r["template_id"]) == "held_out"][:limit]


def accuracy(records: list[dict], n: int) -> dict[str, dict]:
    """The held-out eval (`python -m bench.eval_pii --half held_out`): P, R, F2, PERSON recall of the half as written
    and of its lowercased copy."""
    from bench import eval_pii

    samples = eval_pii.subsets(records, "held_out")
    out = {}
    for name in ("all", "lowercased copy"):
        results, _rate, _cpu = eval_pii.run_detector(samples[name], False, None, n)
        pii, per_entity = eval_pii.evaluate(samples[name], results)
        person = per_entity.get("PERSON")
        out[name] = {
            "precision": pii.precision,
            "recall": pii.recall,
            "f2": pii.f_beta,
            "person_recall": person.recall if person else float("nan"),
        }
    return out


# --- where the time goes (py-spy) ------------------------------------------------------------------------------------

# Each sample counts once, for the outermost frame matching one of these (order matters: a tokenizer frame inside NER
# is the tokenizer's; the pattern recognizers come after the named ones, which derive from them).
PROFILE_CATEGORIES = (
    ("pool: pickling, queues, waiting (parent)", r"map_chunks_in_processes|concurrent/futures|multiprocessing/"),
    ("truecasing (`case_view`)", r"case_view"),
    ("NER candidate filter (`needs_ner`)", r"needs_ner|holds_ner_candidate"),
    ("spaCy tokenizer", r"make_doc|Tokenizer\.__call__|tokenizer\.pyx"),
    ("NER (spaCy `nlp.pipe`: model and parser)", r"recognize_entities|_ner_docs|_ner \(|Language\.pipe|[Pp]arser"),
    ("NLP artifacts (lemmas, offsets, entities)", r"LeanArtifactBuilder|_doc_to_nlp_artifact|doc_artifacts"),
    ("phone numbers (phonenumbers parse and verify)", r"PhoneRecognizer|phonenumbers/"),
    ("context enhancer", r"_enhance_using_context|ContextAwareEnhancer"),
    ("street addresses", r"StreetAddressRecognizer|recognizers/address"),
    ("name runs", r"NameRunRecognizer|recognizers/name_run"),
    ("person cues", r"PersonCueRecognizer|person_cues"),
    ("NER recognizer and our NER filters", r"FilteredSpacyRecognizer|ner_filter|SpacyRecognizer"),
    ("known identifiers, word lists", r"gazetteer|privacy/known\.py"),
    ("other pattern recognizers (pre-checks, Presidio's search)", r"SkipWithoutMatch|PatternRecognizer"),
    ("Presidio's `analyze` loop (duplicates, results, the rest)", r"AnalyzerEngine\.analyze"),
)


def profile_shares(raw: Path, root: str = r"_profiled_scans \(") -> tuple[int, list[tuple[str, float]], float]:
    """(samples under `root`, [(category, share)], share with the regex timeout's clock reads) of a py-spy raw file."""
    total, clock, found = 0, 0, Counter()
    patterns = [(name, re.compile(p)) for name, p in PROFILE_CATEGORIES]
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not re.search(root, stack):
            continue
        frames, n = stack.split(";"), int(count)
        total += n
        clock += n if "clock_gettime" in stack else 0
        for name, pattern in patterns:
            if any(pattern.search(f) for f in frames):
                found[name] += n
                break
        else:
            found["other (deduplication, our scan loop)"] += n
    shares = [(name, c / total) for name, c in found.most_common()] if total else []
    return total, shares, (clock / total if total else 0.0)


def run_profile(limit: int | None, reps: int, log=None) -> dict | None:
    """py-spy (native frames) over `python -m bench.free_text_speed --profile-target`, when py-spy is installed."""
    py_spy = shutil.which("py-spy") or (
        str(Path(sys.executable).with_name("py-spy")) if Path(sys.executable).with_name("py-spy").exists() else None
    )
    if py_spy is None:
        return None
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        raw = Path(tmp) / "profile.txt"
        command = [py_spy, "record", "--native", "--rate", str(PROFILE_RATE), "--format", "raw", "-o", str(raw)]
        command += ["--", sys.executable, "-m", "bench.free_text_speed", "--profile-target", str(reps)]
        command += [str(limit)] if limit else []
        done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
        if done.returncode != 0 or not raw.exists():
            if log:
                log(f"    py-spy failed: {(done.stderr or done.stdout)[-300:]}")
            return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:] or ["py-spy failed"]}
        total, shares, clock = profile_shares(raw)
    return {"samples": total, "shares": shares, "clock": clock, "reps": reps}


def _profile_target(reps: int, limit: int | None) -> None:
    """What the profile samples: the held-out half and its lowercased copy, scanned cold `reps` times, 1 process."""
    from bench import eval_pii
    from pipelines.privacy import analyzer

    records = held_out_records(limit)
    texts = [r["full_text"] for r in records] + [eval_pii.lowercased(r["full_text"]) for r in records]
    project = analyzer.get_analyzer()
    analyzer.scan_texts(texts[:20], n_process=1)  # compiles the patterns and plans: not profiled
    _profiled_scans(project, texts, reps)


def _profiled_scans(project, texts: list[str], reps: int) -> None:
    from pipelines.privacy import analyzer

    for _ in range(reps):
        analyzer.clear_memos(project)
        analyzer.scan_texts(texts, n_process=1, score_threshold=0.0)


SPEED_HEADER = [
    "corpus",
    "texts (distinct)",
    "processes",
    "project texts per CPU-second",
    "Presidio per text",
    "Presidio batch",
    "x per text",
    "x batch",
    "project texts/s (wall)",
    "project speed-up vs 1 process (efficiency)",
    "precision",
    "F2",
    "PERSON recall",
]


def speed_row(name: str, texts: int, distinct: int, n: int, figures: dict, quality: dict | None) -> list:
    """One row of the section's table: texts per CPU-second of each method (the process and its workers) and their
    ratios, which load changes little; wall texts/s and the speed-up, which it does."""
    p, t, b = (figures["texts_per_cpu_s"][m] for m in METHODS)
    speed_up = figures["speed_up"]
    return [
        name,
        f"{texts:,} ({distinct:,})",
        n,
        fmt_rate(p),
        fmt_rate(t),
        fmt_rate(b),
        fmt_ratio(p / t),
        fmt_ratio(p / b),
        fmt_rate(figures["texts_per_s"][METHODS[0]]),
        "1.00" if n == 1 else f"{speed_up:.2f} ({speed_up / n:.2f})",
        "-" if quality is None else f"{quality['precision']:.3f}",
        "-" if quality is None else f"{quality['f2']:.3f}",
        "-" if quality is None else f"{quality['person_recall']:.3f}",
    ]


# --- the section -----------------------------------------------------------------------------------------------------


def section_free_text_speed(cfg: BenchConfig, log) -> tuple[str, dict]:
    from bench import eval_pii

    path = SHARED_DATA / "pii-text" / "synth_dataset_v2.json"
    if not path.exists():
        return f"{TITLE}\n\nSkipped: {path} not found.\n", {"skipped": True}
    n_max = usable_processes()
    counts = (1, n_max) if n_max > 1 else (1,)
    reps = cfg.repeats
    records = held_out_records(cfg.eval_limit)
    corpora: dict[str, list[str]] = {
        "held-out labelled text": [r["full_text"] for r in records],
        "held-out, lowercased copy": [eval_pii.lowercased(r["full_text"]) for r in records],
    }
    prep = cfg.prepared_base(cfg.text_sizes_base)
    for dataset, column in DEMO_COLUMNS[:1] if cfg.eval_limit else DEMO_COLUMNS:  # a smoke run: one column
        try:
            frame = prep.frame(dataset).dropna(subset=[column])
        except (KeyError, FileNotFoundError):
            continue
        sample = frame.sample(n=min(cfg.texts, MAX_DEMO_TEXTS, len(frame)), random_state=cfg.seed)
        corpora[f"demo `{dataset}.{column}`"] = sample[column].astype(str).tolist()
    log("  section 10: held-out accuracy")
    acc = accuracy(records, n_max)
    data: dict = {"processes": counts, "accuracy": acc, "corpora": {}}
    rows, scaling_rows = [], []
    for name, texts in corpora.items():
        log(f"  section 10: {name}, {len(texts):,} texts")
        kept, forked = measure(texts, counts, reps, log)
        quality = acc["all"] if name.startswith("held-out labelled") else None
        quality = acc["lowercased copy"] if name.startswith("held-out, lowercased") else quality
        figures = {}
        for n in counts:
            speed_up = kept.rate(METHODS[0], n) / kept.rate(METHODS[0], 1)
            figures[n] = {
                "texts_per_s": {m: kept.rate(m, n) for m in METHODS},
                "texts_per_cpu_s": {m: kept.cpu_rate(m, n) for m in METHODS},
                "speed_up": speed_up,
            }
            rows.append(speed_row(name, len(texts), len(set(texts)), n, figures[n], quality))
        for n in counts[1:]:
            one, many = min(kept.wall[(METHODS[0], 1)]), min(kept.wall[(METHODS[0], n)])
            fork = min(forked.wall[(METHODS[0], n)])
            cpu1, cpun = min(kept.cpu[(METHODS[0], 1)]), min(kept.cpu[(METHODS[0], n)])
            figures[n]["speed_up_fork_in_timing"] = one / fork
            scaling_rows.append(
                [
                    name,
                    n,
                    f"{one:.2f}",
                    f"{many:.2f}",
                    f"{one / many:.2f} ({one / many / n:.2f})",
                    f"{fork:.2f}",
                    f"{one / fork:.2f} ({one / fork / n:.2f})",
                    f"{cpu1:.2f}",
                    f"{cpun:.2f} ({cpun / cpu1:.2f}x)",
                ]
            )
        data["corpora"][name] = {"texts": len(texts), "distinct": len(set(texts)), "by_processes": figures}
    profile = run_profile(None, 3, log) if cfg.profile and not cfg.eval_limit else None  # not in smoke runs
    data["profile"] = profile
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    data["load_average_at_end"] = load
    table = md_table(SPEED_HEADER, rows, "lrrrrrrrrrrrr")
    parts = [
        TITLE,
        "",
        "Detection alone (`scan_texts`, threshold 0, no masking) against Presidio text by text (`AnalyzerEngine.analyze`) "
        f"and Presidio's `BatchAnalyzerEngine` (batch 256), each in 1 and in {n_max} processes, in one run, interleaved "
        f"(methods rotated each repeat; best of {reps}); the ratios are of texts per CPU-second at the same process "
        "count. The project starts cold every repeat (NER cache, phone verdicts, "
        "keyword memos cleared); its pool is forked before the clock starts, as a run's later chunks find it. Presidio "
        f"per text in {n_max} processes runs on the same pool; batch Presidio's `n_process` forks spaCy's own workers "
        "(its recognizers stay in the calling process). Texts per CPU-second count this process and its workers. "
        "Held-out text: the half of `synth_dataset_v2.json` split off by template (`bench.eval_pii.split_half`), "
        f"never tuned on; demo columns: a seeded sample of at most {MAX_DEMO_TEXTS:,} values per column. Precision, F2 "
        "and PERSON recall: `python -m bench.eval_pii --half held_out` (the half as written, and its lowercased copy).",
        "",
        table,
    ]
    if scaling_rows:
        parts += [
            "",
            "The project's speed-up per process count (wall seconds, best repeat), with the pool forked before the "
            "clock starts and with the fork timed too (what one call alone pays), and the CPU-seconds spent:",
            "",
            md_table(
                [
                    "corpus",
                    "processes",
                    "wall, 1 process (s)",
                    "wall, pool kept (s)",
                    "speed-up (efficiency)",
                    "wall, fork timed (s)",
                    "speed-up (efficiency)",
                    "CPU-s, 1",
                    "CPU-s, n (ratio)",
                ],
                scaling_rows,
                "lrrrrrrrr",
            ),
            "",
            "Efficiency is only meaningful on an otherwise idle machine: "
            f"load average {', '.join(f'{x:.1f}' for x in load) if load else 'n/a'} on {os.cpu_count()} cores when "
            "this section ended. The CPU ratio is the work the extra process adds (fork, copy-on-write faults, pickling "
            "texts and results, each worker's own cold memos), which load does not change.",
        ]
    if profile and "shares" in profile:
        parts += [
            "",
            f"Where the project's time goes on held-out text (py-spy, native frames, {PROFILE_RATE} Hz, "
            f"{profile['samples']:,} samples of the timed scans; the half and its lowercased copy scanned cold "
            f"{profile['reps']} times in 1 process; each sample counted once, for its outermost category):",
            "",
            md_table(["where", "share"], [[k, f"{100 * v:.1f}%"] for k, v in profile["shares"]]),
            "",
            f"The `regex` module's timeout (a clock read per guarded search) is {100 * profile['clock']:.1f}% of the "
            "samples, spread over the pattern recognizers. Reading and what it would take: `docs/free-text-profile.md`.",
        ]
    elif profile:
        parts += ["", f"Profile: py-spy did not run here ({profile['error'][0][:200]})."]
    else:
        parts += ["", "Profile: not run (`--quick` and `--no-profile` skip it; py-spy is in the `bench` extra)."]
    parts += ["", stamp(cfg.seed)]
    return "\n".join(parts), data


if __name__ == "__main__":  # the profile's target (see run_profile)
    if len(sys.argv) >= 3 and sys.argv[1] == "--profile-target":
        _profile_target(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
