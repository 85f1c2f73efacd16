#!/usr/bin/env python
"""Load and fault test: ``python -m app`` with 2 workers, driven past its capacity; does it stay correct?

Steps, against one service process (uvicorn, ``SER_WORKERS`` workers, real bundled EMO-DB clips):
  1. each clip sent alone on the idle service: the answer every later 200 must equal;
  2. capacity: C concurrent keep-alive clients for a few seconds, as fast as answers come (requests/s);
  3. overload: requests sent at ``--factor`` (2) times that rate for ``--seconds`` (60), open loop (a new
     request on schedule whether or not earlier ones were answered, as independent users do), and during
     it a slow-upload client (the body trickling in) and clients that drop their connection mid-upload;
     the load comes from ``--client-processes`` processes (one Python process of httpx cannot send on
     schedule at these rates when it shares the cores with the service);
  4. afterwards: /health/ready, one more answer, each worker's RSS and pid against before (no restart).
Pass: every answer is 200 or 503 ``overloaded`` with Retry-After, none lost (every request answered),
every 200 equals its clip's answer alone, the slow uploads answered, the service healthy afterwards.
The exit status says whether it passed; the measurements are printed and written (JSON and Markdown) to
benchmarks/results/.

    python benchmarks/load.py                     # make bench-load
    python benchmarks/load.py --seconds 20 --factor 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

BOUNDARY = "load-test-boundary"


def clips(n: int) -> list[tuple[str, bytes]]:
    """The first ``n`` bundled EMO-DB recordings (FLAC, a few seconds each), as multipart bodies."""
    paths = sorted((ROOT / "data" / "emodb" / "wav").glob("*.flac"))[:n]
    return [(p.name, multipart(p.name, p.read_bytes())) for p in paths]


def multipart(name: str, data: bytes) -> bytes:
    # Built once per clip: the client's CPU goes to sending, not to encoding the same form again.
    return (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> int:
    """How many sockets listen on ``port`` (each worker has its own, app/server.py)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                count += 1
    return count


def workers_of(pid: int) -> dict[int, int]:
    """The server's worker processes and their resident memory in bytes (from /proc)."""
    rss = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ValueError, IndexError):
            continue
        if b"spawn_main" not in (entry / "cmdline").read_bytes():
            continue  # not a worker (multiprocessing's resource tracker)
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        rss[int(entry.name)] = kb * 1024
    if not rss:  # one worker: the server process itself
        status = Path(f"/proc/{pid}/status").read_text()
        rss[pid] = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")) * 1024
    return rss


def start(port: int, workers: int, max_queue: int | None, keep_alive: float) -> subprocess.Popen:
    # Keep-alive longer than the clients' idle expiry (see limits()), as behind any pooling client; with
    # uvicorn's 5 s, a client process starved of CPU reuses connections the service is closing.
    env = {**os.environ, "SER_PORT": str(port), "SER_HOST": "127.0.0.1", "SER_WORKERS": str(workers),
           "SER_LOG_LEVEL": "warning", "SER_KEEP_ALIVE_S": str(keep_alive)}
    if max_queue:
        env["SER_MAX_QUEUE"] = str(max_queue)
    proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while listening(port) < workers:  # every worker loaded its model and listens
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the service did not start (exit status {proc.poll()})")
        time.sleep(0.5)
    return proc


class Tally:
    """Every answer of one phase, classified."""

    def __init__(self, expected: dict[str, list[float]]):
        self.expected = expected
        self.latencies: list[float] = []  # of the 200s
        self.counts = {"sent": 0, "ok": 0, "overloaded": 0, "wrong": 0, "bad_503": 0, "other_status": 0,
                       "lost": 0}
        self.problems: list[str] = []

    def record(self, name: str, response: httpx.Response | None, seconds: float, error: str | None = None):
        self.counts["sent"] += 1
        if response is None:
            self.counts["lost"] += 1
            self.problems.append(f"{name}: no answer ({error})")
        elif response.status_code == 200:
            got = list(response.json()["probabilities"].values())
            if np.allclose(got, self.expected[name], rtol=1e-4, atol=1e-5):
                self.counts["ok"] += 1
                self.latencies.append(seconds)
            else:
                self.counts["wrong"] += 1
                self.problems.append(f"{name}: {got} != {self.expected[name]}")
        elif response.status_code == 503:
            if response.headers.get("retry-after") and response.json().get("code") == "overloaded":
                self.counts["overloaded"] += 1
            else:
                self.counts["bad_503"] += 1
                self.problems.append(f"{name}: 503 {response.headers} {response.text[:200]}")
        else:
            self.counts["other_status"] += 1
            self.problems.append(f"{name}: {response.status_code} {response.text[:200]}")

    def raw(self) -> dict:
        return {"counts": self.counts, "latencies": self.latencies, "problems": self.problems}

    @classmethod
    def merged(cls, raws: list[dict]) -> "Tally":
        tally = cls({})
        for raw in raws:
            for key, value in raw["counts"].items():
                tally.counts[key] += value
            tally.latencies += raw["latencies"]
            tally.problems += raw["problems"]
        return tally

    def summary(self, seconds: float) -> dict:
        ms = np.asarray(self.latencies) * 1000
        return {**self.counts, "seconds": round(seconds, 1), "ok_per_s": round(self.counts["ok"] / seconds, 1),
                "sent_per_s": round(self.counts["sent"] / seconds, 1),
                "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
                "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
                "max_ms": round(float(ms.max()), 1) if len(ms) else None, "problems": self.problems[:10]}


