"""A crawl submitted through the Ray Jobs API to a real local Ray head (`ray start --head`).

The head runs in its own session, as `ray start --block`, so teardown ends
exactly the processes it started (never `ray stop`, which would end every Ray
on the machine); a guardian process sweeps up whatever is left, even when the
test process is killed. The head's services bind to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.sitegen import SiteServer, docs_site

try:
    import ray  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI"):
        raise
    pytest.skip("ray is not installed (pip install 'ray[default]==2.52.0'); the Ray Jobs test needs it",
                allow_module_level=True)

from crawler.jobs import CrawlJobError, submit_crawl, summarize  # noqa: E402

pytestmark = pytest.mark.slow  # about 15 s: a Ray head starts and runs two jobs; still in the default run

HEAD_START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Runs beside the test process and outlives it: when its stdin closes (the
# fixture's teardown, or the test process dying however it dies), it kills
# whatever is left of this Ray head: the processes of `ray start`'s session,
# and job drivers (their own sessions), known by the head's address in their
# environment. Only processes of this head match: the address has a port of
# its own. Then it removes the head's temp dir.
GUARDIAN = r"""
import os, shutil, signal, sys, time
session, address, temp_dir = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
sys.stdin.read()
def ours(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state, _, _, sid = f.read().rsplit(b")", 1)[1].split()[:4]
        if state == b"Z":
            return False
        if int(sid) == session:
            return True
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"RAY_ADDRESS=" + address in f.read().split(b"\0")
    except (OSError, ValueError):
        return False
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    left = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid() and ours(p)]
    if not left:
        break
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)
shutil.rmtree(temp_dir, ignore_errors=True)
"""


def _stop_head(process: subprocess.Popen, guardian: subprocess.Popen | None) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # `ray start --block` then stops what it started
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:  # Ray's SIGTERM handler can hang: the guardian finishes the job
            pass
    if guardian is not None:
        guardian.stdin.close()
        guardian.wait(timeout=30)
    elif process.poll() is None:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_head():
    """A local Ray head with its dashboard (the Jobs API) on a free port of 127.0.0.1."""
    temp_dir = tempfile.mkdtemp(prefix="klray-")  # short: Ray's socket paths must fit in 107 bytes
    dashboard_port, gcs_port = free_port(), free_port()
    command = [
        sys.executable, "-c", "from ray.scripts.scripts import main; main()",
        "start", "--head", "--block",
        "--port", str(gcs_port),
        "--dashboard-port", str(dashboard_port),
        "--dashboard-host", "127.0.0.1",
        "--include-dashboard=true",
        "--ray-client-server-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()),
        "--num-cpus", "2",
        "--object-store-memory", str(100 * 1024 * 1024),
        "--disable-usage-stats",
        "--temp-dir", temp_dir,
    ]
    # A single-machine Ray: every service on 127.0.0.1 instead of the machine's address.
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO="0")
    log_path = Path(temp_dir) / "ray-start.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
    guardian = None
    if sys.platform.startswith("linux"):
        guardian = subprocess.Popen(
            [sys.executable, "-c", GUARDIAN, str(process.pid), f"127.0.0.1:{gcs_port}", temp_dir],
            stdin=subprocess.PIPE, start_new_session=True,
        )
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_dashboard(address, process, log_path)
        yield address
    finally:
        _stop_head(process, guardian)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_dashboard(address: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + HEAD_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ray start exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(address + "/api/version", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"the Ray dashboard at {address} did not answer within {HEAD_START_TIMEOUT_S}s:\n"
                f"{log_path.read_text()[-3000:]}")


def test_crawl_job_finds_every_page_and_requests_each_once(ray_head, tmp_path):
    site = docs_site(sections=3, pages_per_section=4, children_per_page=4, latency_s=0.005)
    lines: list[str] = []
    with SiteServer(site) as server:
        home = server.url("/docs/index.html")
        result = submit_crawl(
            ray_head,
            [home, home, "--prefix", server.url("/docs/"), "--depth", "3", "--max-pages", "500",
             "--concurrency", "8", "--per-host", "8", "--fetchers", "2", "--no-robots",
             "--json", str(tmp_path / "crawl.json")],
            on_log=lines.append,
            timeout_s=120,
        )
        requests = server.requests

    assert {page["final_url"][len(server.origin):] for page in result["pages"]} == set(site.depth_of)
    assert len(result["pages"]) == 1 + 3 + 12 + 48
    assert max(requests.values()) == 1
    assert result["config"]["mode"] == "ray" and result["broken"] == []
    assert result["job"]["id"].startswith("raysubmit_")
    assert json.loads((tmp_path / "crawl.json").read_text())["pages"] == result["pages"]  # the head is this machine
    assert any(line.startswith("Total: 64 unique pages") for line in lines)  # the job's own summary, streamed
    assert summarize(result).splitlines()[1].startswith(f"  {home}  64 pages (depth 0: 1, depth 1: 3")


def test_failing_crawl_job_raises_with_its_id_and_reason(ray_head):
    with pytest.raises(CrawlJobError) as caught:
        submit_crawl(ray_head, ["http://127.0.0.1:9/blog/", "--prefix", "http://127.0.0.1:9/docs/"],
                     on_log=lambda line: None, timeout_s=120)
    error = caught.value
    assert error.status == "FAILED" and error.job_id.startswith("raysubmit_")
    assert "is outside the prefix" in str(error)


def test_invoke_ray_crawl_with_an_address_submits_and_prints_the_summary(ray_head, tmp_path):
    """The user's path: `invoke ray.crawl --address ...` against a local Ray head."""
    site = docs_site(sections=2, pages_per_section=3, children_per_page=2, latency_s=0.005)
    env = {**os.environ, "KINDLAB_HOME": str(tmp_path / "home"), "KUBECONFIG": str(tmp_path / "kubeconfig")}
    repo = Path(__file__).resolve().parents[2]
    with SiteServer(site) as server:
        home = server.url("/docs/index.html")
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "ray.crawl", "--address", ray_head, "--url", home,
             "--prefix", server.url("/docs/"), "--depth", "3", "--max-pages", "100"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=180)
        requests = server.requests
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    pages = len(site.depth_of)
    assert f"{home}  {pages} pages" in out  # the per-start-URL summary
    assert f"job finished" in out and f"{pages} pages, 0 failed" in out
    assert "failed=0" in out and max(requests.values()) == 1


