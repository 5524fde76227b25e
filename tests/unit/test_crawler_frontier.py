"""The crawl driver against a fake web: what is fetched, in what order, how often, how politely."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

import pytest

from crawler.crawl import Crawl, CrawlConfig, CrawlError, crawl
from crawler.executors import ThreadExecutor
from crawler.fetch import FetchResult
from crawler.robots import RobotsRules
from crawler.urls import host_of

H = "http://site.test"


class FakeWeb:
    """url -> what it answers; counts requests and the most requests in flight per host.

    held_until {url: other}: url's answer waits until other has been answered, to
    fix the order in which answers come without timing anything.
    """

    def __init__(self, pages: dict, latency_s: float = 0.0, held_until: dict | None = None):
        self.pages = pages
        self.latency_s = latency_s
        self.held_until = held_until or {}
        self._answered: defaultdict = defaultdict(threading.Event)
        self.requests: Counter = Counter()
        self.started: dict[str, list[float]] = defaultdict(list)
        self._in_flight: Counter = Counter()
        self.peak_per_host: Counter = Counter()
        self.peak_total = 0
        self._lock = threading.Lock()

    def fetch_batch(self, urls, options, threads):
        return [self._fetch(url) for url in urls]

    def _fetch(self, url: str) -> FetchResult:
        host = host_of(url)
        with self._lock:
            self.requests[url] += 1
            self.started[host].append(time.monotonic())
            self._in_flight[host] += 1
            self.peak_per_host[host] = max(self.peak_per_host[host], self._in_flight[host])
            self.peak_total = max(self.peak_total, sum(self._in_flight.values()))
        time.sleep(self.latency_s)
        if url in self.held_until:
            assert self._answered[self.held_until[url]].wait(10), f"{self.held_until[url]} was never answered"
        with self._lock:
            self._in_flight[host] -= 1
        try:
            return self._answer(url)
        finally:
            self._answered[url].set()

    def _answer(self, url: str) -> FetchResult:
        answer = self.pages.get(url, 404)
        if isinstance(answer, list):
            return FetchResult(url, 200, "text/html", links=list(answer), attempts=1)
        if isinstance(answer, int):
            return FetchResult(url, answer, "text/html", error=f"HTTP {answer}", attempts=1)
        kind, value = answer
        if kind == "redirect":
            return FetchResult(url, 301, "text/html", location=value, attempts=1)
        if kind == "type":
            return FetchResult(url, 200, value, attempts=1)
        return FetchResult(url, None, error=value, attempts=3)  # ("error", message)


def run(web: FakeWeb, *starts: str, concurrency: int = 4, **options) -> dict:
    options.setdefault("prefix", H + "/")
    options.setdefault("respect_robots", False)
    config = CrawlConfig(starts=starts or (H + "/",), concurrency=concurrency, **options)
    executor = ThreadExecutor(concurrency, fetch=web.fetch_batch)
    try:
        return crawl(config, executor)
    finally:
        executor.close()


def found(result: dict) -> dict[str, int]:
    return {page["final_url"]: page["depth"] for page in result["pages"]}


def test_depth_counts_hops_and_the_last_level_is_fetched_but_not_followed():
    web = FakeWeb({H + "/": [H + "/1"], H + "/1": [H + "/2"], H + "/2": [H + "/3"], H + "/3": [H + "/4"]})
    result = run(web, max_depth=2)
    assert found(result) == {H + "/": 0, H + "/1": 1, H + "/2": 2}
    assert H + "/3" not in web.requests
    assert result["pages"][2]["links"] == [H + "/3"]  # its links are recorded, not followed


def test_depth_zero_fetches_only_the_start_urls():
    web = FakeWeb({H + "/": [H + "/1"]})
    assert found(run(web, max_depth=0)) == {H + "/": 0}
    assert list(web.requests) == [H + "/"]


def test_cycles_and_repeated_links_fetch_each_url_once_at_its_shortest_depth():
    web = FakeWeb(
        {
            H + "/": [H + "/a", H + "/b"],
            H + "/a": [H + "/", H + "/b", H + "/c"],
            H + "/b": [H + "/a", H + "/c", H + "/b"],
            H + "/c": [H + "/", H + "/a", H + "/d"],
            H + "/d": [H + "/c"],
        }
    )
    result = run(web, max_depth=5)
    assert found(result) == {H + "/": 0, H + "/a": 1, H + "/b": 1, H + "/c": 2, H + "/d": 3}
    assert set(web.requests.values()) == {1}


def test_duplicate_and_differently_spelled_start_urls_are_crawled_once():
    web = FakeWeb({H + "/": [H + "/a"], H + "/a": []})
    result = run(web, H + "/", H + "/", "HTTP://SITE.TEST:80/#top", H + "/a", max_depth=3)
    assert result["config"]["starts"] == [H + "/", H + "/a"]
    assert found(result) == {H + "/": 0, H + "/a": 0}
    assert set(web.requests.values()) == {1}


def test_pages_are_credited_to_the_start_url_that_reached_them_first():
    web = FakeWeb({H + "/": [H + "/x"], H + "/s/": [H + "/s/y"], H + "/x": [], H + "/s/y": []})
    result = run(web, H + "/", H + "/s/", max_depth=2)
    assert {page["final_url"]: page["start"] for page in result["pages"]} == {
        H + "/": H + "/", H + "/x": H + "/", H + "/s/": H + "/s/", H + "/s/y": H + "/s/",
    }


def test_links_outside_the_prefix_and_binary_files_are_never_requested():
    web = FakeWeb(
        {
            H + "/docs/": [H + "/docs/a", H + "/blog/", "http://other.test/docs/", "https://site.test/docs/b",
                           H + "/docs/manual.pdf"],
            H + "/docs/a": [],
        }
    )
    result = run(web, H + "/docs/", prefix=H + "/docs/", max_depth=3)
    assert set(web.requests) == {H + "/docs/", H + "/docs/a"}
    assert found(result) == {H + "/docs/": 0, H + "/docs/a": 1}


def test_redirect_is_followed_by_the_driver_and_its_target_fetched_once():
    web = FakeWeb(
        {
            H + "/": [H + "/old", H + "/new", H + "/to-home"],
            H + "/old": ("redirect", H + "/new"),
            H + "/new": [H + "/old"],
            H + "/to-home": ("redirect", H + "/"),
        }
    )
    result = run(web, max_depth=3)
    assert web.requests == Counter({H + "/": 1, H + "/old": 1, H + "/new": 1, H + "/to-home": 1})
    assert [(p["url"], p["final_url"]) for p in result["pages"] if p["final_url"] == H + "/new"] in (
        [(H + "/old", H + "/new")],
        [(H + "/new", H + "/new")],
    )
    assert result["stats"]["redirects"] == 2
    assert result["broken"] == []


def test_redirected_start_url_records_both_urls():
    web = FakeWeb({H + "/start": ("redirect", H + "/start/"), H + "/start/": [H + "/start/a"], H + "/start/a": []})
    result = run(web, H + "/start", max_depth=1)
    assert result["pages"][0] == {
        "url": H + "/start", "final_url": H + "/start/", "status": 200, "depth": 0,
        "start": H + "/start", "links": [H + "/start/a"],
    }
    assert found(result) == {H + "/start/": 0, H + "/start/a": 1}


def test_redirect_out_of_scope_or_in_a_loop_ends_quietly():
    web = FakeWeb(
        {
            H + "/docs/": [H + "/docs/away", H + "/docs/loop1"],
            H + "/docs/away": ("redirect", "http://other.test/"),
            H + "/docs/loop1": ("redirect", H + "/docs/loop2"),
            H + "/docs/loop2": ("redirect", H + "/docs/loop1"),
        }
    )
    result = run(web, H + "/docs/", prefix=H + "/docs/", max_depth=2)
    assert set(web.requests.values()) == {1}
    assert "http://other.test/" not in web.requests
    assert found(result) == {H + "/docs/": 0}


def test_a_redirect_chain_longer_than_the_limit_is_a_broken_link():
    chain = {H + f"/r{n}": ("redirect", H + f"/r{n + 1}") for n in range(10)}
    web = FakeWeb({H + "/": [H + "/r0"], **chain})
    result = run(web, max_depth=1, max_redirects=3)
    assert [entry["url"] for entry in result["broken"]] == [H + "/r3"]
    assert "more than 3 redirects" in result["broken"][0]["error"]
    assert H + "/r4" not in web.requests


def test_error_statuses_and_network_errors_are_broken_links_with_the_page_they_are_on():
    web = FakeWeb(
        {
            H + "/": [H + "/missing", H + "/down", H + "/unreachable", H + "/ok"],
            H + "/down": 503,
            H + "/unreachable": ("error", "timed out"),
            H + "/ok": [H + "/missing"],
        }
    )
    result = run(web, max_depth=2)
    broken = {entry["url"]: (entry["status"], entry["error"], entry["found_on"]) for entry in result["broken"]}
    assert broken == {
        H + "/missing": (404, "HTTP 404", H + "/"),
        H + "/down": (503, "HTTP 503", H + "/"),
        H + "/unreachable": (None, "timed out", H + "/"),
    }
    assert result["stats"]["failed"] == 3
    assert result["stats"]["requests"] == 3 + 1 + 3  # the fake reports 3 attempts for the network error
    assert web.requests[H + "/missing"] == 1


def test_non_html_responses_are_not_pages():
    web = FakeWeb({H + "/": [H + "/feed", H + "/page"], H + "/feed": ("type", "application/json"), H + "/page": []})
    result = run(web, max_depth=1)
    assert found(result) == {H + "/": 0, H + "/page": 1}
    assert result["stats"]["non_html"] == 1
    assert result["broken"] == []


def test_max_pages_keeps_the_shallowest_pages_in_link_order():
    web = FakeWeb({H + "/": [H + f"/{n}" for n in range(10)], **{H + f"/{n}": [H + f"/{n}/x"] for n in range(10)}})
    result = run(web, max_depth=3, max_pages=4)
    assert found(result) == {H + "/": 0, H + "/0": 1, H + "/1": 1, H + "/2": 1}
    assert sum(web.requests.values()) == 4


def test_a_crawl_cut_by_max_pages_says_so_and_counts_what_it_left():
    web = FakeWeb({H + "/": [H + f"/{n}" for n in range(10)], **{H + f"/{n}": [] for n in range(10)}})
    result = run(web, max_depth=2, max_pages=4)
    assert result["stats"]["fetched"] == 4 and sum(web.requests.values()) == 4
    assert (result["stats"]["truncated"], result["stats"]["unfetched"]) == (True, 7)
    assert [entry["url"] for entry in result["unfetched"]] == sorted(H + f"/{n}" for n in range(3, 10))
    assert {entry["found_on"] for entry in result["unfetched"]} == {H + "/"}


def test_a_crawl_that_fits_in_max_pages_is_not_truncated():
    web = FakeWeb({H + "/": [H + f"/{n}" for n in range(3)], **{H + f"/{n}": [] for n in range(3)}})
    result = run(web, max_depth=2, max_pages=4)  # exactly the four pages there are
    assert result["stats"]["fetched"] == 4
    assert (result["stats"]["truncated"], result["stats"]["unfetched"], result["unfetched"]) == (False, 0, [])


def test_links_beyond_the_depth_are_not_left_unfetched_but_never_counted():
    web = FakeWeb({H + "/": [H + "/a"], H + "/a": [H + "/b"]})
    result = run(web, max_depth=1, max_pages=2)
    assert result["stats"]["truncated"] is False  # /b is deeper than --depth: not part of this crawl


@pytest.mark.parametrize("fetched_first", [True, False], ids=["fetched", "in-flight"])
def test_a_url_found_deep_then_shallower_moves_up_and_its_links_are_followed(fetched_first):
    # /x is first found at depth 2 (via /b); /slow, at depth 1, then redirects to it:
    # /x is at depth 1, so its link /y (depth 2) is now within --depth 2.
    pages = {
        H + "/": [H + "/slow", H + "/b"],
        H + "/slow": ("redirect", H + "/x"),
        H + "/b": [H + "/x"],
        H + "/x": [H + "/y"],
        H + "/y": [],
    }
    if fetched_first:
        web = FakeWeb(pages, held_until={H + "/slow": H + "/x"})  # the redirect comes after /x is fetched
    else:
        web = FakeWeb(pages, held_until={H + "/x": H + "/slow"})  # ... while /x is in flight
    result = run(web, max_depth=2)
    assert found(result) == {H + "/": 0, H + "/b": 1, H + "/x": 1, H + "/y": 2}
    page_x = next(page for page in result["pages"] if page["final_url"] == H + "/x")
    assert page_x["depth"] == 1
    assert set(web.requests.values()) == {1}


def test_moving_up_carries_on_through_pages_already_fetched():
    # /x at depth 1 after the redirect: /x2, fetched at depth 3, is at depth 2, so its
    # link /z (depth 3) is within --depth 3 now; before, it was one hop too deep.
    pages = {
        H + "/": [H + "/slow", H + "/b"],
        H + "/slow": ("redirect", H + "/x"),
        H + "/b": [H + "/x"],
        H + "/x": [H + "/x2"],
        H + "/x2": [H + "/z"],
        H + "/z": [],
    }
    web = FakeWeb(pages, held_until={H + "/slow": H + "/x"})
    result = run(web, max_depth=3, max_pages=100)
    assert found(result)[H + "/x"] == 1
    assert found(result)[H + "/x2"] == 2
    assert found(result)[H + "/z"] == 3
    assert set(web.requests.values()) == {1}


def test_max_pages_keeps_the_shallowest_pages_when_a_slow_page_redirects_late():
    # Level by level, the five pages are /, /a, /slow, /s (its target, depth 1) and /a1.
    # Streaming must not spend the last request on /a2 before /slow has answered.
    pages = {
        H + "/": [H + "/a", H + "/slow"],
        H + "/a": [H + "/a1", H + "/a2", H + "/a3"],
        H + "/slow": ("redirect", H + "/s"),
        H + "/s": [],
        **{H + f"/a{n}": [] for n in (1, 2, 3)},
    }
    web = FakeWeb(pages, held_until={H + "/slow": H + "/a1"})
    result = run(web, max_depth=3, max_pages=5)
    assert set(web.requests) == {H + "/", H + "/a", H + "/slow", H + "/s", H + "/a1"}
    assert result["stats"]["truncated"] and result["stats"]["unfetched"] == 2


def test_max_pages_keeps_the_shallowest_pages_when_a_slow_page_links_late():
    # Level by level: /, then /a and /slow, then /a1 and /slow's three links; /a2 is at depth 3.
    # Requests are left for /a2 when /a1 answers, but /slow's links, still to come, are shallower.
    pages = {
        H + "/": [H + "/a", H + "/slow"],
        H + "/a": [H + "/a1"],
        H + "/a1": [H + "/a2"],
        H + "/slow": [H + "/b1", H + "/b2", H + "/b3"],
        H + "/a2": [],
        **{H + f"/b{n}": [] for n in (1, 2, 3)},
    }
    web = FakeWeb(pages, held_until={H + "/slow": H + "/a1"})
    result = run(web, max_depth=3, max_pages=7)
    assert found(result) == {H + "/": 0, H + "/a": 1, H + "/slow": 1, H + "/a1": 2, H + "/b1": 2, H + "/b2": 2,
                             H + "/b3": 2}
    assert [entry["url"] for entry in result["unfetched"]] == [H + "/a2"]


def test_concurrency_and_per_host_limits_hold():
    other = "http://other.test"
    pages = {H + "/": [H + f"/{n}" for n in range(30)], other + "/": [other + f"/{n}" for n in range(30)]}
    web = FakeWeb(pages, latency_s=0.01)
    config = CrawlConfig(starts=(H + "/", other + "/"), max_depth=1, concurrency=5, per_host=3, respect_robots=False)
    executor = ThreadExecutor(16, fetch=web.fetch_batch)  # more threads than the limits allow
    try:
        result = crawl(config, executor)
    finally:
        executor.close()
    assert len(result["pages"]) == 2  # the 60 leaves answer 404
    assert max(web.peak_per_host.values()) == 3
    assert web.peak_total == 5


def test_per_host_delay_spaces_the_requests():
    web = FakeWeb({H + "/": [H + "/a", H + "/b", H + "/c"]})
    run(web, max_depth=1, delay_s=0.05, concurrency=8, per_host=8)
    starts = sorted(web.started[H])
    assert len(starts) == 4
    assert min(b - a for a, b in zip(starts, starts[1:])) >= 0.045


def test_a_start_url_outside_the_prefix_is_refused_before_any_request():
    with pytest.raises(CrawlError, match="outside the prefix http://site.test/docs/"):
        Crawl(CrawlConfig(starts=(H + "/blog/",), prefix=H + "/docs/"))
    with pytest.raises(CrawlError, match="not an http"):
        Crawl(CrawlConfig(starts=("ftp://site.test/",)))


def test_result_has_the_documented_shape():
    web = FakeWeb({H + "/": [H + "/a"], H + "/a": []})
    result = run(web, max_depth=1)
    assert set(result) >= {"pages", "broken", "stats"}
    assert set(result["pages"][0]) >= {"url", "final_url", "status", "depth", "links"}
    assert set(result["stats"]) >= {"fetched", "unique", "failed", "wall_s", "pages_per_s"}
    assert (result["stats"]["fetched"], result["stats"]["unique"], result["stats"]["failed"]) == (2, 2, 0)


# -- robots.txt ---------------------------------------------------------------------


def robots(status, body="", user_agent="kindlab-crawler/0.1"):
    fetched = []

    def fetch_text(url):
        fetched.append(url)
        return status, body, 1

    return RobotsRules(fetch_text, user_agent), fetched


def test_robots_txt_rules_are_read_once_per_host():
    rules, fetched = robots(200, "User-agent: *\nDisallow: /private/\nCrawl-delay: 2\n")
    assert rules.allowed(H, H + "/public/a")
    assert not rules.allowed(H, H + "/private/a")
    assert rules.crawl_delay(H) == 2.0
    assert fetched == [H + "/robots.txt"]


def test_missing_robots_txt_allows_all_and_an_unreachable_one_allows_nothing():
    assert robots(404)[0].allowed(H, H + "/any")
    assert robots(403)[0].allowed(H, H + "/any")
    assert not robots(503)[0].allowed(H, H + "/any")
    assert not robots(None)[0].allowed(H, H + "/any")


def test_crawl_skips_what_robots_txt_disallows():
    web = FakeWeb({H + "/": [H + "/private/x", H + "/public"], H + "/public": []})
    config = CrawlConfig(starts=(H + "/",), max_depth=2, respect_robots=True)
    rules, _ = robots(200, "User-agent: *\nDisallow: /private/\n")
    crawler = Crawl(config, robots=rules)
    executor = ThreadExecutor(2, fetch=web.fetch_batch)
    try:
        result = crawler.run(executor)
    finally:
        executor.close()
    assert set(web.requests) == {H + "/", H + "/public"}
    assert result["stats"]["blocked_by_robots"] == 1
    assert result["stats"]["requests"] == 3  # two pages and robots.txt


def test_robots_crawl_delay_spaces_the_requests_to_that_host():
    web = FakeWeb({H + "/": [H + "/a"]})
    rules, _ = robots(200, "User-agent: *\nCrawl-delay: 1\n")  # the standard parser reads whole seconds only
    config = CrawlConfig(starts=(H + "/",), max_depth=1, concurrency=8, per_host=8, respect_robots=True)
    executor = ThreadExecutor(8, fetch=web.fetch_batch)
    try:
        Crawl(config, robots=rules).run(executor)
    finally:
        executor.close()
    starts = sorted(web.started[H])
    assert len(starts) == 2 and starts[1] - starts[0] >= 0.95
