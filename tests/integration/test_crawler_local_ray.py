"""`python -m crawler --ray` with no Ray to join: the crawler starts a Ray of its own, crawls, and takes it down.

The first test sends every request through the fetcher actors (--no-head-start),
so the workers are exercised; the second has the driver's head start end the
crawl while its Ray is still starting. Run from a directory of its own, as a user would, with this checkout's crawler
put on the path only for the driver: the Ray it starts must hand the same
package to its workers (without a runtime environment to ship), and leave no
process behind. The figures (start-up, the time after the last page) are
printed, not asserted: benchmarks/ray_costs.py measures them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sitegen import SiteServer, docs_site

pytest.importorskip("ray", reason="ray is not installed (pip install 'ray[default]==2.52.0')")
pytestmark = pytest.mark.slow  # a local Ray starts and stops: about 10 s on two cores

ROOT = Path(__file__).resolve().parents[2]
# The driver imports this checkout's crawler (not whatever an editable install points at)
DRIVER = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from crawler.cli import main; sys.exit(main())"


def session_processes(sid: int) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "sid=,stat=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in out.splitlines()]
    return [r[2] for r in rows if len(r) == 3 and r[0] == str(sid) and not r[1].startswith("Z")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process sessions read with ps")
def crawl_on_own_ray(site, tmp_path, *flags):
    """Run the crawler with --ray in a session of its own; the result, its stderr, the requests per path,
    launch and end (epoch seconds), and the processes of its session still there once it has ended."""
    out = tmp_path / "crawl.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    with SiteServer(site) as server:
        home = server.url("/docs/index.html")
        began = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, home, "--prefix", server.url("/docs/"), "--depth", "3",
             "--concurrency", "64", "--per-host", "64", "--no-robots", "--ray", "--quiet", "--json", str(out), *flags],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        ended = time.time()
        requests = server.requests
        origin = server.origin
    time.sleep(0.5)  # a process the kernel signals at its parent's death is gone within moments
    left = session_processes(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr
    return json.loads(out.read_text()), stderr, requests, origin, began, ended, left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process sessions read with ps")
def test_a_local_ray_crawl_finds_every_page_once_and_leaves_no_ray_behind(tmp_path):
    site = docs_site(sections=3, pages_per_section=4, children_per_page=4, latency_s=0.005)
    result, stderr, requests, origin, began, ended, left = crawl_on_own_ray(site, tmp_path, "--no-head-start")
    assert {page["final_url"][len(origin):] for page in result["pages"]} == set(site.depth_of)
    assert max(requests.values()) == 1 and result["config"]["mode"] == "ray"
    assert result["stats"]["fetched_in_driver"] == 0  # every page through the actors, in the workers Ray started
    assert "FutureWarning" not in stderr  # Ray's warning about GPU variables is no crawl's business
    assert left == []  # the Ray it started went with it
    marks = result["timing"]
    ready = (f"the first fetcher actor {marks['fetchers_ready'] - marks['ray_connected']:.2f} s after it"
             if "fetchers_ready" in marks else "no fetcher actor answered before the crawl ended")
    print(f"\nFIGURE local --ray: first request {marks['first_request'] - began:.2f} s after launch "
          f"(ray.init {marks['ray_connected'] - marks['ray_imported']:.2f} s, {ready}; "
          f"{result['stats']['fetched_in_driver']} URLs fetched by the driver meanwhile), process ended "
          f"{ended - marks['crawl_done']:.2f} s after the last page, {len(result['pages'])} pages")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process sessions read with ps")
def test_a_crawl_done_before_its_own_ray_is_up_ends_without_waiting_and_leaves_no_ray_behind(tmp_path):
    """With the head start, Ray starts in a thread beside the crawl. Three pages are fetched by the
    driver long before that Ray is up: the process ends at once, and Ray's processes (started from a
    thread that kept them) go with it, not a moment left."""
    site = docs_site(sections=1, pages_per_section=1, children_per_page=0, latency_s=0.005)
    result, stderr, requests, origin, began, ended, left = crawl_on_own_ray(site, tmp_path)
    assert {page["final_url"][len(origin):] for page in result["pages"]} == set(site.depth_of)
    assert result["stats"]["fetched_in_driver"] == len(site.depth_of) and "fetchers_ready" not in result["timing"]
    marks = result["timing"]
    assert marks["first_request"] < marks.get("ray_connected", float("inf")), "the crawl waited for Ray's start"
    assert left == []
    print(f"\nFIGURE local --ray, head start: first request {marks['first_request'] - began:.2f} s after launch, "
          f"process ended {ended - marks['crawl_done']:.2f} s after the last page "
          f"({'Ray was up' if 'ray_connected' in marks else 'Ray still starting'} when the crawl ended)")