async def send(client: httpx.AsyncClient, tally: Tally, name: str, body: bytes) -> None:
    start = time.perf_counter()
    try:
        response = await client.post("/predict", content=body, headers=HEADERS)
    except httpx.HTTPError as exc:
        tally.record(name, None, time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
        return
    tally.record(name, response, time.perf_counter() - start)


# Idle keep-alive connections are dropped by the client before uvicorn's 5 s keep-alive timeout closes them
# (as a load balancer's idle timeout should be): otherwise a request sent on a connection the server is
# closing at that moment gets no answer, a race of keep-alive itself rather than of the service.
def limits(connections: int) -> httpx.Limits:
    return httpx.Limits(max_connections=connections, keepalive_expiry=2.0)


async def capacity(base: str, bodies, expected, concurrency: int, seconds: float) -> dict:
    """Closed loop: ``concurrency`` clients, each sending its next request when the last is answered."""
    tally = Tally(expected)
    stop = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits(concurrency)) as client:
        async def loop(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                name, body = bodies[i % len(bodies)]
                await send(client, tally, name, body)
                i += concurrency

        await asyncio.gather(*[loop(k) for k in range(concurrency)])
    return tally.raw()


async def trickle(body: bytes, chunk: int, pause: float, drop_after: int | None = None):
    """The body in ``chunk``-byte pieces every ``pause`` s; with ``drop_after``, the client gives up after
    that many bytes (the connection is dropped mid-upload)."""
    for i in range(0, len(body), chunk):
        if drop_after is not None and i >= drop_after:
            raise ConnectionAbortedError("client gave up mid-upload")
        yield body[i:i + chunk]
        await asyncio.sleep(pause)


async def slow_clients(base: str, bodies, expected, stop: float) -> dict:
    """One client uploading slowly (1 KB every 50 ms), one after another until ``stop``; and, beside it,
    clients that drop their connection halfway through an upload."""
    slow, dropped = Tally(expected), {"dropped": 0, "answered_before_drop": 0}

    async def slow_loop(client):
        i = 0
        while time.perf_counter() < stop:
            name, body = bodies[i % len(bodies)]
            i += 1
            started = time.perf_counter()
            try:
                response = await client.post("/predict", content=trickle(body, 1024, 0.05), headers=HEADERS)
                slow.record(name, response, time.perf_counter() - started)
            except httpx.HTTPError as exc:
                slow.record(name, None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")

    async def drop_loop(client):
        i = 0
        while time.perf_counter() < stop:
            name, body = bodies[i % len(bodies)]
            i += 1
            try:
                await client.post("/predict", content=trickle(body, 4096, 0.02, drop_after=len(body) // 2),
                                  headers=HEADERS)
                dropped["answered_before_drop"] += 1  # refused (503) before the client gave up
            except (httpx.HTTPError, ConnectionAbortedError):
                dropped["dropped"] += 1
            await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits(1)) as a, \
            httpx.AsyncClient(base_url=base, timeout=60, limits=limits(1)) as b:
        await asyncio.gather(slow_loop(a), drop_loop(b))
    result = slow.summary(1.0)
    return {"slow_uploads": {k: result[k] for k in ("sent", "ok", "overloaded", "wrong", "bad_503", "lost",
                                                    "other_status", "p50_ms", "max_ms", "problems")},
            "dropped_uploads": dropped}


async def open_loop(base: str, bodies, expected, rate: float, seconds: float, offset: int) -> dict:
    """Open loop: requests sent at ``rate`` per second for ``seconds``, each waited for on its own."""
    tally = Tally(expected)
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits(1024)) as client:
        start = loop.time()
        tasks, i = [], 0
        while (due := start + i / rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - loop.time()))
            name, body = bodies[(offset + i) % len(bodies)]
            tasks.append(asyncio.ensure_future(send(client, tally, name, body)))
            i += 1
        sending = loop.time() - start
        await asyncio.gather(*tasks)
    return {**tally.raw(), "sending_s": sending}


