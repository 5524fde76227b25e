"""The crawl driver: the frontier, the visited set and politeness live here, in one process.

Breadth-first by depth: every URL at depth d is fetched before any at d + 1,
so each page gets its shortest hop count from a start URL and --max-pages
keeps the shallowest pages. Fetching and parsing run elsewhere (threads or Ray
tasks, see executors.py); only the driver decides what is requested, so no URL
is requested twice however many workers there are.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

from .fetch import FetchOptions, FetchResult, fetch_text
from .robots import RobotsRules
from .urls import default_prefix, host_of, in_scope, looks_binary, normalize


@dataclass(frozen=True)
class CrawlConfig:
    starts: tuple[str, ...]
    prefix: Optional[str] = None  # None: each start URL's directory
    max_depth: int = 2
    max_pages: int = 1000  # URLs fetched, at most
    concurrency: int = 16
    per_host: int = 8  # requests in flight to one host, at most
    delay_s: float = 0.0  # between request starts on one host; robots.txt Crawl-delay raises it
    respect_robots: bool = True
    max_redirects: int = 5
    fetch: FetchOptions = field(default_factory=FetchOptions)

    def prefixes(self) -> tuple[str, ...]:
        if self.prefix:
            return (normalize(self.prefix) or self.prefix,)
        return tuple(dict.fromkeys(default_prefix(url) for url in self.starts))


class Executor(Protocol):
    batch_size: int

    def submit(self, urls: Sequence[str], options: FetchOptions, threads: int) -> Future: ...


class CrawlError(ValueError):
    """A crawl that cannot start, with the reason in words."""


@dataclass
class _Task:
    url: str
    depth: int
    start: str
    found_on: Optional[str]
    origin: str  # the URL that began this redirect chain
    hops: int = 0
    order: int = 0


@dataclass
class _Batch:
    tasks: list[_Task]
    queue: "_HostQueue"


@dataclass
class _HostQueue:
    pending: deque = field(default_factory=deque)
    in_flight: int = 0
    next_start: float = 0.0
    delay_s: float = 0.0


ProgressHook = Callable[[dict], None]


class Crawl:
    """One crawl. Construction checks the configuration; run() does the work."""

    def __init__(
        self,
        config: CrawlConfig,
        on_progress: Optional[ProgressHook] = None,
        robots: Optional[RobotsRules] = None,  # default: robots.txt fetched from each host
    ):
        self.config = config
        self._on_progress = on_progress or (lambda _snapshot: None)
        self._prefixes = config.prefixes()
        self._starts = self._check_starts()
        self._robots: Optional[RobotsRules] = None
        if config.respect_robots:
            self._robots = robots or RobotsRules(lambda url: fetch_text(url, config.fetch), config.fetch.user_agent)
        self._executor: Optional[Executor] = None  # given to run()
        self._visited: set[str] = set()
        self._hosts: dict[str, _HostQueue] = {}
        self._in_flight: dict[Future, _Batch] = {}
        self._slots_in_use = 0
        self._order = 0
        self.pages: list[dict] = []
        self.broken: list[dict] = []
        self.counts = {"fetched": 0, "requests": 0, "redirects": 0, "non_html": 0, "blocked_by_robots": 0}
        self._depth = 0

    # -- the crawl ----------------------------------------------------------

    def run(self, executor: Executor) -> dict:
        self._executor = executor
        began = time.monotonic()
        level = [self._task(url, 0, start=url, found_on=None) for url in self._starts if self._admissible(url)]
        for depth in range(self.config.max_depth + 1):
            if not level:
                break
            self._depth = depth
            pages = self._fetch_level(level)
            if depth < self.config.max_depth:
                level = self._next_level(pages, depth + 1)
        wall_s = time.monotonic() - began
        return self._result(wall_s)

    def _check_starts(self) -> list[str]:
        """The start URLs, normalized, each once (a repeated start is crawled once)."""
        if not self.config.starts:
            raise CrawlError("no start URL given")
        starts: dict[str, None] = {}
        for raw in self.config.starts:
            url = normalize(raw)
            if url is None:
                raise CrawlError(f"start URL {raw!r} is not an http(s) URL")
            if not in_scope(url, self._prefixes):
                raise CrawlError(
                    f"start URL {url} is outside the prefix {', '.join(self._prefixes)}; "
                    "pass a --prefix that contains it"
                )
            starts.setdefault(url)
        return list(starts)

    def _next_level(self, pages: list[tuple[_Task, FetchResult]], depth: int) -> list[_Task]:
        tasks = []
        for parent, result in pages:
            for url in result.links:
                if self._budget_left() <= 0:
                    return tasks
                if url in self._visited or not in_scope(url, self._prefixes) or looks_binary(url):
                    continue
                if self._admissible(url):
                    tasks.append(self._task(url, depth, start=parent.start, found_on=parent.url))
        return tasks

    def _budget_left(self) -> int:
        return self.config.max_pages - len(self._visited)

    def _admissible(self, url: str) -> bool:
        if self._robots is not None and not self._robots.allowed(host_of(url), url):
            self.counts["blocked_by_robots"] += 1
            return False
        return True

    def _task(self, url: str, depth: int, start: str, found_on: Optional[str], origin: str = "", hops: int = 0) -> _Task:
        self._visited.add(url)
        self._order += 1
        return _Task(url, depth, start, found_on, origin or url, hops, self._order)

    # -- one level: dispatch under the politeness limits, collect results ----

    def _fetch_level(self, level: list[_Task]) -> list[tuple[_Task, FetchResult]]:
        for task in level:
            self._queue(task)
        pages: list[tuple[_Task, FetchResult]] = []
        while self._in_flight or any(q.pending for q in self._hosts.values()):
            self._dispatch()
            if not self._in_flight:
                time.sleep(max(0.0, self._next_dispatch_at() - time.monotonic()))
                continue
            timeout = None
            if self._delayed_queues():
                timeout = max(0.0, self._next_dispatch_at() - time.monotonic())
            done, _ = wait(list(self._in_flight), timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                pages.extend(self._collect(future))
            self._report_progress()
        pages.sort(key=lambda pair: pair[0].order)  # discovery order, not completion order
        return pages

    def _queue(self, task: _Task) -> None:
        host = host_of(task.url)
        queue = self._hosts.get(host)
        if queue is None:
            delay = self.config.delay_s
            if self._robots is not None:
                delay = max(delay, self._robots.crawl_delay(host))
            queue = self._hosts[host] = _HostQueue(delay_s=delay)
        queue.pending.append(task)

    def _dispatch(self) -> None:
        """Start batches while the limits allow: each URL of a batch gets its own
        thread, so a batch is one round trip and holds one slot per URL."""
        now = time.monotonic()
        for queue in self._hosts.values():
            while queue.pending:
                if queue.delay_s > 0:  # one request at a time, spaced by the delay
                    if queue.in_flight or now < queue.next_start or self._slots_in_use >= self.config.concurrency:
                        break
                    queue.next_start = now + queue.delay_s
                    free = 1
                else:
                    free = min(self.config.per_host - queue.in_flight, self.config.concurrency - self._slots_in_use)
                    if free <= 0:
                        break
                size = min(len(queue.pending), self._executor.batch_size, free)
                tasks = [queue.pending.popleft() for _ in range(size)]
                future = self._executor.submit([task.url for task in tasks], self.config.fetch, size)
                self._in_flight[future] = _Batch(tasks, queue)
                queue.in_flight += size
                self._slots_in_use += size

    def _delayed_queues(self) -> list[_HostQueue]:
        return [q for q in self._hosts.values() if q.pending and q.delay_s > 0]

    def _next_dispatch_at(self) -> float:
        return min((q.next_start for q in self._delayed_queues()), default=time.monotonic())

    def _collect(self, future: Future) -> list[tuple[_Task, FetchResult]]:
        batch = self._in_flight.pop(future)
        batch.queue.in_flight -= len(batch.tasks)
        self._slots_in_use -= len(batch.tasks)
        try:
            results = future.result()
        except Exception as exc:  # a lost worker: its URLs failed, the crawl goes on
            results = [FetchResult(task.url, error=f"worker failed: {exc}") for task in batch.tasks]
        pages = []
        for task, result in zip(batch.tasks, results):
            self.counts["fetched"] += 1
            self.counts["requests"] += result.attempts
            if result.is_redirect:
                self._follow_redirect(task, result)
            elif result.error is not None or (result.status or 0) >= 400:
                self._record_broken(task, result)
            elif result.is_html:
                self._record_page(task, result)
                pages.append((task, result))
            else:
                self.counts["non_html"] += 1
        return pages

    def _follow_redirect(self, task: _Task, result: FetchResult) -> None:
        self.counts["redirects"] += 1
        target = result.location
        if task.hops >= self.config.max_redirects:
            self._record_broken(task, result, error=f"more than {self.config.max_redirects} redirects")
        elif target in self._visited or not in_scope(target, self._prefixes) or looks_binary(target):
            return  # already crawled, or leaves the crawl: nothing more to fetch
        elif self._budget_left() <= 0:
            return
        elif self._admissible(target):
            follow = self._task(target, task.depth, task.start, task.found_on, origin=task.origin, hops=task.hops + 1)
            self._queue(follow)

    def _record_page(self, task: _Task, result: FetchResult) -> None:
        self.pages.append(
            {
                "url": task.origin,
                "final_url": task.url,
                "status": result.status,
                "depth": task.depth,
                "start": task.start,
                "links": result.links,
            }
        )

    def _record_broken(self, task: _Task, result: FetchResult, error: Optional[str] = None) -> None:
        self.broken.append(
            {
                "url": task.url,
                "status": result.status,
                "error": error or result.error or f"HTTP {result.status}",
                "found_on": task.found_on,
                "depth": task.depth,
                "start": task.start,
            }
        )

    # -- reporting -------------------------------------------------------------

    def _report_progress(self) -> None:
        queued = sum(len(q.pending) for q in self._hosts.values())
        in_flight = sum(len(batch.tasks) for batch in self._in_flight.values())
        self._on_progress(
            {
                "depth": self._depth,
                "fetched": self.counts["fetched"],
                "pages": len(self.pages),
                "broken": len(self.broken),
                "pending": queued + in_flight,
            }
        )

    def _result(self, wall_s: float) -> dict:
        self.pages.sort(key=lambda page: (page["depth"], page["final_url"]))
        self.broken.sort(key=lambda entry: (entry["depth"], entry["url"]))
        requests = self.counts["requests"] + (self._robots.requests if self._robots else 0)
        return {
            "config": {
                "starts": self._starts,
                "prefixes": list(self._prefixes),
                "max_depth": self.config.max_depth,
                "max_pages": self.config.max_pages,
                "concurrency": self.config.concurrency,
                "per_host": self.config.per_host,
            },
            "pages": self.pages,
            "broken": self.broken,
            "stats": {
                "fetched": self.counts["fetched"],
                "unique": len(self.pages),
                "failed": len(self.broken),
                "wall_s": round(wall_s, 3),
                "pages_per_s": round(len(self.pages) / wall_s, 1) if wall_s > 0 else 0.0,
                "requests": requests,
                "redirects": self.counts["redirects"],
                "non_html": self.counts["non_html"],
                "blocked_by_robots": self.counts["blocked_by_robots"],
            },
        }


def crawl(config: CrawlConfig, executor: Executor, on_progress: Optional[ProgressHook] = None) -> dict:
    """Run one crawl to the end and return its JSON-ready result."""
    return Crawl(config, on_progress).run(executor)
