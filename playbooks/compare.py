"""`invoke compare`: OpenFaaS function latency beside Ray task latency, measured in the user's lab.

OpenFaaS: HTTP POSTs to the gateway's /function/reverse (the first call of
the run, then warm calls). Ray: a small job on the Ray cluster times a trivial
task's round trip inside the cluster (the first call, which starts a worker
process, then warm calls). Both report milliseconds.
"""
from __future__ import annotations

import json
import shlex
import statistics
import time
import urllib.request
from dataclasses import dataclass

from .core.steps import StepFailed

MARK = "KINDLAB-COMPARE "
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
print("{mark}" + json.dumps({{"first_ms": first, "warm_ms": warm}}), flush=True)
"""


@dataclass(frozen=True)
class Latency:
    system: str
    first_ms: float
    warm_ms: list[float]

    def row(self) -> tuple[str, str, str, str, str]:
        warm = sorted(self.warm_ms)
        p95 = warm[min(len(warm) - 1, int(round(0.95 * (len(warm) - 1))))]
        return (self.system, f"{self.first_ms:.1f}", f"{statistics.median(warm):.1f}", f"{p95:.1f}",
                str(len(warm)))


def faas_latency(gateway: str, calls: int = 20, data: bytes = b"Hello World", timeout: float = 30) -> Latency:
    url = f"{gateway.rstrip('/')}/function/reverse"

    def once() -> float:
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"),
                                        timeout=timeout) as answer:
                answer.read()
        except OSError as exc:
            raise StepFailed(f"the reverse function did not answer at {url}: {exc}; "
                             "deploy it with `invoke faas.deploy`") from None
        return (time.perf_counter() - start) * 1000

    first = once()
    return Latency("OpenFaaS function (HTTP via gateway)", first, [once() for _ in range(calls)])


def ray_latency(address: str, calls: int = 20, timeout: float = 300) -> Latency:
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(address)
    job = client.submit_job(entrypoint=shlex.join(["python", "-c", RAY_PROBE.format(calls=calls, mark=MARK)]))
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
    return Latency("Ray task (inside the cluster)", result["first_ms"], result["warm_ms"])


HEADERS = ("system", "first call ms", "warm median ms", "warm p95 ms", "warm calls")


def measure(lab, ctx, calls: int, gateway: str = "", address: str = ""):
    """Both latencies as a table: the lab's gateway and (port-forwarded) Ray head unless given."""
    from rich.table import Table

    from . import faas, ray
    from .core.portforward import forwarded

    try:
        rows = [faas_latency(gateway or faas.gateway_url(lab), calls)]
        if address:
            rows.append(ray_latency(address, calls))
        else:
            with forwarded(ctx, ray.NAMESPACE, f"svc/{ray.HEAD_SERVICE}", ray.DASHBOARD_PORT) as url:
                rows.append(ray_latency(url, calls))
    finally:
        ctx.sh.close()
    table = Table(*HEADERS, title=f"OpenFaaS vs Ray on {lab.context}", title_justify="left")
    for row in rows:
        table.add_row(*row.row())
    return table

