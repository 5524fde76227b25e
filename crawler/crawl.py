"""The crawl driver: the frontier, the URLs already known and politeness live here, in one process.

The frontier streams: a page's links enter it as soon as the page is parsed,
and the shallowest URL waiting is dispatched first, so no depth waits for the
slowest page of the one before. Depth stays exact all the same: a URL first
found deep and later found shallower takes the shallower depth, and whatever
was found through it moves up with it (its links are followed when the new
depth allows). Fetching and parsing run elsewhere (an event loop, threads or
Ray actors, see executors.py); only the driver decides what is requested, so
no URL is requested twice however many fetchers there are.

--max-pages keeps the shallowest pages, as a crawl level by level would. Two
rules hold back a URL at depth d, and only they do: while a page at depth
d - 2 or less is still waiting or in flight (its links could be shallower than
d), and while the requests left are no more than the URLs shallower than d
still waiting or in flight (each may redirect and need one more).
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
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
    """Where fetches run. start() returns at once; finished() hands back results as they come."""

    def start(self, urls: Sequence[str], options: FetchOptions) -> None: ...

    def finished(self, timeout: Optional[float]) -> list[FetchResult]:
        """Results of started URLs, at least one unless `timeout` seconds pass first."""
        ...


class CrawlError(ValueError):
    """A crawl that cannot start, with the reason in words."""


WAITING, IN_FLIGHT, DONE = "waiting", "in flight", "done"


@dataclass(eq=False)
class _Node:
    """One URL the crawl knows, from discovery to its outcome."""

    url: str
    depth: int  # the fewest link hops from a start URL found so far
    start: str
    found_on: Optional[str]
    origin: str  # the URL that began this redirect chain
    hops: int = 0  # redirects that led here
    state: str = WAITING
    outcome: str = ""  # page | broken | redirect | non_html, once done
    status: Optional[int] = None
    error: Optional[str] = None
    links: list[str] = field(default_factory=list)  # a page's links; a redirect's target


@dataclass
class _HostQueue:
    waiting: list = field(default_factory=list)  # heap of (depth, order, node); stale entries skipped
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
        self._nodes: dict[str, _Node] = {}
        self._ignored: set[str] = set()  # out of scope, binary or blocked by robots.txt: checked once
        self._hosts: dict[str, _HostQueue] = {}
        self._active: Counter = Counter()  # depth -> URLs waiting or in flight at that depth
        self._in_flight = 0
        self._dispatched = 0
        self._deepest = 0
        self._order = 0
        self._outcomes: Counter = Counter()  # for progress: page, broken, ... so far
        self.counts = {"fetched": 0, "requests": 0, "redirects": 0, "non_html": 0, "blocked_by_robots": 0}

    # -- the crawl ----------------------------------------------------------

    def run(self, executor: Executor) -> dict:
        self._executor = executor
        began = time.monotonic()
        for url in self._starts:
            self._offer(url, 0, start=url, found_on=None)
        while self._in_flight or (self._waiting() and self._budget_left() > 0):
            self._dispatch()
            if not self._in_flight:  # only per-host delays hold the waiting URLs back
                time.sleep(max(0.0, self._next_dispatch_at() - time.monotonic()))
                continue
            timeout = None
            if self._delayed_queues():
                timeout = max(0.0, self._next_dispatch_at() - time.monotonic())
            for result in executor.finished(timeout):
                self._complete(result)
            self._report_progress()
        return self._result(time.monotonic() - began)

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

    # -- the frontier: what is known, at which depth ----------------------------

    def _offer(self, url: str, depth: int, start: str, found_on: Optional[str],
               redirected_from: Optional[_Node] = None) -> None:
        """A URL found at `depth`: new ones join the frontier, known ones may move up."""
        node = self._nodes.get(url)
        if node is not None:
            if depth < node.depth:
                self._move_up(node, depth, start, found_on)
            return
        if depth > self.config.max_depth or url in self._ignored:
            return
        if not in_scope(url, self._prefixes) or looks_binary(url) or not self._admissible(url):
            self._ignored.add(url)
            return
        node = _Node(url, depth, start, found_on, origin=url)
        if redirected_from is not None:
            node.origin, node.hops = redirected_from.origin, redirected_from.hops + 1
        self._nodes[url] = node
        self._active[depth] += 1
        self._push(node)

    def _move_up(self, node: _Node, depth: int, start: str, found_on: Optional[str]) -> None:
        """A shorter path to a known URL: it takes the shallower depth, and so does all found through it."""
        if node.state != DONE:
            self._active[node.depth] -= 1
            self._active[depth] += 1
        node.depth, node.start, node.found_on = depth, start, found_on
        if node.state == WAITING:
            self._push(node)  # the entry at the old depth goes stale
        elif node.state == DONE:
            self._follow(node)
        # in flight: its outcome is read at the new depth when it comes

    def _follow(self, node: _Node) -> None:
        """Offer what a fetched URL leads to: a page's links, one hop on; a redirect's target, at its depth."""
        if node.outcome == "redirect":
            self._offer(node.links[0], node.depth, node.start, node.found_on, redirected_from=node)
        elif node.outcome == "page" and node.depth < self.config.max_depth:
            for link in node.links:
                self._offer(link, node.depth + 1, node.start, node.url)

    def _push(self, node: _Node) -> None:
        queue = self._host_queue(host_of(node.url))
        self._order += 1
        heapq.heappush(queue.waiting, (node.depth, self._order, node))

    def _host_queue(self, host: str) -> _HostQueue:
        queue = self._hosts.get(host)
        if queue is None:
            delay = self.config.delay_s
            if self._robots is not None:
                delay = max(delay, self._robots.crawl_delay(host))
            queue = self._hosts[host] = _HostQueue(delay_s=delay)
        return queue

    def _admissible(self, url: str) -> bool:
        if self._robots is not None and not self._robots.allowed(host_of(url), url):
            self.counts["blocked_by_robots"] += 1
            return False
        return True

    @staticmethod
    def _next_waiting(queue: _HostQueue) -> Optional[_Node]:
        """The shallowest URL waiting on this host; drops entries left behind by a move up."""
        while queue.waiting:
            depth, _, node = queue.waiting[0]
            if node.state == WAITING and node.depth == depth:
                return node
            heapq.heappop(queue.waiting)
        return None

    # -- dispatch under the limits ------------------------------------------------

    def _dispatch(self) -> None:
        """Start every URL the limits allow now, shallowest first, in one call to the executor."""
        now = time.monotonic()
        urls: list[str] = []
        queues = [(node.depth, host) for host, queue in self._hosts.items()
                  if (node := self._next_waiting(queue)) is not None]
        for _, host in sorted(queues):
            queue = self._hosts[host]
            while self._in_flight < self.config.concurrency:
                node = self._next_waiting(queue)
                if node is None or not self._may_start(node.depth):
                    break
                if queue.delay_s > 0:  # one request at a time, spaced by the delay
                    if queue.in_flight or now < queue.next_start:
                        break
                    queue.next_start = now + queue.delay_s
                elif queue.in_flight >= self.config.per_host:
                    break
                heapq.heappop(queue.waiting)
                node.state = IN_FLIGHT
                queue.in_flight += 1
                self._in_flight += 1
                self._dispatched += 1
                self._deepest = max(self._deepest, node.depth)
                urls.append(node.url)
        if urls:
            self._executor.start(urls, self.config.fetch)

    def _may_start(self, depth: int) -> bool:
        """Whether a URL at `depth` may be requested now without breaking --max-pages's promise."""
        shallower = 0
        for level, count in self._active.items():
            if count and level <= depth - 2:
                return False  # a page that may still link to a shallower URL
            if level < depth:
                shallower += count
        return self._budget_left() > shallower

    def _budget_left(self) -> int:
        return self.config.max_pages - self._dispatched

    def _waiting(self) -> int:
        return sum(self._active.values()) - self._in_flight

    def _delayed_queues(self) -> list[_HostQueue]:
        return [q for q in self._hosts.values() if q.delay_s > 0 and self._next_waiting(q) is not None]

    def _next_dispatch_at(self) -> float:
        return min((q.next_start for q in self._delayed_queues()), default=time.monotonic())

    # -- outcomes -------------------------------------------------------------------

    def _complete(self, result: FetchResult) -> None:
        node = self._nodes[result.url]
        self._hosts[host_of(node.url)].in_flight -= 1
        self._in_flight -= 1
        self._active[node.depth] -= 1
        node.state, node.status = DONE, result.status
        self.counts["fetched"] += 1
        self.counts["requests"] += result.attempts
        if result.is_redirect:
            self.counts["redirects"] += 1
            if node.hops >= self.config.max_redirects:
                node.error = f"more than {self.config.max_redirects} redirects"
                self._settle(node, "broken")
                return
            node.links = [result.location]
            self._settle(node, "redirect")
        elif result.error is not None or (result.status or 0) >= 400:
            node.error = result.error or f"HTTP {result.status}"
            self._settle(node, "broken")
            return
        elif result.is_html:
            node.links = result.links
            self._settle(node, "page")
        else:
            self.counts["non_html"] += 1
            self._settle(node, "non_html")
            return
        self._follow(node)

    def _settle(self, node: _Node, outcome: str) -> None:
        node.outcome = outcome
        self._outcomes[outcome] += 1

    # -- reporting -------------------------------------------------------------

    def _report_progress(self) -> None:
        self._on_progress(
            {
                "depth": self._deepest,
                "fetched": self.counts["fetched"],
                "pages": self._outcomes["page"],
                "broken": self._outcomes["broken"],
                "pending": sum(self._active.values()),
            }
        )

    def _result(self, wall_s: float) -> dict:
        nodes = sorted(self._nodes.values(), key=lambda node: (node.depth, node.url))
        pages = [
            {"url": n.origin, "final_url": n.url, "status": n.status, "depth": n.depth, "start": n.start,
             "links": n.links}
            for n in nodes if n.outcome == "page"
        ]
        broken = [
            {"url": n.url, "status": n.status, "error": n.error, "found_on": n.found_on, "depth": n.depth,
             "start": n.start}
            for n in nodes if n.outcome == "broken"
        ]
        unfetched = [
            {"url": n.url, "depth": n.depth, "start": n.start, "found_on": n.found_on}
            for n in nodes if n.state == WAITING
        ]
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
            "pages": pages,
            "broken": broken,
            "unfetched": unfetched,
            "stats": {
                "fetched": self.counts["fetched"],
                "unique": len(pages),
                "failed": len(broken),
                "wall_s": round(wall_s, 3),
                "pages_per_s": round(len(pages) / wall_s, 1) if wall_s > 0 else 0.0,
                "requests": requests,
                "redirects": self.counts["redirects"],
                "non_html": self.counts["non_html"],
                "blocked_by_robots": self.counts["blocked_by_robots"],
                # Stopped by --max-pages with URLs found within --depth still to fetch.
                "truncated": bool(unfetched),
                "unfetched": len(unfetched),
            },
        }


def crawl(config: CrawlConfig, executor: Executor, on_progress: Optional[ProgressHook] = None) -> dict:
    """Run one crawl to the end and return its JSON-ready result."""
    return Crawl(config, on_progress).run(executor)
