"""The crawler against synthetic sites served on 127.0.0.1, with real HTTP, latency and odd pages."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from crawler import CrawlConfig, FetchOptions, crawl, fetch_page
from crawler.executors import AsyncExecutor, ThreadExecutor
from tests.sitegen import Route, Site, SiteServer, docs_site

REPO = Path(__file__).resolve().parents[2]


def edge_site(latency_s: float = 0.005) -> Site:
    """Every kind of link and answer a crawler meets, in a graph small enough to check by hand."""
    page = lambda *hrefs: Route(hrefs=list(hrefs))  # noqa: E731
    routes = {
        "/site/": page(
            "a.html", "sub/b.html", "/site/c.html", "{origin}/site/d.html", "a.html#frag", "e.html?x=1",
            "mailto:x@example.invalid", "javascript:alert(1)", "tel:123", "http://external.invalid/x",
            "/outside/page.html", "old.html", "missing.html", "gone.html", "report", "image.png",
            "private/secret.html", "to-a", "leave", "#top",
        ),
        "/site/a.html": page("./", "deep1.html", "sub/b.html"),
        "/site/sub/b.html": page("../a.html", "../", "c2.html"),
        "/site/sub/c2.html": page("../../site/c.html"),
        "/site/c.html": page("d.html", "c.html"),
        "/site/d.html": page("c.html", "./d.html"),
        "/site/e.html?x=1": page("e.html?x=2"),
        "/site/e.html?x=2": page(),
        "/site/deep1.html": page("deep2.html"),
        "/site/deep2.html": page("deep3.html"),
        "/site/deep3.html": page("deep4.html"),
        "/site/deep4.html": page(),
        "/site/old.html": Route(status=301, location="/site/moved.html"),
        "/site/moved.html": page("old.html", "a.html"),
        "/site/gone.html": Route(status=410, body="gone"),
        "/site/report": Route(content_type="application/json", body='{"not": "a page"}'),
        "/site/image.png": Route(content_type="image/png", body="png"),
        "/site/private/secret.html": page(),
        "/site/to-a": Route(status=302, location="a.html"),
        "/site/leave": Route(status=302, location="/outside/page.html"),
        "/outside/page.html": page("/site/"),
        "/robots.txt": Route(content_type="text/plain", body="User-agent: *\nDisallow: /site/private/\n"),
    }
    return Site(routes, latency_s)


PAGES_WITHIN_DEPTH_3 = {
    "/site/": 0, "/site/a.html": 1, "/site/sub/b.html": 1, "/site/c.html": 1, "/site/d.html": 1,
    "/site/e.html?x=1": 1, "/site/moved.html": 1, "/site/deep1.html": 2, "/site/sub/c2.html": 2,
    "/site/e.html?x=2": 2, "/site/deep2.html": 3,
}
NEVER_REQUESTED = {"/site/image.png", "/site/deep3.html", "/outside/page.html", "/site/private/secret.html"}


def run_crawl(server: SiteServer, *paths: str, concurrency: int = 8, threads: bool = False, **options) -> dict:
    config = CrawlConfig(
        starts=tuple(server.url(path) for path in paths),
        prefix=server.url(options.pop("prefix", "/site/")),
        concurrency=concurrency,
        per_host=concurrency,
        fetch=FetchOptions(timeout_s=5, retries=1, backoff_s=0.01),
        **options,
    )
    executor = ThreadExecutor(concurrency) if threads else AsyncExecutor()
    try:
        return crawl(config, executor)
    finally:
        executor.close()


def paths(server: SiteServer, urls) -> set[str]:
    return {url[len(server.origin):] for url in urls}


@pytest.mark.parametrize("threads", [False, True], ids=["event-loop", "threads"])
def test_edge_site_exact_pages_each_url_requested_once(threads):
    with SiteServer(edge_site()) as server:
        result = run_crawl(server, "/site/", max_depth=3, threads=threads)
        requests = server.requests

    found = {page["final_url"][len(server.origin):]: page["depth"] for page in result["pages"]}
    assert found == PAGES_WITHIN_DEPTH_3
    assert max(requests.values()) == 1, [path for path, n in requests.items() if n > 1]
    assert set(requests) == set(PAGES_WITHIN_DEPTH_3) | {
        "/robots.txt", "/site/old.html", "/site/to-a", "/site/leave", "/site/report",
        "/site/missing.html", "/site/gone.html",
    }
    assert not NEVER_REQUESTED & set(requests)

    moved = next(page for page in result["pages"] if page["final_url"].endswith("/moved.html"))
    assert moved["url"] == server.url("/site/old.html")
    broken = {entry["url"][len(server.origin):]: (entry["status"], entry["found_on"]) for entry in result["broken"]}
    assert broken == {"/site/missing.html": (404, server.url("/site/")), "/site/gone.html": (410, server.url("/site/"))}
    root = next(page for page in result["pages"] if page["depth"] == 0)
    assert server.url("/site/a.html") in root["links"] and "http://external.invalid/x" in root["links"]
    assert not [link for link in root["links"] if "#" in link or not link.startswith("http")]
    stats = result["stats"]
    assert (stats["unique"], stats["failed"], stats["non_html"], stats["redirects"]) == (11, 2, 1, 3)
    assert stats["blocked_by_robots"] == 1 and stats["requests"] == len(requests)


def test_robots_switch_off_crawls_the_disallowed_path_and_skips_robots_txt():
    with SiteServer(edge_site()) as server:
        result = run_crawl(server, "/site/", max_depth=1, respect_robots=False)
        requests = server.requests
    assert "/site/private/secret.html" in paths(server, (page["final_url"] for page in result["pages"]))
    assert "/robots.txt" not in requests


def test_docs_site_with_latency_finds_every_page_within_the_depth_once():
    site = docs_site(sections=4, pages_per_section=5, children_per_page=5, latency_s=0.01)
    with SiteServer(site) as server:
        home = "/docs/index.html"
        result = run_crawl(server, home, home, "/docs/s1/index.html", prefix="/docs/", max_depth=3, concurrency=16)
        requests = server.requests
        server.reset()
        shallow = run_crawl(server, home, prefix="/docs/", max_depth=2, concurrency=16)
        shallow_requests = server.requests

    assert paths(server, (page["final_url"] for page in result["pages"])) == set(site.depth_of)
    assert len(result["pages"]) == 1 + 4 + 20 + 100
    assert max(requests.values()) == 1
    assert not [path for path in requests if not path.startswith("/docs/") and path != "/robots.txt"]
    expected_shallow = {path for path, level in site.depth_of.items() if level <= 2}
    assert paths(server, (page["final_url"] for page in shallow["pages"])) == expected_shallow
    assert set(shallow_requests) == expected_shallow | {"/robots.txt"}


# -- one fetch: retries, timeouts, what is read --------------------------------------------


def fetch_site() -> Site:
    return Site(
        {
            "/flaky": Route(hrefs=["/ok"], fail_first=2),
            "/broken": Route(status=500, body="boom"),
            "/slow": Route(hrefs=[], delay_s=1.0),
            "/data": Route(content_type="application/json", body="{}"),
            "/moved": Route(status=308, location="/ok"),
            "/ok": Route(hrefs=["next"]),
        }
    )


OPTIONS = FetchOptions(timeout_s=2, retries=2, backoff_s=0.01)


def test_transient_failures_are_retried_until_they_pass():
    with SiteServer(fetch_site()) as server:
        result = fetch_page(server.url("/flaky"), OPTIONS)
        assert (result.status, result.error, result.attempts) == (200, None, 3)
        assert result.links == [server.url("/ok")]
        assert server.requests["/flaky"] == 3


def test_retries_are_bounded_and_permanent_errors_not_retried():
    with SiteServer(fetch_site()) as server:
        failing = fetch_page(server.url("/broken"), OPTIONS)
        missing = fetch_page(server.url("/nothing-here"), OPTIONS)
        requests = server.requests
    assert (failing.status, failing.error, failing.attempts) == (500, "HTTP 500 Internal Server Error", 3)
    assert (missing.status, missing.attempts) == (404, 1)
    assert (requests["/broken"], requests["/nothing-here"]) == (3, 1)


def test_a_slow_server_times_out_within_the_bound():
    with SiteServer(fetch_site()) as server:
        result = fetch_page(server.url("/slow"), FetchOptions(timeout_s=0.2, retries=1, backoff_s=0.01))
        assert (result.status, result.error, result.attempts) == (None, "timed out", 2)


def test_non_html_is_not_parsed_and_redirects_are_reported_not_followed():
    with SiteServer(fetch_site()) as server:
        data = fetch_page(server.url("/data"), OPTIONS)
        moved = fetch_page(server.url("/moved"), OPTIONS)
        requests = server.requests
    assert (data.status, data.content_type, data.is_html, data.links) == (200, "application/json", False, [])
    assert (moved.status, moved.location, moved.is_redirect) == (308, server.url("/ok"), True)
    assert "/ok" not in requests


def test_connection_refused_is_an_error_after_bounded_retries():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = fetch_page(f"http://127.0.0.1:{port}/", OPTIONS)
    assert result.status is None and "ConnectionRefusedError" in result.error
    assert result.attempts == 3


# -- the command line -----------------------------------------------------------------------


def test_cli_writes_the_json_result_and_a_summary(tmp_path):
    out = tmp_path / "crawl.json"
    with SiteServer(edge_site()) as server:
        completed = subprocess.run(
            [sys.executable, "-m", "crawler", server.url("/site/"), server.url("/site/"), "--prefix",
             server.url("/site/"), "--depth", "3", "--max-pages", "100", "--concurrency", "4", "--per-host", "4",
             "--json", str(out), "--local"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(out.read_text())
    assert paths(server, (page["final_url"] for page in result["pages"])) == set(PAGES_WITHIN_DEPTH_3)
    assert result["config"]["mode"] == "local"
    assert result["stats"]["unique"] == 11 and result["stats"]["pages_per_s"] > 0
    assert f"  {server.url('/site/')}  11 pages (depth 0: 1, depth 1: 6, depth 2: 3, depth 3: 1), 2 broken" \
        in completed.stderr
    assert "Total: 11 unique pages" in completed.stderr
    assert completed.stdout == ""  # stdout stays clean for --emit-result


def test_cli_crawl_cut_by_max_pages_says_so_in_its_summary_and_json(tmp_path):
    out = tmp_path / "crawl.json"
    with SiteServer(edge_site()) as server:
        completed = subprocess.run(
            [sys.executable, "-m", "crawler", server.url("/site/"), "--depth", "3", "--max-pages", "5",
             "--concurrency", "4", "--per-host", "4", "--json", str(out), "--quiet"],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )
        requests = server.requests
    assert completed.returncode == 0, completed.stderr
    result = json.loads(out.read_text())
    stats = result["stats"]
    assert stats["fetched"] == 5 and sum(n for path, n in requests.items() if path != "/robots.txt") == 5
    assert stats["truncated"] is True and stats["unfetched"] == len(result["unfetched"]) > 0
    # Level by level: the start URL and four of its depth-1 links; the rest of depth 1, and what
    # the four link to, is left.
    assert max(page["depth"] for page in result["pages"]) == 1 == min(e["depth"] for e in result["unfetched"])
    assert f"Truncated: --max-pages 5 stopped the crawl; {stats['unfetched']} URLs found within depth 3" \
        in completed.stderr
    assert f"{stats['unfetched']} found but left unfetched (--max-pages)" in completed.stderr