def test_compare_measures_function_and_ray_task_latency(ray_head, tmp_path):
    """`invoke compare` against a local Ray head and the reverse handler served on loopback."""
    from socketserver import ThreadingMixIn
    from tests.unit.test_reverse_http import load_handler, make_app
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    class Concurrent(ThreadingMixIn, WSGIServer):  # the batch keeps 16 calls in flight, as of-watchdog serves them
        daemon_threads, request_queue_size = True, 64
    server = make_server("127.0.0.1", 0, make_app(load_handler()), server_class=Concurrent, handler_class=Quiet)
    import threading
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "KINDLAB_HOME": str(tmp_path / "home"), "KUBECONFIG": str(tmp_path / "kubeconfig"),
           "COLUMNS": "250"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "invoke", "compare", "--calls", os.environ.get("KINDLAB_COMPARE_CALLS", "5"),
             "--batch", "40", "--provider", "kwok",
             "--gateway", f"http://127.0.0.1:{server.server_port}", "--address", ray_head],
            cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=180)
    finally:
        server.shutdown()
    out = proc.stdout + proc.stderr
    print(out)  # the table, for `pytest -s`
    assert proc.returncode == 0, out
    assert "OpenFaaS function (HTTP via gateway)" in out and "Ray task (inside the cluster)" in out
    rows = [line for line in out.splitlines() if line.startswith("│") and ("OpenFaaS function" in line or "Ray task" in line)]
    for row in rows:  # first call, warm median, warm p95 are numbers; 5 warm calls each; a batch's rate
        cells = [c.strip() for c in row.split("│") if c.strip()]
        assert all(float(v) >= 0 for v in cells[1:4]) and cells[4] == os.environ.get("KINDLAB_COMPARE_CALLS", "5")
        assert float(cells[5]) > 0  # calls per second of the 40-call batch
    assert "batch calls/s (40, 16 in flight)" in out
