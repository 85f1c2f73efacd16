#!/usr/bin/env python
"""Serving benchmark: the service as a real uvicorn process under concurrent load, against a naive baseline.

Measured in one run, on real 3-second WAV clips cut from the bundled EMO-DB:
  1. in process, per clip: decode + features + model call through the SavedModel signature (the service's
     path), and the same with Keras ``model.predict`` instead (the naive path): p50/p95 latency; each path
     runs ``--block`` requests in a row, then the other as many;
  2. over HTTP: ``python -m app`` (uvicorn) and ``benchmarks/naive_service.py`` (model.predict per request)
     each started as a process (the same launcher, ``app.server``, and the same number of workers) and
     loaded by C concurrent keep-alive connections for T seconds: requests/s, p50/p95/p99 latency, errors,
     the server's CPU time per request (all its processes, from /proc), and the ratio fast/naive.
During the load, sampled answers are compared with the answer to the same clip sent alone, so batching
is checked not to change any answer.

    python benchmarks/serving.py                        # default model (newest under models/)
    python benchmarks/serving.py --seconds 20 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

CLIP_SECONDS = 3.0


def make_clips(n: int, seconds: float = CLIP_SECONDS) -> list[tuple[str, bytes]]:
    """WAV bytes (16 kHz, 16-bit) of the first ``seconds`` of the bundled files long enough to hold them."""
    clips = []
    for path in sorted((ROOT / "data" / "emodb" / "wav").glob("*.flac")):
        y, sr = sf.read(path, dtype="int16")
        if len(y) >= seconds * sr:
            buf = io.BytesIO()
            sf.write(buf, y[: int(seconds * sr)], sr, format="WAV", subtype="PCM_16")
            clips.append((path.stem + ".wav", buf.getvalue()))
        if len(clips) == n:
            break
    return clips


def percentiles(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}


# ------------------------------------------------------------------------------------ in process


def in_process(model_path: str, clips, iterations: int, block: int = 20) -> dict:
    import keras

    from app.inference import Predictor
    from speech_emotion.model import ExportedModel, resolve_model_dir
    from speech_emotion.runtime import retain_freed_memory

    retain_freed_memory()  # as the service process does (app/main.py)

    exported = ExportedModel.load(model_path)
    predictor = Predictor(exported, threads=1, max_batch=1, max_audio_seconds=600)
    predictor.warm_up()
    version_dir = resolve_model_dir(model_path)
    naive = keras.Sequential([keras.Input(shape=tuple(exported.metadata.input["shape"][1:])),
                              keras.layers.TFSMLayer(str(version_dir), call_endpoint="serving_default")])

    prepared = [predictor.prepare(data, name) for name, data in clips]
    naive.predict(prepared[0][1][None], verbose=0)
    stages = {"decode+features": [], "model (signature)": [], "total (service path)": [],
              "model (keras predict)": [], "total (naive path)": []}
    # Each path runs ``block`` requests in a row, then the other path as many: a server runs one path, request
    # after request, and interleaving the two per request (block 1) makes each evict the other's caches and
    # code from the CPU's caches (both look slower). Either way, both paths see the same clips, in the same
    # order, over the same stretch of time.
    for start in range(0, iterations, block):
        batch = [clips[i % len(clips)] for i in range(start, min(start + block, iterations))]
        for name, data in batch:
            t0 = time.perf_counter()
            _, features = predictor.prepare(data, name)
            t1 = time.perf_counter()
            exported.predict(features[None])
            t2 = time.perf_counter()
            stages["decode+features"].append(t1 - t0)
            stages["model (signature)"].append(t2 - t1)
            stages["total (service path)"].append(t2 - t0)
        for name, data in batch:
            t0 = time.perf_counter()
            _, features = predictor.prepare(data, name)
            t1 = time.perf_counter()
            naive.predict(features[None], verbose=0)
            t2 = time.perf_counter()
            stages["model (keras predict)"].append(t2 - t1)
            stages["total (naive path)"].append(t2 - t0)
    return {name: percentiles(values) for name, values in stages.items()}


# ------------------------------------------------------------------------------------ over HTTP


def multipart_request(name: str, data: bytes, port: int) -> bytes:
    boundary = "----serbench7d1f"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: audio/wav\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: ser-bench\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _connection(port, requests, names, stop_at, latencies, errors, samples, sample_every):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = 0
    try:
        while time.perf_counter() < stop_at:
            k = i % len(requests)
            t0 = time.perf_counter()
            writer.write(requests[k])
            await writer.drain()
            status = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            if not status.startswith(b"HTTP/1.1 200"):
                errors.append(status.decode().strip())
            elif i % sample_every == 0:
                samples.append((names[k], body))
            i += 1
    finally:
        writer.close()


async def _load(port, clips, concurrency, seconds, sample_every):
    requests = [multipart_request(name, data, port) for name, data in clips]
    names = [name for name, _ in clips]
    latencies, errors, samples = [], [], []
    start = time.perf_counter()
    stop_at = start + seconds
    await asyncio.gather(*[
        _connection(port, requests[c % len(requests):] + requests[: c % len(requests)],
                    names[c % len(names):] + names[: c % len(names)], stop_at, latencies, errors, samples,
                    sample_every)
        for c in range(concurrency)
    ])
    elapsed = time.perf_counter() - start
    return latencies, errors, samples, elapsed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(argv: list[str], env: dict, port: int) -> subprocess.Popen:
    """Start a server and return once it answers /health and, on Linux, every one of its ``SER_WORKERS``
    workers listens: each listens only after loading its model, and connections opened before then all go to
    the workers already listening, where keep-alive clients stay for the whole run (runs measured that way
    gave half the throughput)."""
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    workers = int({**os.environ, **env}.get("SER_WORKERS", "1"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(argv)} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if (httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
                    and (not os.path.exists("/proc/net/tcp") or _listening(port) >= workers)):
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{' '.join(argv)} did not become healthy")


def _listening(port: int) -> int:
    """How many sockets listen on local TCP ``port`` (from /proc)."""
    return sum(1 for table in ("/proc/net/tcp", "/proc/net/tcp6") if os.path.exists(table)
               for line in open(table).read().splitlines()[1:]
               if int(line.split()[1].rsplit(":", 1)[1], 16) == port and line.split()[3] == "0A")


def process_tree_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by a process and all its descendants, from /proc; None
    where there is no /proc."""
    if not os.path.isdir("/proc"):
        return None
    parent, ticks = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry)] = int(fields[1])
            ticks[int(entry)] = int(fields[11]) + int(fields[12])
    tree, frontier = {pid}, [pid]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier and p not in tree]
        tree.update(frontier)
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def http_run(label, argv, env, port, clips, concurrency, seconds, check_answers) -> dict:
    proc = start_server(argv, env, port)
    try:
        reference = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for name, data in clips:  # warm-up, and each clip's answer when sent alone
                r = client.post("/predict", files={"file": (name, data, "audio/wav")})
                r.raise_for_status()
                reference[name] = r.json()["probabilities"]
        cpu_before = process_tree_cpu(proc.pid)
        latencies, errors, samples, elapsed = asyncio.run(_load(port, clips, concurrency, seconds, sample_every=7))
        cpu_after = process_tree_cpu(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    mismatches = 0
    worst = 0.0
    for name, body in samples:
        got = json.loads(body)["probabilities"]
        diff = max(abs(got[k] - reference[name][k]) for k in got)
        worst = max(worst, diff)
        mismatches += diff > 1e-5
    result = {"label": label, "requests": len(latencies), "seconds": round(elapsed, 2),
              "rps": len(latencies) / elapsed, "errors": len(errors), "concurrency": concurrency,
              **percentiles(latencies), "answers_checked": len(samples), "answers_changed": mismatches,
              "max_probability_difference": worst,
              "server_cpu_ms_per_request": None if cpu_before is None else
              (cpu_after - cpu_before) * 1000 / max(1, len(latencies))}
    cpu = result["server_cpu_ms_per_request"]
    print(f"[http] {label}: {result['rps']:.1f} req/s, server CPU {cpu or float('nan'):.2f} ms/request, "
          f"p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, "
          f"p99 {result['p99_ms']:.1f} ms, {len(errors)} errors, {mismatches}/{len(samples)} sampled answers "
          f"differ from the clip alone (max diff {worst:.1e})", flush=True)
    if check_answers and mismatches:
        print(f"[http] WARNING: {mismatches} answers changed under load", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=[str(ROOT / "models")],
                        help="SER_MODEL_PATH values to compare (default: the newest model under models/)")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2],
                        help="uvicorn worker processes, the same for the service and the naive baseline "
                             "(default: 1 and 2)")
    parser.add_argument("--seconds", type=float, default=15, help="load duration per service (default 15)")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--clips", type=int, default=24, help="distinct 3 s clips (default 24)")
    parser.add_argument("--iterations", type=int, default=300, help="in-process iterations (default 300)")
    parser.add_argument("--block", type=int, default=20,
                        help="in process, requests of one path in a row before the other's (default 20; 1 "
                             "interleaves them per request, as runs before 2026-12-02 did)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baseline over HTTP")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    from speech_emotion.model import resolve_model_dir

    clips = make_clips(args.clips)
    results = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
               "clip_seconds": CLIP_SECONDS, "clips": len(clips), "concurrency": args.concurrency,
               "seconds": args.seconds, "in_process_iterations": args.iterations,
               "in_process_block": args.block, "models": []}
    for model in args.models:
        version_dir = resolve_model_dir(model)
        meta = json.loads((version_dir / "metadata.json").read_text())
        entry = {"path": str(version_dir), "name": meta["name"], "version": meta["version"],
                 "features": meta["features"]["kind"], "in_process": in_process(str(version_dir), clips, args.iterations, args.block),
                 "http": []}
        tag = f"{meta['name']}/{meta['version']} ({meta['features']['kind']})"
        for stage, p in entry["in_process"].items():
            print(f"[in-process] {tag} {stage:22} p50 {p['p50_ms']:7.2f} ms   p95 {p['p95_ms']:7.2f} ms", flush=True)
        for workers in args.workers:
            port = _free_port()
            env = {"SER_MODEL_PATH": str(version_dir), "SER_PORT": str(port), "SER_HOST": "127.0.0.1",
                   "SER_LOG_LEVEL": "warning", "SER_WORKERS": str(workers)}
            fast = http_run(f"{tag} service, {workers} worker(s)", [sys.executable, "-m", "app"], env, port,
                            clips, args.concurrency, args.seconds, check_answers=True)
            row = {"workers": workers, "service": fast}
            if not args.no_naive:
                port = _free_port()
                # Started the same way as the service (app.server: the same workers, a listening socket each).
                argv = [sys.executable, "-c", "from app.server import serve; serve('benchmarks.naive_service:app', "
                        f"host='127.0.0.1', port={port}, workers={workers}, log_level='warning')"]
                naive = http_run(f"{tag} naive model.predict, {workers} worker(s)", argv,
                                 {"SER_MODEL_PATH": str(version_dir), "SER_WORKERS": str(workers)}, port, clips,
                                 args.concurrency, args.seconds,
                                 check_answers=False)
                row["naive"] = naive
                row["throughput_ratio"] = fast["rps"] / naive["rps"]
            entry["http"].append(row)
        results["models"].append(entry)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"serving-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report(results))
    print(f"\nresults in {out}/serving-{stamp}.json")
    return 0


