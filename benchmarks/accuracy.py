#!/usr/bin/env python
"""Accuracy benchmark on the real corpora in ../shared/datasets: prints one table of what it measured.

Tasks (all speaker-independent except tess-random, which is there to show the gap):
  tess-random    TESS, stratified random 80/20 split (speaker-DEPENDENT)
  tess-oaf-yaf   TESS, train OAF, test YAF
  tess-yaf-oaf   TESS, train YAF, test OAF
  emodb-loso     EMO-DB, leave one speaker out (10 folds, predictions pooled), and the robustness suite:
                 every test clip also scored under fixed, seeded degradations (training/degrade.py CONDITIONS:
                 1 s of silence around it, white and babble noise at 20 and 10 dB SNR, reverberation,
                 telephone band, MP3 at 64 kb/s, 30 dB quieter), one UAR per condition
  emodb-tess     across corpora: train EMO-DB, test TESS (the 6 emotions both have; epoch chosen on EMO-DB)
  tess-emodb     across corpora: train TESS, test EMO-DB (the same 6; epoch chosen on TESS)

For each recipe x task x seed: accuracy, UAR, macro-F1, per-class recall, training time; per corpus the
feature extraction time per audio hour (measured without the cache, on all cores). Epochs are chosen on
validation data from training speakers only.

Recipes whose features use a speaker reference (``crnn-speaker``: ``LogMelFrames(reference="speaker")``) get two rows
per task: each test clip alone (what ``POST /predict`` answers without a profile), and ``<recipe> + speaker
profile``: each test speaker's clips with a profile made from all of that speaker's test clips (their audio,
never their labels: the per-speaker normalisation of the published baselines in docs/mission.md).

    python benchmarks/accuracy.py                         # every recipe in training/config.py RECIPES, 3 seeds
    python benchmarks/accuracy.py --recipes crnn --seeds 0 --tasks emodb-loso
    python benchmarks/accuracy.py --recipes crnn-robust-4k-tempo25-e90 --tasks emodb-tess --ray-address auto   # on a Ray cluster
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from training.config import RECIPES, TrainConfig  # noqa: E402
from training.corpora import load_corpus  # noqa: E402
from training.extraction import FeatureCache, extract_features, file_digest  # noqa: E402
from training.train import resolve_features, run_training  # noqa: E402

TASKS = {
    "tess-random": {"corpus": "tess", "protocol": "random"},
    "tess-oaf-yaf": {"corpus": "tess", "protocol": "speaker", "test_speakers": ["YAF"]},
    "tess-yaf-oaf": {"corpus": "tess", "protocol": "speaker", "test_speakers": ["OAF"]},
    "emodb-loso": {"corpus": "emodb", "protocol": "loso", "robustness": True},
    "emodb-tess": {"corpus": "emodb", "protocol": "cross-corpus", "test_corpus": "tess"},
    "tess-emodb": {"corpus": "tess", "protocol": "cross-corpus", "test_corpus": "emodb"},
}


def feature_seconds_per_audio_hour(corpus_dir: Path, feature_name: str, cache_dir: str | None) -> float:
    """Extract every file without reading the cache (on all cores) and time it; then store the features in
    the cache, so the training runs only read them."""
    corpus = load_corpus(corpus_dir)
    paths = [u.path for u in corpus.utterances]
    settings = resolve_features(feature_name)
    result = extract_features(paths, settings, cache=None, progress=False)
    cache = FeatureCache(cache_dir)
    for path, features in zip(paths, result.features):
        if features is not None:
            cache.put(file_digest(path), settings, features)
    return result.seconds / corpus.hours


def run(args) -> dict:
    if args.runs_dir:
        return _run(args, Path(args.runs_dir))
    with tempfile.TemporaryDirectory(prefix="ser-bench-") as runs_dir:  # the run folders are not kept
        return _run(args, Path(runs_dir))


def _run(args, runs_dir: Path) -> dict:
    shared = Path(args.shared)
    results = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
               "jobs": args.jobs, "override": args.override or {}, "feature_seconds_per_audio_hour": {}, "runs": [],
               "failed": []}
    corpora = sorted({TASKS[t][key] for t in args.tasks for key in ("corpus", "test_corpus") if key in TASKS[t]})
    for recipe in args.recipes:
        feature_name = (args.override or {}).get("features", RECIPES[recipe]["features"])
        for corpus in corpora:
            key = f"{recipe}/{corpus}"
            results["feature_seconds_per_audio_hour"][key] = feature_seconds_per_audio_hour(
                shared / corpus, feature_name, args.cache_dir)
            print(f"[features] {key}: {results['feature_seconds_per_audio_hour'][key]:.1f} s per audio hour",
                  flush=True)
    if args.features_only:
        return results
    specs = [
        {"recipe": recipe, "task": task, "seed": seed, "data": str(shared / TASKS[task]["corpus"]),
         "test_data": str(shared / TASKS[task]["test_corpus"]) if "test_corpus" in TASKS[task] else None,
         "robustness": TASKS[task].get("robustness", False) and args.robustness,
         "runs_dir": str(runs_dir), "cache_dir": args.cache_dir, "override": args.override or {}}
        for recipe in args.recipes for task in args.tasks for seed in args.seeds
    ]
    if args.ray_address:
        rows = _on_ray(specs, args.ray_address, args.ray_cpus_per_run)
        results["jobs"] = f"ray ({args.ray_address}, {args.ray_cpus_per_run} CPU per run)"
        results["runs"] = [r for r in rows if "error" not in r]
        results["failed"] = [r for r in rows if "error" in r]
        return results
    cores = os.cpu_count() or 1
    if args.jobs is None:
        # One process more than cores (when there are that many runs): a core whose run ends early does not
        # sit idle while the last runs finish (3 seeds on 2 cores: all three side by side, not 2 then 1).
        args.jobs = min(len(specs), cores + 1) if cores > 1 else 1
    results["jobs"] = args.jobs
    for spec in specs:  # side by side, each run gets its share of the cores, not TensorFlow's default of all
        spec["threads"] = max(1, cores // args.jobs) if args.jobs > 1 else None
    if args.jobs > 1:
        # One training run per process: the models are small, so on a few cores independent runs side by side
        # get more done than one run with all threads.
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_one, spec): i for i, spec in enumerate(specs)}
            rows = [None] * len(specs)
            for future in as_completed(futures):
                rows[futures[future]] = _report(future.result())
    else:
        rows = [_report(run_one(spec)) for spec in specs]
    results["runs"] = [r for r in rows if "error" not in r]
    results["failed"] = [r for r in rows if "error" in r]
    return results


def _on_ray(specs: list[dict], address: str, cpus: int) -> list[dict]:
    """Every run as a Ray task of ``cpus`` CPUs (TensorFlow on as many threads), reported as they finish; the
    rows in the order of ``specs``. The corpora and the cache must be readable at the same paths on the nodes."""
    import ray

    from speech_emotion.score import ray_init

    started = ray_init(address)
    try:
        task = ray.remote(num_cpus=cpus)(run_one)
        refs = [task.remote({**spec, "threads": cpus}) for spec in specs]
        rows = {}
        running = list(refs)
        while running:
            (ref,), running = ray.wait(running, num_returns=1)
            rows[ref] = _report(ray.get(ref))
        return [rows[ref] for ref in refs]
    finally:
        if started:
            ray.shutdown()


def run_one(spec: dict) -> dict:
    """Train and evaluate one recipe on one task with one seed; the row of the results table (or, when the
    run failed, the error, so one failure does not lose the other runs)."""
    if spec.get("threads"):  # runs side by side: each its share of the cores, not TensorFlow's default of all
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
            tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
        except RuntimeError:  # a reused worker process: set by its first run already
            pass
    try:
        return _run_one(spec)
    except Exception:
        return {**{k: spec[k] for k in ("recipe", "task", "seed")}, "error": traceback.format_exc()}


def _run_one(spec: dict) -> dict:
    task = TASKS[spec["task"]]
    cfg = TrainConfig.from_recipe(
        spec["recipe"], data=spec["data"], protocol=task["protocol"], test_speakers=task.get("test_speakers"),
        test_data=spec.get("test_data"), robustness=spec.get("robustness", False), seed=spec["seed"], final_fit=False, runs_dir=spec["runs_dir"], cache_dir=spec["cache_dir"],
        progress=False, jobs=1, **spec["override"],
    )
    started = time.time()
    m = run_training(cfg).metrics
    ended = time.time()
    row = {
        "recipe": spec["recipe"], "task": spec["task"], "corpus": m["corpus"], "protocol": m["protocol"],
        "speaker_independent": m["speaker_independent"], "seed": spec["seed"], "folds": len(m["folds"]),
        **_scores(m["pooled"]),
        "train_seconds": m["timing"]["train_seconds"], "wall_seconds": round(ended - started, 1),
        "started": started, "ended": ended, "best_epochs": [f["best_epoch"] for f in m["folds"]],
    }
    if "with_profile" in m:  # models with a speaker reference: also each test speaker with their profile
        row["with_profile"] = _scores(m["with_profile"]["pooled"])
    if "robustness" in m:
        row["robustness"] = {name: {"uar": c["uar"], "top_answer_share": c["top_answer_share"],
                                    "no_speech": c["no_speech"]} for name, c in m["robustness"]["conditions"].items()}
    return row


def _scores(pooled: dict) -> dict:
    return {"accuracy": pooled["accuracy"], "uar": pooled["uar"], "macro_f1": pooled["macro_f1"],
            "per_class_recall": {k: v["recall"] for k, v in pooled["per_class"].items()}}


def _report(row: dict) -> dict:
    if "error" in row:
        print(f"[run] {row['recipe']} {row['task']} seed {row['seed']}: FAILED\n{row['error']}", flush=True)
        return row
    profiled = row.get("with_profile")
    print(f"[run] {row['recipe']} {row['task']} seed {row['seed']}: accuracy {row['accuracy']:.3f} "
          f"UAR {row['uar']:.3f} macro-F1 {row['macro_f1']:.3f}"
          + (f"; with speaker profiles: accuracy {profiled['accuracy']:.3f} UAR {profiled['uar']:.3f} "
             f"macro-F1 {profiled['macro_f1']:.3f}" if profiled else "")
          + f"; train {row['train_seconds']:.0f} s (wall {row['wall_seconds']:.0f} s)", flush=True)
    return row


def machine() -> dict:
    import tensorflow as tf

    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "tensorflow": tf.__version__}


#: Suffix of the rows that score each test speaker with a profile of their (unlabelled) test clips.
PROFILED = " + speaker profile"


def _rows(results: dict) -> list[dict]:
    """The runs, plus a row per run with speaker profiles (recipe name + PROFILED) for recipes that use them."""
    rows = []
    for r in results["runs"]:
        rows.append(r)
        if r.get("with_profile"):
            rows.append({**r, **r["with_profile"], "recipe": r["recipe"] + PROFILED, "base_recipe": r["recipe"]})
    return rows


def table(results: dict) -> str:
    """Mean (and spread over seeds when there are several) per recipe and task."""
    # A recipe's name says what ran only without overrides: they head the table.
    override = results.get("override")
    lines = [f"Every run with {json.dumps(override)} overriding its recipe.", ""] if override else []
    lines += ["| recipe | task | protocol | seeds | accuracy | UAR | macro-F1 | train s (per seed) | elapsed s (all seeds) "
             "| features s / audio h |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    runs = _rows(results)
    for r in runs:
        groups.setdefault((r["recipe"], r["task"]), []).append(r)
    # TESS across speakers: both directions together (the figure the targets are stated for).
    for recipe in sorted({r["recipe"] for r in runs}):
        both = groups.get((recipe, "tess-oaf-yaf"), []) + groups.get((recipe, "tess-yaf-oaf"), [])
        if groups.get((recipe, "tess-oaf-yaf")) and groups.get((recipe, "tess-yaf-oaf")):
            by_seed: dict[int, list[dict]] = {}
            for r in both:
                by_seed.setdefault(r["seed"], []).append(r)
            groups[(recipe, "tess-speaker (mean of both directions)")] = [
                {**rows[0], "task": "tess-speaker", **{k: float(np.mean([x[k] for x in rows]))
                                                        for k in ("accuracy", "uar", "macro_f1", "train_seconds",
                                                                  "wall_seconds")},
                 "started": min(x["started"] for x in rows), "ended": max(x["ended"] for x in rows),
                 "per_class_recall": {c: float(np.mean([x["per_class_recall"][c] for x in rows]))
                                      for c in rows[0]["per_class_recall"]}}
                for rows in by_seed.values() if len(rows) == 2]

    def fmt(values):
        values = np.asarray(values, dtype=float)
        return f"{values.mean():.3f}" + (f" ± {values.std():.3f}" if len(values) > 1 else "")

    order = ["tess-random", "tess-oaf-yaf", "tess-yaf-oaf", "tess-speaker (mean of both directions)", "emodb-loso",
             "emodb-tess", "tess-emodb"]
    groups = dict(sorted(groups.items(), key=lambda kv: (kv[0][0] != "notebook", kv[0][0], order.index(kv[0][1]))))
    for (recipe, task), rows in groups.items():
        protocol = rows[0]["protocol"] + ("" if rows[0]["speaker_independent"] else " (speaker-dependent)")
        if recipe.endswith(PROFILED):
            protocol += ", test speaker's profile"
        feature_key = f"{rows[0].get('base_recipe', recipe)}/{rows[0]['corpus']}"
        fps = results["feature_seconds_per_audio_hour"].get(feature_key, float("nan"))
        lines.append(
            f"| {recipe} | {task} | {protocol} | {','.join(str(r['seed']) for r in rows)} "
            f"| {fmt([r['accuracy'] for r in rows])} | {fmt([r['uar'] for r in rows])} "
            f"| {fmt([r['macro_f1'] for r in rows])} | {np.mean([r['train_seconds'] for r in rows]):.0f} "
            f"| {max(r['ended'] for r in rows) - min(r['started'] for r in rows):.0f} | {fps:.1f} |"
        )
    lines += ["", "Per-class recall (mean over seeds):", "",
              "| recipe | task | " + " | ".join(_labels(results)) + " |",
              "|---|---|" + "---|" * len(_labels(results))]
    for (recipe, task), rows in groups.items():
        cells = []
        for label in _labels(results):
            values = [r["per_class_recall"][label] for r in rows if label in r["per_class_recall"]]
            cells.append(f"{np.mean(values):.2f}" if values else "-")
        lines.append(f"| {recipe} | {task} | " + " | ".join(cells) + " |")
    robust = [r for r in results["runs"] if r.get("robustness")]
    if robust:
        conditions = list(robust[0]["robustness"])
        lines += ["", "Robustness suite (each test clip alone under fixed degradations; UAR, mean over seeds; in "
                      "brackets: the largest share of one answer, over seeds):", "",
                  "| recipe | task | seeds | clean | " + " | ".join(conditions) + " | worst drop |",
                  "|---|---|---|---|" + "---|" * (len(conditions) + 1)]
        by: dict[tuple[str, str], list[dict]] = {}
        for r in robust:
            by.setdefault((r["recipe"], r["task"]), []).append(r)
        for (recipe, task), rows in sorted(by.items()):
            clean = float(np.mean([r["uar"] for r in rows]))
            means = {c: float(np.mean([r["robustness"][c]["uar"] for r in rows])) for c in conditions}
            tops = {c: max(r["robustness"][c]["top_answer_share"] for r in rows) for c in conditions}
            lines.append(f"| {recipe} | {task} | {','.join(str(r['seed']) for r in rows)} | {clean:.3f} | "
                         + " | ".join(f"{means[c]:.3f} ({100 * tops[c]:.0f} %)" for c in conditions)
                         + f" | {max(clean - v for v in means.values()):.3f} |")
    return "\n".join(lines)


def features_table(results: dict) -> str:
    return "\n".join(["| recipe/corpus | features s / audio h |", "|---|---|"] + [
        f"| {key} | {value:.1f} |" for key, value in results["feature_seconds_per_audio_hour"].items()])


def _labels(results: dict) -> list[str]:
    return sorted({k for r in _rows(results) for k in r["per_class_recall"]})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "datasets"),
                        help="folder holding emodb/ and tess/ (default: ../shared/datasets)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--override", type=json.loads, default=None,
                        help='JSON of TrainConfig fields to override in every run, e.g. \'{"epochs": 30}\'')
    parser.add_argument("--jobs", type=int, default=None,
                        help="training runs side by side, one process each (default: one more than the cores, "
                             "at most one per run; 1 on one core)")
    parser.add_argument("--ray-address", default=None, metavar="ADDRESS",
                        help="run the training runs (recipes x tasks x seeds) as Ray tasks: 'auto', "
                             "'ray://HEAD:10001', or 'local' (Ray started here); needs pip install '.[cluster]'")
    parser.add_argument("--ray-cpus-per-run", type=int, default=1, metavar="N",
                        help="with --ray-address: CPUs (and TensorFlow threads) of each run (default 1)")
    parser.add_argument("--robustness", default=True, action=argparse.BooleanOptionalAction,
                        help="score emodb-loso's test clips under the fixed degradations too (default: on)")
    parser.add_argument("--features-only", action="store_true",
                        help="only measure the feature extraction time (no training)")
    parser.add_argument("--cache-dir", default=str(ROOT / ".cache" / "features"))
    parser.add_argument("--runs-dir", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"),
                        help="where the JSON and Markdown results are written")
    args = parser.parse_args()
    for corpus in {TASKS[t][k] for t in args.tasks for k in ("corpus", "test_corpus") if k in TASKS[t]}:
        if not (Path(args.shared) / corpus).is_dir():
            parser.error(f"{Path(args.shared) / corpus} not found: the benchmark needs the real corpora")
    logging.basicConfig(level=logging.WARNING)
    start = time.perf_counter()
    results = run(args)
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"accuracy-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results) if results["runs"] else features_table(results)
    (out / f"accuracy-{stamp}.md").write_text(text + "\n")
    print()
    print(text)
    for r in results["failed"]:
        print(f"FAILED: {r['recipe']} {r['task']} seed {r['seed']} (traceback above and in the JSON)")
    print(f"\nwhole benchmark: {results['wall_seconds']:.0f} s on {results['machine']['cpu_count']} cores; "
          f"results in {out}/accuracy-{stamp}.json")
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