def client_process(kind: str, base: str, n_clips: int, expected: dict, amount: float, seconds: float,
                   offset: int, start_at: float) -> dict:
    """One load-generating process: ``capacity`` with ``amount`` clients or ``open_loop`` at ``amount``/s,
    from the wall-clock time ``start_at`` (so that all processes start together, once they are ready)."""
    bodies = clips(n_clips)
    time.sleep(max(0.0, start_at - time.time()))
    if kind == "capacity":
        return asyncio.run(capacity(base, bodies, expected, int(amount), seconds))
    return asyncio.run(open_loop(base, bodies, expected, amount, seconds, offset))


def in_processes(processes: int, kind: str, base: str, n_clips: int, expected: dict, amount: float,
                 seconds: float, during=None) -> tuple[Tally, float, list[dict], object]:
    """Run ``client_process`` in ``processes`` processes (``amount`` shared among them), and ``during`` (a
    coroutine function) in this one meanwhile: (merged tally, seconds until the last answer, raws, its result)."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes) as pool:
        start_at = time.time() + 10  # the processes import numpy and httpx first
        pending = pool.starmap_async(client_process, [(kind, base, n_clips, expected, amount / processes, seconds,
                                                       k * 7, start_at) for k in range(processes)])
        time.sleep(max(0.0, start_at - time.time()))
        side = asyncio.run(during()) if during is not None else None
        raws = pending.get()
    return Tally.merged(raws), time.time() - start_at, raws, side


def metrics_text(base: str) -> str:
    return httpx.get(f"{base}/metrics", timeout=30).text


def metric(text: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def server_quantiles(before: str, after: str, route: str = "/predict") -> dict:
    """p50/p99 of the service's own request durations between two scrapes (its histogram, all statuses), as
    the upper bounds of the buckets they fall in: what the service took, without the client's delays."""
    def buckets(text):
        from prometheus_client.parser import text_string_to_metric_families

        return {float(s.labels["le"]): s.value for f in text_string_to_metric_families(text) for s in f.samples
                if s.name == "ser_request_duration_seconds_bucket" and s.labels.get("route") == route}
    b, a = buckets(before), buckets(after)
    counts = sorted((le, a[le] - b.get(le, 0.0)) for le in a)
    total = counts[-1][1]
    return {f"server_{name}_ms_at_most": next((le * 1000 for le, c in counts if c >= q * total), None)
            for name, q in (("p50", 0.5), ("p99", 0.99))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60, help="length of the overload phase")
    parser.add_argument("--factor", type=float, default=2.0, help="overload rate / measured capacity")
    parser.add_argument("--capacity-seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16, help="clients of the capacity phase")
    parser.add_argument("--client-processes", type=int, default=4, help="processes generating the load")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--max-queue", type=int, default=None, help="SER_MAX_QUEUE (default: the service's)")
    parser.add_argument("--keep-alive", type=float, default=75, help="SER_KEEP_ALIVE_S")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    bodies = clips(args.clips)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = start(port, args.workers, args.max_queue, args.keep_alive)
    results = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": {"cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                           "python": platform.python_version()},
               "workers": args.workers, "max_queue": args.max_queue, "keep_alive_s": args.keep_alive,
               "startup_s": round(time.perf_counter() - t0, 1)}
    try:
        expected = {}
        with httpx.Client(base_url=base, timeout=60) as client:
            for name, body in bodies:  # each clip alone, on the idle service
                response = client.post("/predict", content=body, headers=HEADERS)
                response.raise_for_status()
                expected[name] = list(response.json()["probabilities"].values())
        before = workers_of(proc.pid)
        tally, elapsed, _, _ = in_processes(args.client_processes, "capacity", base, args.clips, expected,
                                            args.concurrency, args.capacity_seconds)
        results["capacity"] = tally.summary(elapsed)
        rate = args.factor * results["capacity"]["ok_per_s"]
        scrape = metrics_text(base)
        tally, elapsed, raws, faults = in_processes(
            args.client_processes, "open_loop", base, args.clips, expected, rate, args.seconds,
            during=lambda: slow_clients(base, bodies, expected, time.perf_counter() + args.seconds))
        results["overload"] = {**tally.summary(elapsed), "window_s": args.seconds, "target_per_s": round(rate, 1),
                               "sent_per_s": round(tally.counts["sent"] / max(r["sending_s"] for r in raws), 1),
                               **server_quantiles(scrape, metrics_text(base)), **faults}
        time.sleep(1)
        after = workers_of(proc.pid)
        text = metrics_text(base)
        ready = httpx.get(f"{base}/health/ready", timeout=10)
        name, body = bodies[0]
        again = httpx.post(f"{base}/predict", content=body, headers=HEADERS, timeout=60)
        results["after"] = {
            "ready": ready.status_code,
            "answer_unchanged": again.status_code == 200 and bool(np.allclose(
                list(again.json()["probabilities"].values()), expected[name], rtol=1e-4, atol=1e-5)),
            "workers_restarted": sorted(before) != sorted(after),
            "rss_mb_before": {pid: round(v / 2**20) for pid, v in before.items()},
            "rss_mb_after": {pid: round(v / 2**20) for pid, v in after.items()},
            "metrics": {"overloaded_503": metric(text, "ser_request_errors_total", code="overloaded"),
                        "predict_200": metric(text, "ser_requests_total", route="/predict", status="200"),
                        "mean_batch": round(metric(text, "ser_model_batch_size_sum")
                                            / max(1.0, metric(text, "ser_model_batch_size_count")), 2),
                        "queue_depth_now": metric(text, "ser_queue_depth")},
        }
        results["load_average_at_end"] = os.getloadavg()
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    over, slow = results["overload"], results["overload"]["slow_uploads"]
    failures = [k for k in ("wrong", "bad_503", "other_status", "lost") if over[k] or results["capacity"][k]]
    failures += ["slow upload not answered"] * bool(slow["lost"] or slow["wrong"] or slow["other_status"]
                                                    or slow["bad_503"] or not slow["sent"])
    failures += ["no 503 under overload"] * (over["overloaded"] == 0)
    after = results["after"]
    failures += ["not healthy afterwards"] * (after["ready"] != 200 or not after["answer_unchanged"]
                                             or after["workers_restarted"])
    results["passed"], results["failures"] = not failures, failures
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    (out / f"load-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / f"load-{stamp}.md").write_text(report(results) + "\n")
    print(report(results))
    print(f"\nresults in {out}/load-{stamp}.json")
    return 0 if not failures else 1


def report(r: dict) -> str:
    c, o, a = r["capacity"], r["overload"], r["after"]
    s, d = o["slow_uploads"], o["dropped_uploads"]
    lines = [f"Load test of {r['started']}: {r['workers']} workers, {r['machine']['cpus']} CPUs, load average "
             f"{r['machine']['load_average_at_start'][0]:.1f} at start, {r['load_average_at_end'][0]:.1f} at end",
             "", "200/s: right answers per second until the last answer; p50/p99/max: latency of the 200s.", "",
             "| phase | sent/s | 200/s | 200 | 503 overloaded | wrong | lost | other | p50 ms | p99 ms | max ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, p in ((f"capacity ({c['seconds']:g} s, closed loop)", c),
                     (f"overload ({o['window_s']:g} s at {o['target_per_s']:g}/s; last answer after "
                      f"{o['seconds']:g} s)", o)):
        lines.append(f"| {label} | {p['sent_per_s']} | {p['ok_per_s']} | {p['ok']} | {p['overloaded']} "
                     f"| {p['wrong']} | {p['lost']} | {p['other_status'] + p['bad_503']} | {p['p50_ms']} "
                     f"| {p['p99_ms']} | {p['max_ms']} |")
    lines += ["", f"Slow uploads (1 KB / 50 ms) during the overload: {s['sent']} sent, {s['ok']} answered 200 (right), "
                  f"{s['overloaded']} 503, {s['lost']} lost, {s['wrong']} wrong; longest {s['max_ms']} ms.",
              f"Uploads dropped halfway: {d['dropped']} (and {d['answered_before_drop']} refused before the drop).",
              f"The service's own time for /predict during the overload (its latency histogram, all statuses): "
              f"p50 <= {o['server_p50_ms_at_most']:g} ms, p99 <= {o['server_p99_ms_at_most']:g} ms.",
              f"Afterwards: /health/ready {a['ready']}, answer unchanged: {a['answer_unchanged']}, workers restarted: "
              f"{a['workers_restarted']}; RSS MB per worker before {list(a['rss_mb_before'].values())}, after "
              f"{list(a['rss_mb_after'].values())}; metrics: {a['metrics']}.",
              "PASSED" if r["passed"] else f"FAILED: {r['failures']}"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
