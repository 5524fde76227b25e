"""`invoke compare`: the reverse function beside a Ray task, measured in the user's lab, in one run.

The function: HTTP POSTs from this machine to the function (through the
OpenFaaS gateway online; offline to the function's own NodePort, there being
no gateway), the first call of the run, warm calls, then a batch of calls
with a fixed number in flight. Ray: a job on the lab's RayCluster times a
trivial task's round trip inside the cluster (the first call, which starts a
worker process, then warm calls), then the same batch of tasks with the same
number in flight. Milliseconds for single calls, calls per second for the batch.
"""
from __future__ import annotations

import json
import shlex
import statistics
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .core.steps import StepFailed

MARK = "KINDLAB-COMPARE "
BATCH, IN_FLIGHT = 1000, 16  # the batch's size and how many calls it keeps in flight
# Runs on the Ray cluster as a job: ray.init() joins the cluster it runs in.
RAY_PROBE = """
import json, time, ray
ray.init()
@ray.remote
def echo(x):
    return x
def once():
    start = time.perf_counter(); ray.get(echo.remote(1)); return (time.perf_counter() - start) * 1000
first = once()
warm = [once() for _ in range({calls})]
start, pending, done = time.perf_counter(), [], 0
for i in range({batch}):
    if len(pending) >= {in_flight}:
        ready, pending = ray.wait(pending, num_returns=1)
        done += len(ray.get(ready))
    pending.append(echo.remote(i))
done += len(ray.get(pending))
batch_s = time.perf_counter() - start
print("{mark}" + json.dumps({{"first_ms": first, "warm_ms": warm, "batch": done, "batch_s": batch_s}}), flush=True)
"""


@dataclass(frozen=True)
class Latency:
    system: str
    first_ms: float
    warm_ms: list[float]
    batch: int = 0       # calls in the batch (0: none made)
    batch_s: float = 0.0  # its wall time

    def row(self) -> tuple[str, str, str, str, str, str]:
        warm = sorted(self.warm_ms)
        p95 = warm[min(len(warm) - 1, int(round(0.95 * (len(warm) - 1))))]
        rate = f"{self.batch / self.batch_s:.0f}" if self.batch and self.batch_s else "-"
        return (self.system, f"{self.first_ms:.1f}", f"{statistics.median(warm):.1f}", f"{p95:.1f}",
                str(len(warm)), rate)


def faas_latency(url: str, calls: int = 20, data: bytes = b"Hello World", timeout: float = 30,
                 system: str = "OpenFaaS function (HTTP via gateway)", batch: int = 0,
                 in_flight: int = IN_FLIGHT) -> Latency:
    """POSTs to the function at `url`: the first, `calls` warm ones, then `batch` with `in_flight` at once."""
    expected = data[::-1]

    def once() -> float:
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"),
                                        timeout=timeout) as answer:
                body = answer.read()
        except (OSError, urllib.error.HTTPError) as exc:
            raise StepFailed(f"the reverse function did not answer at {url}: {exc}; "
                             "deploy it with `invoke faas.deploy`") from None
        if body != expected:
            raise StepFailed(f"the reverse function at {url} answered {body[:80]!r}, not {expected!r}")
        return (time.perf_counter() - start) * 1000

    first = once()
    warm = [once() for _ in range(calls)]
    took = 0.0
    if batch:
        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            start = time.perf_counter()
            list(pool.map(lambda _: once(), range(batch)))
            took = time.perf_counter() - start
    return Latency(system, first, warm, batch, took)


def ray_latency(address: str, calls: int = 20, timeout: float = 300, batch: int = 0,
                in_flight: int = IN_FLIGHT) -> Latency:
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    probe = RAY_PROBE.format(calls=calls, mark=MARK, batch=batch, in_flight=in_flight)
    job = client.submit_job(entrypoint=shlex.join(["python", "-c", probe]))
    deadline = time.monotonic() + timeout
    while (status := client.get_job_status(job)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        if time.monotonic() > deadline:
            client.stop_job(job)
            raise StepFailed(f"Ray latency job {job} still {status} after {timeout:.0f}s")
        time.sleep(0.2)
    logs = client.get_job_logs(job)
    line = next((l for l in logs.splitlines() if l.startswith(MARK)), None)
    if status != JobStatus.SUCCEEDED or line is None:
        raise StepFailed(f"Ray latency job {job} ended {status}: {logs.strip()[-400:]}")
    result = json.loads(line[len(MARK):])
    return Latency("Ray task (inside the cluster)", result["first_ms"], result["warm_ms"], result["batch"],
                   result["batch_s"])


HEADERS = ("system", "first call ms", "warm median ms", "warm p95 ms", "warm calls")


def measure(lab, ctx, calls: int, gateway: str = "", address: str = "", batch: int = BATCH) -> list[Latency]:
    """Both systems, measured one after the other: the lab's function and (port-forwarded) Ray head unless given."""
    from . import faas, ray
    from .core.portforward import forwarded

    if gateway:
        url, system = f"{gateway.rstrip('/')}/function/{faas.FUNCTION}", "OpenFaaS function (HTTP via gateway)"
    elif lab.offline:  # on a host, its port forwarded here over SSH
        url, system = ctx.sh.reach(faas.function_url(lab)), "reverse function pod (HTTP, NodePort; no gateway offline)"
    else:
        url, system = ctx.sh.reach(faas.function_url(lab)), "OpenFaaS function (HTTP via gateway)"
    try:
        rows = [faas_latency(url, calls, system=system, batch=batch)]
        if address:
            rows.append(ray_latency(address, calls, batch=batch))
        else:
            with forwarded(ctx, ray.NAMESPACE, f"svc/{ray.HEAD_SERVICE}", ray.DASHBOARD_PORT) as forward:
                rows.append(ray_latency(forward, calls, batch=batch))
    finally:
        ctx.sh.close()
    return rows


def table(lab, rows: list[Latency]):
    from rich.table import Table

    batch = max((row.batch for row in rows), default=0)
    out = Table(*HEADERS, f"batch calls/s ({batch}, {IN_FLIGHT} in flight)",
                title=f"the reverse function vs a Ray task on {lab.context}", title_justify="left")
    for row in rows:
        out.add_row(*row.row())
    return out
