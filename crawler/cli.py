"""kindlab-crawl (or python -m crawler) URL [URL ...] --prefix P --depth N --max-pages M --concurrency C --json OUT [--ray | --local]"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

from .crawl import Crawl, CrawlConfig, CrawlError
from .fetch import FetchOptions
from .joblog import result_lines
from .report import Progress, summarize
from .timing import process_started
from .urls import host_of


def _number(kind: type, low: float, strict: bool = False):
    """An argparse type: a `kind` (int or float) of at least `low`, or more than `low` when strict."""

    def parse(text: str):
        value = kind(text)
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'more than' if strict else 'at least'} {low}, got {value}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its "invalid ... value" message
    return parse


_positive_int = _number(int, 1)
_non_negative_int = _number(int, 0)
_positive_float = _number(float, 0, strict=True)
_non_negative_float = _number(float, 0)


def build_parser() -> argparse.ArgumentParser:
    command = os.path.basename(sys.argv[0])
    parser = argparse.ArgumentParser(
        prog="python -m crawler" if command in ("__main__.py", "") else command,
        description="Crawl the pages under a URL prefix, breadth-first, each URL fetched at most once.",
    )
    parser.add_argument("urls", nargs="+", metavar="URL", help="start URLs (depth 0)")
    parser.add_argument("--prefix", help="only URLs starting with this are crawled (default: each start URL's directory)")
    parser.add_argument("--depth", type=_non_negative_int, default=2,
                        help="link hops from a start URL; pages at this depth are fetched, their links not followed (default 2)")
    parser.add_argument("--max-pages", type=_positive_int, default=1000, help="fetch at most this many URLs, the shallowest; a crawl this cuts short says so "
                             "(default 1000)")
    parser.add_argument("--concurrency", type=_positive_int, default=16, help="requests in flight, at most (default 16)")
    parser.add_argument("--per-host", type=_positive_int, default=8, help="requests in flight to one host, at most (default 8)")
    parser.add_argument("--delay", type=_non_negative_float, default=0.0,
                        help="seconds between requests to one host (default 0; robots.txt Crawl-delay raises it)")
    parser.add_argument("--timeout", type=_positive_float, default=10.0, help="seconds per request (default 10)")
    parser.add_argument("--retries", type=_non_negative_int, default=2, help="retries of a transient failure (default 2)")
    parser.add_argument("--no-robots", action="store_true", help="ignore robots.txt (for local test sites)")
    parser.add_argument("--user-agent", default=FetchOptions.user_agent)
    parser.add_argument("--json", metavar="OUT", help="write the result as JSON to this file")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--ray", action="store_true",
                      help="fetch in Ray actors (joins RAY_ADDRESS, or starts a local Ray)")
    mode.add_argument("--local", action="store_true", help="fetch in an event loop in this process (the default)")
    parser.add_argument("--ray-address", help="Ray cluster to join in --ray mode (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--fetchers", type=_positive_int, default=2,
                        help="Ray fetcher actors in --ray mode, each with its share of --concurrency (default 2)")
    parser.add_argument("--no-head-start", action="store_true",
                        help="in --ray mode, every request waits for a fetcher actor (by default the driver fetches "
                             "the first URLs itself, at most --concurrency of them, while Ray starts the "
                             "actors' worker processes)")
    parser.add_argument("--emit-result", action="store_true",
                        help="print the result on stdout in marked lines, for crawler.jobs to read from a Ray job log")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def config_from_args(args: argparse.Namespace) -> CrawlConfig:
    return CrawlConfig(
        starts=tuple(args.urls),
        prefix=args.prefix,
        max_depth=args.depth,
        max_pages=args.max_pages,
        concurrency=args.concurrency,
        per_host=args.per_host,
        delay_s=args.delay,
        respect_robots=not args.no_robots,
        fetch=FetchOptions(timeout_s=args.timeout, retries=args.retries, user_agent=args.user_agent),
    )


def report(args: argparse.Namespace, result: dict, executor, marks: dict) -> None:
    """The result completed with the crawl's mode, start-up and moments: to --json, the summary to stderr,
    and with --emit-result the marked lines a job's client reads, printed last."""
    marks.update(executor.marks)
    result["config"]["mode"] = "ray" if args.ray else "local"
    result["stats"]["startup_s"] = round(executor.startup_s or 0.0, 3)
    if args.ray:
        result["stats"]["fetched_in_driver"] = executor.fetched_in_driver
    result["timing"] = {name: round(moment, 3) for name, moment in marks.items()}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result, out, indent=1)
    print(summarize(result), file=sys.stderr, flush=True)
    if args.emit_result:  # last: a job's client has the whole crawl once these lines are in the log
        for line in result_lines(result):
            print(line, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    marks = {"process": process_started() or time.time()}  # crawler.timing's moments, epoch seconds
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    progress = None if args.quiet else Progress()
    try:
        crawl = Crawl(config, on_progress=progress)
    except CrawlError as exc:
        print(f"crawler: {exc}", file=sys.stderr)
        return 2
    hosts = {host_of(url) for url in config.prefixes()}
    if len(hosts) == 1 and config.per_host < config.concurrency:
        print(f"crawler: one host, so --per-host {config.per_host} caps --concurrency {config.concurrency}",
              file=sys.stderr)

    if args.ray:
        from .executors import RayExecutor

        executor = RayExecutor(fetchers=args.fetchers, address=args.ray_address,
                               head_start=False if args.no_head_start else None, head_start_urls=args.concurrency)
    else:
        from .executors import AsyncExecutor

        executor = AsyncExecutor()
    try:
        result = crawl.run(executor)
        marks["crawl_done"] = time.time()
        if progress is not None:
            progress.finish()
            progress = None
        # The result goes out before the fetchers are closed: a job's client has it (and ends) while the
        # driver still stops its actors (0.3 s measured with actors still starting), so "closed" is not in it.
        report(args, result, executor, marks)
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback; the fetchers (and a Ray of our own) go
        if progress is not None:
            progress.finish()
            progress = None
        print("crawler: interrupted", file=sys.stderr)
        return 130
    finally:
        executor.close()
        if progress is not None:
            progress.finish()
    return 0
