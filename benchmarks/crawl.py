"""The writeup's crawler architecture against kindlab's crawler, and both against the site's limit, in one run.

A synthetic docs site (>= 1,500 pages within depth 3, 20 ms a request) is
served from a child process on 127.0.0.1. Every crawler starts from the
writeup's six start URLs (the home page twice, then four section indexes) and
fetches every page up to depth 3:

- the writeup's architecture: 6 Ray tasks, each a sequential depth-first crawl
  with no visited set, its link bugs fixed (return after the loop, urljoin);
- kindlab --ray: the streaming frontier over a pool of Ray fetcher actors;
- kindlab --local: the same frontier over an event loop in this process.

The limit is what the site allows at this many requests in flight: every
request once, `in flight` at a time, plus one latency per level that cannot
overlap (a page's links are known only once it has answered):
    requests / in_flight x latency + (depth + 1) x latency.
Printed for each crawler: requests, distinct URLs, most requests of one URL,
pages found, wall time, CPU seconds per 1,000 pages (this process and its Ray
processes; the site's server excluded), and the ratios. Then the command line
once with --ray in a fresh process (time from ray.init to the first request,
and the whole process), and once cut by --max-pages, to show it says so.

    python benchmarks/crawl.py [--sections 10 --pages 12 --children 12 --latency 0.02 --depth 3
                                --concurrency 64 --per-host 64 --fetchers 2 --runs 3]

Timings on a shared machine are noisy: each kindlab mode runs --runs times
and the table shows the median, with every run listed below it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urldefrag, urljoin

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Ray binds its services to the machine's address unless told this is a
# single-machine Ray; this keeps all of the benchmark's traffic on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a warning about GPUs, which are not used

from crawler import CrawlConfig, crawl  # noqa: E402
from crawler.executors import AsyncExecutor, RayExecutor  # noqa: E402
from crawler.fetch import FetchOptions  # noqa: E402
from crawler.parse import raw_hrefs  # noqa: E402
from tests.sitegen import SiteProcess, docs_site  # noqa: E402

WRITEUP_SECTIONS = 4  # the writeup crawled rllib/, tune/, serve/ and data/ besides the home page


# -- the writeup's crawler, bugs in link handling fixed, architecture kept ----


def writeup_extract_links(hrefs: list[str], page_url: str, base_url: str, max_results: int = 100) -> set[str]:
    links = []
    for href in hrefs:
        url = urldefrag(urljoin(page_url, href.strip()))[0]  # was: base_url + url
        if url.startswith(("http://", "https://")) and base_url in url:
            links.append(url)
    return set(links[:max_results])  # was: inside the loop, so one link per page


def writeup_find_links(start_url: str, base_url: str, depth: int = 2) -> set[str]:
    """Depth-first crawl (sequential), as in the writeup: no visited set at all."""
    if depth == 0:
        return set()
    try:
        with urllib.request.urlopen(start_url, timeout=10) as page:
            content = page.read().decode("utf-8", "replace")
    except OSError:
        return set()
    links = writeup_extract_links(raw_hrefs(content), start_url, base_url)
    for url in links.copy():
        links |= writeup_find_links(url, base_url, depth - 1)
    return links


def run_writeup(ray, starts: list[str], base: str, depth: int) -> dict:
    task = ray.remote(writeup_find_links)
    began = time.monotonic()
    # The writeup's find_links(depth=d) fetches pages d - 1 hops deep: d = depth + 1
    # fetches the same pages as kindlab's --depth depth.
    results = ray.get([task.remote(url, base, depth + 1) for url in starts])
    wall_s = time.monotonic() - began
    found = set(starts).union(*results)
    return {"wall_s": wall_s, "found": found}


# -- kindlab's crawler ------------------------------------------------------------


def run_kindlab(starts: list[str], prefix: str, args, executor) -> dict:
    config = CrawlConfig(
        starts=tuple(starts),
        prefix=prefix,
        max_depth=args.depth,
        max_pages=100_000,
        concurrency=args.concurrency,
        per_host=args.per_host,
        respect_robots=False,
        fetch=FetchOptions(timeout_s=10),
    )
    result = crawl(config, executor)
    return {"wall_s": result["stats"]["wall_s"], "found": {page["final_url"] for page in result["pages"]}}


# -- measuring ----------------------------------------------------------------------


def cpu_seconds(exclude: int) -> dict[int, float]:
    """CPU time of this process and of each of its descendants (Ray's processes), by pid,
    leaving out `exclude`'s tree. Linux only (read from /proc); empty elsewhere."""
    if not os.path.isdir("/proc/self"):
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    parents, times = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime

    def counted(pid: int) -> bool:
        while pid > 1:
            if pid == exclude:
                return False
            if pid == os.getpid():
                return True
            pid = parents.get(pid, 1)
        return False

    return {pid: seconds for pid, seconds in times.items() if counted(pid)}


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two cpu_seconds() readings by the processes alive at the second
    (one that ended meanwhile takes its time with it; one that started counts from zero)."""
    if not after:
        return float("nan")
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def measure(server, run, server_pid: int) -> dict:
    server.reset()
    cpu_before = cpu_seconds(exclude=server_pid)
    figures = run()
    figures["cpu_s"] = cpu_spent(cpu_before, cpu_seconds(exclude=server_pid))
    requests = server.requests
    figures["requests"] = sum(requests.values())
    figures["distinct"] = len(requests)
    figures["max_per_url"] = max(requests.values(), default=0)
    return figures


def median_run(runs: list[dict]) -> dict:
    ordered = sorted(runs, key=lambda run: run["wall_s"])
    return dict(ordered[len(ordered) // 2], walls=[run["wall_s"] for run in runs])


def run_cli(argv: list[str]) -> tuple[subprocess.CompletedProcess, dict, float]:
    """python -m crawler in a fresh process: (the process, its JSON result, its whole wall time)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "crawl.json"
        began = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "crawler", *argv, "--json", str(out), "--quiet"],
                              cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "RAY_ADDRESS": ""})
        whole_s = time.monotonic() - began
        result = json.loads(out.read_text()) if out.exists() else {}
    return proc, result, whole_s


