#!/usr/bin/env python
"""Bulk-scoring benchmark: ``python -m speech_emotion score`` against calling ``POST /predict`` once per file.

Measured in one run, on the same recordings, the same model. The recordings: every bundled EMO-DB file,
``--copies`` times under different names (links in a temporary folder), an archive large enough that start-up
is not all there is to measure.
  1. baseline: ``python -m app`` (uvicorn, its default settings) started as a process, and one client
     sending each file to ``POST /predict`` in turn over a keep-alive connection (the straightforward way to
     score an archive with the service); the server's start-up (loading the model) is not counted;
  2. ``score`` on all local cores (``jobs``, default one per core), from its start to the written file:
     start-up (the workers', and the model process's: importing TensorFlow, loading the model) is counted,
     and shown apart as the time until the first chunk's rows came back;
  3. with ``--ray``: the same on a local Ray instance (``ray_address="local"``), Ray's start included;
  4. with ``--ray-address ADDRESS``: the same on a Ray instance already running there (as on a cluster, whose
     start no scoring job pays), e.g. one started on this machine with ``ray start --head --num-cpus 2``.
For each: recordings/s and audio hours scored per hour, overall and after the first chunk, the ratio to the
baseline; whether every answer equals the service's (same emotion, probabilities within 2e-5); and whether
Ray's rows equal the local run's, row for row.

    python benchmarks/scoring.py                 # baseline and local
    python benchmarks/scoring.py --ray           # also on local Ray (needs pip install '.[cluster]')
    ray start --head --num-cpus 2 && python benchmarks/scoring.py --ray --ray-address auto; ray stop
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import soundfile as sf  # noqa: E402

from benchmarks.serving import _free_port, start_server  # noqa: E402


def over_http(model: str, files: list[Path]) -> tuple[float, dict[str, dict]]:
    port = _free_port()
    env = {"SER_MODEL_PATH": model, "SER_PORT": str(port), "SER_HOST": "127.0.0.1", "SER_LOG_LEVEL": "warning"}
    proc = start_server([sys.executable, "-m", "app"], env, port)
    answers = {}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            started = time.perf_counter()
            for path in files:
                r = client.post("/predict", files={"file": (path.name, path.read_bytes())})
                answers[str(path)] = r.json() if r.status_code == 200 else {"error": r.json().get("code")}
            seconds = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return seconds, answers


def with_score(model: str, files: list[Path], out: Path, **options) -> tuple[dict, list[dict]]:
    from speech_emotion.score import score

    run = score([str(p) for p in files], out, model=model, progress=False, **options)
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {"seconds": run.seconds, "first_chunk_seconds": run.first_chunk_seconds,
            "first_chunk_files": run.first_chunk_files}, rows


def differences(rows: list[dict], answers: dict[str, dict], labels: list[str]) -> int:
    """Rows whose answer is not the service's (another emotion, a probability off by more than 2e-5, or a
    file one of them refused and the other did not)."""
    bad = 0
    for row in rows:
        expected = answers[row["path"]]
        if "error" in expected or row["error"]:
            bad += ("error" in expected) != bool(row["error"])
            continue
        if row["emotion"] != expected["emotion"] or any(
                abs(float(row[k]) - expected["probabilities"][k]) > 2e-5 for k in labels):
            bad += 1
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models"), help="SavedModel (default: the default model)")
    parser.add_argument("--copies", type=int, default=4, help="each bundled file this many times (default 4)")
    parser.add_argument("--jobs", type=int, default=0, help="score's worker processes (default: one per core)")
    parser.add_argument("--ray", action="store_true", help="also run score on a local Ray instance")
    parser.add_argument("--ray-address", default=None,
                        help="also run score on the Ray instance already running at this address (e.g. auto)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    from speech_emotion.model import resolve_model_dir

    model = str(resolve_model_dir(args.model))
    meta = json.loads((Path(model) / "metadata.json").read_text())
    bundled = sorted((ROOT / "data" / "emodb" / "wav").glob("*.flac"))
    hours = args.copies * sum(sf.info(p).duration for p in bundled) / 3600
    results = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
               "model": f"{meta['name']}/{meta['version']}", "files": args.copies * len(bundled),
               "copies": args.copies, "audio_hours": hours, "runs": []}
    n = results["files"]

    def record(label: str, timing: dict, bad: int | None) -> None:
        seconds = timing["seconds"]
        run = {"label": label, **timing, "recordings_per_s": n / seconds, "audio_hours_per_hour": hours * 3600 / seconds,
               "answers_not_the_service": bad}
        if timing.get("first_chunk_seconds") is not None and n > timing["first_chunk_files"]:
            rest = seconds - timing["first_chunk_seconds"]
            run["recordings_per_s_after_first_chunk"] = (n - timing["first_chunk_files"]) / rest
        results["runs"].append(run)
        print(f"{label:40} {seconds:7.1f} s  {run['recordings_per_s']:6.1f} recordings/s  "
              f"{run['audio_hours_per_hour']:6.1f} audio h/h  differing answers: {bad}", flush=True)

    labels = meta["labels"]
    jobs = args.jobs or os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for c in range(args.copies):
            (Path(tmp) / f"copy{c}").mkdir()
            for p in bundled:
                (Path(tmp) / f"copy{c}" / p.name).symlink_to(p)
                files.append(Path(tmp) / f"copy{c}" / p.name)
        seconds, answers = over_http(model, files)
        record("POST /predict per file, one client", {"seconds": seconds}, 0)
        timing, rows = with_score(model, files, Path(tmp) / "local.csv", jobs=jobs)
        record(f"score, {jobs} local processes", timing, differences(rows, answers, labels))
        if args.ray:
            timing, ray_rows = with_score(model, files, Path(tmp) / "ray.csv", ray_address="local")
            record("score on local Ray", timing, differences(ray_rows, answers, labels))
            results["runs"][-1]["rows_equal_local"] = ray_rows == rows
            print(f"Ray's rows equal the local run's, row for row: {ray_rows == rows}")
        if args.ray_address:
            timing, running_rows = with_score(model, files, Path(tmp) / "running.csv", ray_address=args.ray_address)
            record(f"score on running Ray ({args.ray_address})", timing, differences(running_rows, answers, labels))
            results["runs"][-1]["rows_equal_local"] = running_rows == rows
            print(f"The running Ray instance's rows equal the local run's, row for row: {running_rows == rows}")

    base = results["runs"][0]
    lines = [f"Model {results['model']}, {n} recordings (the {len(bundled)} bundled EMO-DB files x {args.copies}; "
             f"{hours:.2f} h of audio), {os.cpu_count()} cores:", "",
             "| how | seconds | of which until the first chunk | recordings/s | audio hours per hour "
             "| speed-up vs /predict per file | after the first chunk: recordings/s, speed-up "
             "| answers not the service's |", "|---|---|---|---|---|---|---|---|"]
    for run in results["runs"]:
        first = run.get("first_chunk_seconds")
        after = run.get("recordings_per_s_after_first_chunk")
        steady = "" if after is None else f"{after:.0f}, {after / base['recordings_per_s']:.1f}x"
        lines.append(f"| {run['label']} | {run['seconds']:.1f} | {'' if first is None else f'{first:.1f}'} "
                     f"| {run['recordings_per_s']:.1f} | {run['audio_hours_per_hour']:.0f} "
                     f"| {base['seconds'] / run['seconds']:.2f}x "
                     f"| {steady} "
                     f"| {run['answers_not_the_service']} |")
    local = results["runs"][1]["seconds"]
    for run in results["runs"][2:]:  # the Ray rows
        lines.append(f"\n{run['label']} against the local path: {run['seconds'] / local:.2f}x the time "
                     f"({(run['seconds'] / local - 1) * 100:+.0f} %); rows equal: {run['rows_equal_local']}.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"scoring-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + "\n".join(lines))
    print(f"\nresults in {out}/scoring-{stamp}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