def report(results: dict) -> str:
    block = results.get("in_process_block", 1)
    lines = [f"In process, one 3 s WAV clip at a time, each path {block} request(s) in a row (p50 / p95 ms):", "",
             "| model | decode + features | model call (signature) | service path | model.predict | naive path "
             "| naive / service |", "|---|---|---|---|---|---|---|"]
    for m in results["models"]:
        ip = m["in_process"]
        cell = lambda k: f"{ip[k]['p50_ms']:.2f} / {ip[k]['p95_ms']:.2f}"  # noqa: E731
        lines.append(f"| {m['name']}/{m['version']} ({m['features']}) | {cell('decode+features')} "
                     f"| {cell('model (signature)')} | {cell('total (service path)')} | {cell('model (keras predict)')} "
                     f"| {cell('total (naive path)')} "
                     f"| {ip['total (naive path)']['p50_ms'] / ip['total (service path)']['p50_ms']:.1f}x |")
    lines += ["", f"Over HTTP (uvicorn), {results['concurrency']} concurrent keep-alive connections, "
                  f"{results['seconds']:g} s per run, 3 s WAV uploads:", "",
              "| model | workers | server | req/s | server CPU ms/req | p50 ms | p95 ms | p99 ms | errors "
              "| throughput vs naive |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for m in results["models"]:
        for row in m["http"]:
            for kind in ("service", "naive"):
                if kind not in row:
                    continue
                r = row[kind]
                ratio = f"{row['throughput_ratio']:.1f}x" if kind == "service" and "throughput_ratio" in row else ""
                lines.append(f"| {m['name']}/{m['version']} ({m['features']}) | {row['workers']} | "
                             f"{'service (signature, batching)' if kind == 'service' else 'naive (Keras model.predict)'} "
                             f"| {r['rps']:.1f} | {r.get('server_cpu_ms_per_request') or float('nan'):.2f} "
                             f"| {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} "
                             f"| {r['errors']} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
