"""Ray's fixed costs for a crawl: a crawl job's round trip on the lab, and Ray's start on this machine.

On the lab (`--lab`: a RayCluster installed by `invoke ray.install`; offline, the
python-docs site the ray part serves beside it):
  - `invoke ray.crawl --verbose` of one page (the docs site's index, --depth 0),
    --runs times: the whole command's wall time, as `time` measures it, and the
    job's phases as it prints them (crawler/timing.py);
  - `invoke ray.crawl --verbose` of the docs site as `invoke all` crawls it
    offline (depth 2): pages, requests, pages per second;
  - the same crawl on this host with --local, and with --ray (a Ray of its
    own), against the same site: kindlab's python-docs image run by Docker on
    a port of 127.0.0.1.
On this machine (always):
  - `python -m crawler --ray` at 64 in flight, in a fresh process each time, on
    a one-page site and on a synthetic docs site (20 ms a request): seconds from
    the launch to the first request (and, on the synthetic site, to the first
    fetcher actor's answer: the crawler's own Ray starts beside the crawl), from
    the last page to the process's end, and the driver's phases.

    python benchmarks/ray_costs.py [--runs 3] [--lab] [--config FILE]

--config is an Invoke config file naming the lab (as `invoke -f FILE`);
without it, the last `invoke cluster.create` decides. The load average is
printed beside the figures: on a shared two-core machine they move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crawler.timing import driver_phases  # noqa: E402
from playbooks import images, ray as ray_play  # noqa: E402
from tests.sitegen import SiteProcess, docs_site  # noqa: E402

PHASE = re.compile(r"^  (\S.*?)\s+(\d+\.\d+) s$")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def median(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})"


# --- on the lab ------------------------------------------------------------------------------
def invoke_crawl(config: str, *args: str) -> tuple[float, str]:
    """`invoke ray.crawl --verbose ARGS`: its wall time and output."""
    argv = [sys.executable, "-m", "invoke", *(["-f", config] if config else []), "ray.crawl", "--verbose", *args]
    began = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    took = time.monotonic() - began
    if done.returncode != 0:
        sys.exit(f"`{' '.join(argv[2:])}` failed:\n{done.stdout}{done.stderr}")
    return took, done.stdout


def phases_of(output: str) -> dict[str, float]:
    lines = output.splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("where the crawl job's seconds went"))
    found = {}
    for line in lines[start + 1:]:
        match = PHASE.match(line)
        if not match:
            break
        found[match.group(1)] = float(match.group(2))
    return found


def summary_of(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("Total: "))


def lab(config: str, runs: int) -> None:
    site = ray_play.OFFLINE_CRAWL
    print(f"== on the lab: invoke ray.crawl, {runs} runs ({load()})")
    walls, phases = [], []
    for _ in range(runs):
        took, out = invoke_crawl(config, "--url", site.urls[0], "--depth", "0")
        walls.append(took)
        phases.append(phases_of(out))
    print(f"one page ({site.urls[0]}, --depth 0): whole command {median(walls)}")
    for name in phases[0]:
        print(f"    {name:<22} {median([p.get(name, 0.0) for p in phases])}")
    took, out = invoke_crawl(config)
    print(f"the docs site as `invoke all` crawls it offline (depth {site.depth}, {site.concurrency} in flight): "
          f"whole command {took:.2f} s ({load()})")
    print(f"    {summary_of(out)}")
    for name, seconds in phases_of(out).items():
        print(f"    {name:<22} {seconds:.2f} s")


def on_host(runs: int) -> None:
    """The docs site's crawl on this host against the same image, --local and --ray."""
    site = ray_play.OFFLINE_CRAWL
    ref = images.reference(ray_play.SITE)
    port = free_port()
    container = subprocess.run(["docker", "run", "--detach", "--rm", "--publish", f"127.0.0.1:{port}:80", ref],
                               capture_output=True, text=True)
    if container.returncode != 0:
        print(f"(no host crawl of the docs site: `docker run {ref}` failed: {container.stderr.strip()}; "
              f"run `invoke images.build --only {ray_play.SITE}`)")
        return
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(url)
        args = [url, "--depth", str(site.depth), "--max-pages", str(site.max_pages), "--concurrency",
                str(site.concurrency), "--per-host", str(site.concurrency), "--quiet"]
        for mode in ("--local", "--ray"):
            rates, lines, walls = [], [], []
            for _ in range(runs):
                result, launched, ended = run_crawler([*args, mode])
                stats = result["stats"]
                rates.append(stats["pages_per_s"])
                walls.append(ended - launched)
                lines.append(f"{stats['unique']} pages, {stats['failed']} broken, {stats['requests']} requests, "
                             f"{stats['wall_s']:.2f} s")
            # --ray starts its own Ray beside the crawl: the crawl's seconds (and pages/s) include that start
            print(f"the same crawl on this host, {mode} ({ref} on 127.0.0.1:{port}): pages/s "
                  f"median {statistics.median(rates):.1f} ({', '.join(f'{r:.1f}' for r in rates)}); {lines[0]}; "
                  f"whole process {median(walls)}")
    finally:
        subprocess.run(["docker", "rm", "--force", container.stdout.strip()], capture_output=True)


