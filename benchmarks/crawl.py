"""The writeup's crawler architecture against kindlab's crawler, side by side, in one run.

A synthetic docs site (>= 1,500 pages within depth 3, 20 ms a request) is
served from a child process on 127.0.0.1. Both crawlers start from the
writeup's six start URLs (the home page twice, then four section indexes) and
fetch every page up to depth 3:

- the writeup's architecture: 6 Ray tasks, each a sequential depth-first crawl
  with no visited set, its link bugs fixed (return after the loop, urljoin);
- kindlab's crawler: breadth-first, one visited set, fetches in Ray tasks
  (and, for reference, in threads without Ray).

The site's server counts every request. Printed for each: requests made,
distinct URLs requested, unique pages found, wall time; then the speedup.
Ray gets enough CPUs here for the writeup's 6 tasks to run at once.

    python benchmarks/crawl.py [--sections 10 --pages 12 --children 12 --latency 0.02 --depth 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urldefrag

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Ray binds its services to the machine's address unless told this is a
# single-machine Ray; this keeps all of the benchmark's traffic on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # silences a warning about GPUs, which are not used

from crawler import CrawlConfig, crawl  # noqa: E402
from crawler.executors import RayExecutor, ThreadExecutor  # noqa: E402
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
    return {"wall_s": wall_s, "found": found, "per_task": [len(links) for links in results]}


# -- kindlab's crawler ------------------------------------------------------------


def run_kindlab(starts: list[str], prefix: str, depth: int, concurrency: int, executor) -> dict:
    config = CrawlConfig(
        starts=tuple(starts),
        prefix=prefix,
        max_depth=depth,
        max_pages=100_000,
        concurrency=concurrency,
        per_host=concurrency,
        fetch=FetchOptions(timeout_s=10),
    )
    result = crawl(config, executor)
    return {"wall_s": result["stats"]["wall_s"], "found": {page["final_url"] for page in result["pages"]}}


# -- measuring ----------------------------------------------------------------------


def measure(server, run) -> dict:
    server.reset()
    figures = run()
    requests = server.requests
    figures["requests"] = sum(requests.values())
    figures["distinct"] = len(requests)
    figures["max_per_url"] = max(requests.values(), default=0)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", type=int, default=10)
    parser.add_argument("--pages", type=int, default=12, help="pages per section")
    parser.add_argument("--children", type=int, default=12, help="child pages per page")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the server takes per request")
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32, help="kindlab's requests in flight")
    parser.add_argument("--batch-size", type=int, default=16, help="URLs per Ray task, kindlab")
    args = parser.parse_args()

    import ray

    site = docs_site(args.sections, args.pages, args.children, args.latency)
    with SiteProcess(site) as server:
        prefix = server.url("/docs/")
        home = server.url("/docs/index.html")
        starts = [home, home] + [server.url(f"/docs/s{n}/index.html") for n in range(WRITEUP_SECTIONS)]
        expected = {server.url(path) for path, level in site.depth_of.items() if level <= args.depth}
        print(f"site: {len(site.depth_of)} pages, {len(expected)} within depth {args.depth} of the home page, "
              f"{args.latency * 1000:.0f} ms a request, served at {server.origin}")

        ray.init(
            num_cpus=max(8, os.cpu_count() or 1),
            include_dashboard=False,
            logging_level="WARNING",
            runtime_env={"py_modules": [str(ROOT / "crawler")], "excludes": ["__pycache__"]},
        )
        ray.get([ray.remote(lambda: None).remote() for _ in range(8)])  # start the workers before timing

        rows = [
            ("writeup: 6 Ray tasks, sequential DFS", measure(server, lambda: run_writeup(ray, starts, prefix, args.depth))),
            ("kindlab --ray", measure(server, lambda: run_kindlab(
                starts, prefix, args.depth, args.concurrency, RayExecutor(batch_size=args.batch_size)))),
        ]
        local = ThreadExecutor(args.concurrency)
        rows.append(("kindlab --local (threads)", measure(server, lambda: run_kindlab(
            starts, prefix, args.depth, args.concurrency, local))))
        local.close()
        ray.shutdown()

    print(f"\n{'crawler':40} {'requests':>9} {'distinct':>9} {'max/URL':>8} {'pages':>7} {'wall s':>8}")
    for name, row in rows:
        print(f"{name:40} {row['requests']:>9} {row['distinct']:>9} {row['max_per_url']:>8} "
              f"{len(row['found']):>7} {row['wall_s']:>8.2f}")
    writeup, kindlab_ray, kindlab_local = (row for _, row in rows)
    print(f"\nwriteup tasks found {writeup['per_task']} links each")
    print(f"speedup, kindlab --ray over the writeup: {writeup['wall_s'] / kindlab_ray['wall_s']:.1f}x "
          f"(--local: {writeup['wall_s'] / kindlab_local['wall_s']:.1f}x); "
          f"requests {writeup['requests']} -> {kindlab_ray['requests']}")

    ok = True
    for name, row in rows[1:]:
        missing = expected - row["found"]
        checks = {
            "every reachable page found": not missing,
            "no URL requested twice": row["max_per_url"] == 1,
        }
        for check, passed in checks.items():
            print(f"{name}: {check}: {'yes' if passed else 'NO'}")
            ok &= passed
        if missing:
            print(f"  missing, e.g. {sorted(missing)[:5]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
