"""Which links a page yields, and how they are written: the crawler's visited set depends on it."""

import pytest

from crawler.parse import extract_links
from crawler.urls import default_prefix, in_scope, looks_binary, normalize, resolve

PAGE = "http://docs.test/guide/install/index.html"


def links(*hrefs: str, page: str = PAGE) -> list[str]:
    body = "".join(f'<a href="{href}">x</a>' for href in hrefs)
    return extract_links(f"<html><body>{body}</body></html>", page)


@pytest.mark.parametrize(
    "href, expected",
    [
        ("linux.html", "http://docs.test/guide/install/linux.html"),  # relative
        ("./linux.html", "http://docs.test/guide/install/linux.html"),
        ("../index.html", "http://docs.test/guide/index.html"),  # parent
        ("../../about/", "http://docs.test/about/"),
        ("../../../../../../top.html", "http://docs.test/top.html"),  # ".." cannot climb above the root
        ("/api/index.html", "http://docs.test/api/index.html"),  # absolute path
        ("http://docs.test/api/x.html", "http://docs.test/api/x.html"),  # full URL
        ("//cdn.test/lib.html", "http://cdn.test/lib.html"),  # scheme-relative
        ("linux.html#requirements", "http://docs.test/guide/install/linux.html"),  # fragment dropped
        ("search.html?q=ray&page=2", "http://docs.test/guide/install/search.html?q=ray&page=2"),  # query kept
        ("?page=2", "http://docs.test/guide/install/index.html?page=2"),
        ("https://other.test/", "https://other.test/"),  # external host: extracted, scope decides
        ("  linux.html\n", "http://docs.test/guide/install/linux.html"),  # whitespace around href
        ("HTTP://DOCS.TEST:80/A.html", "http://docs.test/A.html"),  # scheme, host, default port
        ("https://docs.test:443/x", "https://docs.test/x"),
        ("http://docs.test:8080/x/../y", "http://docs.test:8080/y"),  # dot segments in a full URL
        ("a.html?x=1&amp;y=2", "http://docs.test/guide/install/a.html?x=1&y=2"),  # HTML entities decoded
    ],
)
def test_link_is_resolved(href, expected):
    assert links(href) == [expected]


@pytest.mark.parametrize(
    "href",
    ["mailto:docs@docs.test", "javascript:void(0)", "JavaScript:alert(1)", "tel:+123", "data:text/html,hi",
     "ftp://docs.test/file", "#top", "#", "", "   ", "http://:80/nohost", "http://docs.test:99999/bad-port"],
)
def test_link_that_is_not_a_page_is_dropped(href):
    assert links(href) == []


def test_each_link_once_in_page_order():
    assert links("b.html", "a.html", "b.html#x", "a.html") == [
        "http://docs.test/guide/install/b.html",
        "http://docs.test/guide/install/a.html",
    ]


def test_base_href_changes_what_relative_links_mean():
    html = '<html><head><base href="/v2/"></head><body><a href="page.html">p</a><a href="/abs">a</a></body></html>'
    assert extract_links(html, PAGE) == ["http://docs.test/v2/page.html", "http://docs.test/abs"]


def test_area_and_self_closing_anchor_count_but_other_tags_do_not():
    html = (
        '<map><area href="map.html"></map><a href="self-closed.html"/>'
        '<link href="style.html"><img src="img.html"><script src="s.html"></script><a name="no-href">x</a>'
    )
    assert extract_links(html, PAGE) == [
        "http://docs.test/guide/install/map.html",
        "http://docs.test/guide/install/self-closed.html",
    ]


def test_broken_markup_still_yields_its_links():
    html = '<div><a href="one.html">one<p><a href=two.html>two</div><a href="three.html'
    assert extract_links(html, PAGE)[:2] == [
        "http://docs.test/guide/install/one.html",
        "http://docs.test/guide/install/two.html",
    ]


def test_normalize_gives_one_spelling_of_a_url():
    assert normalize("HTTP://Docs.Test") == "http://docs.test/"
    assert normalize("http://docs.test/a/b/..") == "http://docs.test/a/"
    assert normalize("http://docs.test/a/./b#frag") == "http://docs.test/a/b"
    assert normalize("http://[::1]:8080/x") == "http://[::1]:8080/x"
    assert normalize("mailto:a@b") is None
    assert resolve("#only-a-fragment", PAGE) is None