# --- on this machine ----------------------------------------------------------------------------
class OnePage:
    """A one-page site on 127.0.0.1 that notes when its first request came."""

    def __init__(self) -> None:
        self.first: float | None = None
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if site.first is None:
                    site.first = time.time()
                body = b"<!doctype html><html><head><title>one page</title></head><body>nothing</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


def run_crawler(args: list[str]) -> tuple[dict, float, float]:
    """`python -m crawler ARGS --json` in a fresh process: its result, launch and end (epoch seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "crawl.json"
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        launched = time.time()
        done = subprocess.run([sys.executable, "-m", "crawler", *args, "--json", str(out)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600)
        ended = time.time()
        if done.returncode != 0:
            sys.exit(f"python -m crawler {' '.join(args)} failed:\n{done.stderr}")
        return json.loads(out.read_text()), launched, ended


def local_ray(runs: int) -> None:
    print(f"== on this machine: python -m crawler --ray at 64 in flight, a fresh process each run ({load()})")
    page = OnePage()
    try:
        before, after, phases = [], [], []
        for _ in range(runs):
            page.first = None
            result, launched, ended = run_crawler([page.url, "--ray", "--concurrency", "64", "--per-host", "64",
                                                   "--no-robots", "--quiet"])
            before.append(page.first - launched)
            after.append(ended - result["timing"]["crawl_done"])
            phases.append(dict(driver_phases(result["timing"])))
        print(f"one page: launch to its request {median(before)}; last page to the process's end {median(after)}")
        for name in phases[0]:
            print(f"    {name:<22} {median([p[name] for p in phases])}")
    finally:
        page.close()
    site = docs_site(sections=10, pages_per_section=12, children_per_page=12, latency_s=0.02)
    with SiteProcess(site) as server:
        home = server.url("/docs/index.html")
        walls, crawls, firsts, afters, actors, in_driver = [], [], [], [], [], []
        for _ in range(runs):
            result, launched, ended = run_crawler([home, "--prefix", server.url("/docs/"), "--depth", "3",
                                                   "--max-pages", "100000", "--ray", "--concurrency", "64",
                                                   "--per-host", "64", "--no-robots", "--quiet"])
            marks = result["timing"]
            walls.append(ended - launched)
            crawls.append(result["stats"]["wall_s"])
            firsts.append(marks["first_request"] - launched)
            afters.append(ended - marks["crawl_done"])
            actors.append(marks.get("fetchers_ready", ended) - launched)
            in_driver.append(result["stats"]["fetched_in_driver"])
        print(f"synthetic site ({len(result['pages'])} pages, 20 ms a request): whole process {median(walls)}; "
              f"the crawl {median(crawls)}")
        print(f"    launch to the first request {median(firsts)}; to the first fetcher actor's answer "
              f"{median(actors)}; last page to the process's end {median(afters)}; fetched by the driver "
              f"{sorted(in_driver)}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float = 30) -> None:
    import urllib.request
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lab", action="store_true", help="also measure the crawl job on the lab")
    parser.add_argument("--config", default="", help="Invoke config file naming the lab (invoke -f FILE)")
    args = parser.parse_args()
    if args.lab:
        lab(args.config, args.runs)
        on_host(args.runs)
    local_ray(args.runs)


if __name__ == "__main__":
    main()