# -- the run ------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=10)
    parser.add_argument("--pages", type=int, default=12, help="pages per section")
    parser.add_argument("--children", type=int, default=12, help="child pages per page")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the server takes per request")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64, help="kindlab's requests in flight")
    parser.add_argument("--per-host", type=int, default=0, help="kindlab's requests in flight to the site "
                                                               "(default: --concurrency)")
    parser.add_argument("--fetchers", type=int, default=2, help="Ray fetcher actors")
    parser.add_argument("--runs", type=int, default=3, help="runs of each kindlab mode")
    args = parser.parse_args()
    args.per_host = args.per_host or args.concurrency

    import ray

    site = docs_site(args.sections, args.pages, args.children, args.latency)
    with SiteProcess(site) as server:
        server_pid = server.pid
        prefix = server.url("/docs/")
        home = server.url("/docs/index.html")
        starts = [home, home] + [server.url(f"/docs/s{n}/index.html") for n in range(WRITEUP_SECTIONS)]
        expected = {server.url(path) for path, level in site.depth_of.items() if level <= args.depth}
        print(f"site: {len(site.depth_of)} pages, {len(expected)} within depth {args.depth} of the home page, "
              f"{args.latency * 1000:.0f} ms a request, served at {server.origin}; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

        ray.init(
            num_cpus=max(8, os.cpu_count() or 1),  # the writeup's 6 tasks at once
            include_dashboard=False,
            logging_level="WARNING",
            runtime_env={"py_modules": [str(ROOT / "crawler")], "excludes": ["__pycache__"]},
        )
        ray.get([ray.remote(lambda: None).remote() for _ in range(8)])  # start the workers before timing

        writeup = measure(server, lambda: run_writeup(ray, starts, prefix, args.depth), server_pid)
        pool = RayExecutor(fetchers=args.fetchers)
        ray_runs = [measure(server, lambda: run_kindlab(starts, prefix, args, pool), server_pid)
                    for _ in range(args.runs)]
        pool.close()
        ray.shutdown()

        local_runs = []
        for _ in range(args.runs):
            executor = AsyncExecutor()
            local_runs.append(measure(server, lambda: run_kindlab(starts, prefix, args, executor), server_pid))
            executor.close()

        cli_argv = [*starts, "--prefix", prefix, "--depth", str(args.depth), "--concurrency", str(args.concurrency),
                    "--per-host", str(args.per_host), "--no-robots"]
        cli_ray, cli_ray_result, cli_ray_whole_s = run_cli([*cli_argv, "--max-pages", "100000", "--ray",
                                                            "--fetchers", str(args.fetchers)])
        cut, cut_result, _ = run_cli([*cli_argv, "--max-pages", "1000", "--local"])

    rows = [("writeup: 6 Ray tasks, sequential DFS", dict(writeup, walls=[writeup["wall_s"]])),
            (f"kindlab --ray ({args.fetchers} fetcher actors)", median_run(ray_runs)),
            ("kindlab --local (event loop)", median_run(local_runs))]
    requests = len(expected)
    limit_s = requests / args.concurrency * args.latency + (args.depth + 1) * args.latency
    print(f"\nlimit: {requests} requests / {args.concurrency} in flight x {args.latency * 1000:.0f} ms + "
          f"{args.depth + 1} levels x {args.latency * 1000:.0f} ms = {limit_s:.2f} s")
    print(f"\n{'crawler':40} {'requests':>9} {'distinct':>9} {'max/URL':>8} {'pages':>6} {'wall s':>7} "
          f"{'/writeup':>9} {'/limit':>7} {'CPU s/1000 pages':>17}")
    for name, row in rows:
        print(f"{name:40} {row['requests']:>9} {row['distinct']:>9} {row['max_per_url']:>8} {len(row['found']):>6} "
              f"{row['wall_s']:>7.2f} {row['wall_s'] / writeup['wall_s']:>9.3f} {row['wall_s'] / limit_s:>7.2f} "
              f"{row['cpu_s'] / len(row['found']) * 1000:>17.2f}")
    for name, row in rows[1:]:
        print(f"  {name}: every run's wall s: {', '.join(f'{wall:.2f}' for wall in row['walls'])}")

    stats = cli_ray_result.get("stats", {})
    print(f"\npython -m crawler --ray in a fresh process: ray.init to the first request "
          f"{stats.get('startup_s', float('nan')):.1f} s, crawl {stats.get('wall_s', float('nan')):.2f} s, "
          f"whole process {cli_ray_whole_s:.1f} s")
    cut_stats = cut_result.get("stats", {})
    summary_says = next((line for line in cut.stderr.splitlines() if line.startswith("Truncated:")), "")
    print(f"python -m crawler --max-pages 1000: JSON truncated={cut_stats.get('truncated')}, "
          f"unfetched={cut_stats.get('unfetched')}; summary: {summary_says or '(says nothing)'}")

    ok = cli_ray.returncode == 0 and cut.returncode == 0
    if not ok:
        print(f"a command-line run failed:\n{cli_ray.stderr[-2000:]}\n{cut.stderr[-2000:]}")
    checks = {}
    for name, row in rows[1:]:
        checks[f"{name}: every reachable page found"] = not (expected - row["found"])
        checks[f"{name}: no URL requested twice"] = row["max_per_url"] == 1
    ray_row = rows[1][1]
    checks["--ray within 0.05 x the writeup's wall time"] = ray_row["wall_s"] <= 0.05 * writeup["wall_s"]
    checks["--ray within 2 x the limit"] = ray_row["wall_s"] <= 2 * limit_s
    checks["--max-pages cut: JSON and summary say so"] = bool(cut_stats.get("truncated") and summary_says)
    for check, passed in checks.items():
        print(f"{check}: {'yes' if passed else 'NO'}")
        ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