def test_default_prefix_is_the_start_urls_directory():
    assert default_prefix("http://docs.test/guide/index.html") == "http://docs.test/guide/"
    assert default_prefix("http://docs.test/guide") == "http://docs.test/"
    assert default_prefix("http://docs.test") == "http://docs.test/"


def test_scope_is_a_string_prefix_of_the_normalized_url():
    prefixes = ["http://docs.test/guide/"]
    assert in_scope("http://docs.test/guide/a.html", prefixes)
    assert not in_scope("http://docs.test/guide-old/a.html", prefixes)
    assert not in_scope("http://docs.test/", prefixes)
    assert not in_scope("https://docs.test/guide/a.html", prefixes)  # another scheme is another site


def test_binary_extensions_are_recognised_without_a_request():
    assert looks_binary("http://docs.test/manual.PDF")
    assert looks_binary("http://docs.test/logo.png?v=3")
    assert not looks_binary("http://docs.test/page.html")
    assert not looks_binary("http://docs.test/v1.2/")
    assert not looks_binary("http://docs.test/api")


def test_links_a_browser_would_not_follow_are_not_links():
    html = (
        '<!-- <a href="commented.html">old</a> -->'
        '<script>document.write(\'<a href="scripted.html">x</a>\')</script>'
        '<style>/* <a href="styled.html"> */</style>'
        '<textarea><a href="typed.html">x</a></textarea>'
        '<title>A <a href="titled.html">title</a></title>'
        '<abbr href="abbr.html">x</abbr>'
        '<a href="kept.html">kept</a>'
    )
    assert extract_links(html, PAGE) == ["http://docs.test/guide/install/kept.html"]


def test_attribute_forms_a_browser_accepts():
    html = (
        "<A HREF='single.html'>x</A>"
        '<a title="a > b" href="after-gt.html">x</a>'
        '<a class=x href = spaced.html >x</a>'
        '<a\nhref="newline.html">x</a>'
        '<a href="first.html" href="second.html">x</a>'
        '<a data-href="not-this.html">x</a>'
    )
    assert extract_links(html, PAGE) == [
        "http://docs.test/guide/install/single.html",
        "http://docs.test/guide/install/after-gt.html",
        "http://docs.test/guide/install/spaced.html",
        "http://docs.test/guide/install/newline.html",
        "http://docs.test/guide/install/first.html",
    ]


@pytest.mark.parametrize("href", ["http:other.html", "HTTP:other.html"])
def test_same_scheme_relative_link_resolves_as_urljoin_does(href):
    assert links(href) == ["http://docs.test/guide/install/other.html"]


def test_robots_txt_is_read_with_retries_and_redirects_without_aiohttp_in_the_driver(tmp_path):
    """The driver reads robots.txt; the fetchers alone need aiohttp (a third of a second to import on the
    lab's head). A 503 is retried, a redirect followed, a 404 allows everything."""
    import http.server
    import json
    import subprocess
    import sys
    import threading
    from pathlib import Path

    answers = {"/a/robots.txt": [503, 200], "/b/robots.txt": [301], "/c/robots.txt": [404]}
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            queue = answers[self.path]
            status = queue.pop(0) if len(queue) > 1 else queue[0]  # the last answer stays
            body = b"User-agent: *\nDisallow: /a/private/\n" if status == 200 else b""
            self.send_response(status)
            if status == 301:
                self.send_header("Location", "/a/robots.txt")
            if status == 503:
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_port}"
    script = ("import json, sys\nfrom crawler.fetch import FetchOptions, fetch_text\n"
              f"print(json.dumps([fetch_text({base!r} + p, FetchOptions(backoff_s=0.01))[::2] for p in "
              "('/a/robots.txt', '/b/robots.txt', '/c/robots.txt')] + ['aiohttp' in sys.modules]))\n")
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                             cwd=Path(__file__).resolve().parents[2])
    finally:
        httpd.shutdown()
    assert out.returncode == 0, out.stderr
    a, b, c, imported = json.loads(out.stdout)
    assert a == [200, 2] and b == [200, 1] and c == [404, 1]  # (status, requests): the 503 retried once
    assert imported is False
