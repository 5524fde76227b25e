"""Synthetic web sites on 127.0.0.1, with a known link graph and a per-request latency.

Shared by the crawler tests and benchmarks/crawl.py. The server counts every
request by path (query included), so a test can assert that no URL was
requested twice. Nothing here talks to any address but 127.0.0.1.
"""

from __future__ import annotations

import html
import multiprocessing
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional


@dataclass
class Route:
    """What the server answers for one path."""

    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    hrefs: list[str] = field(default_factory=list)  # written into the page as <a href>, as they are
    body: Optional[str] = None  # a fixed body instead of a page of links
    location: Optional[str] = None  # for redirects
    delay_s: float = 0.0  # on top of the site's latency
    fail_first: int = 0  # answer 503 this many times before answering for real


@dataclass
class Site:
    routes: dict[str, Route]
    latency_s: float = 0.0
    depth_of: dict[str, int] = field(default_factory=dict)  # page path -> hops from the home page


def _page(route: Route, path: str, origin: str) -> bytes:
    if route.body is not None:
        return route.body.encode()
    anchors = "\n".join(
        f'<li><a href="{html.escape(href.replace("{origin}", origin), quote=True)}">link {n}</a></li>'
        for n, href in enumerate(route.hrefs)
    )
    return (
        f"<!doctype html><html><head><title>{html.escape(path)}</title></head>"
        f'<body><a id="top"></a><h1>{html.escape(path)}</h1><ul>\n{anchors}\n</ul></body></html>'
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server wants)
        site = self.server.site
        path = self.path
        served = self.server.count(path)
        route = site.routes.get(path)
        time.sleep(site.latency_s + (route.delay_s if route else 0.0))
        if route is None:
            self._send(404, "text/html", b"<html><body>not found</body></html>")
        elif served <= route.fail_first:
            self._send(503, "text/html", b"busy", {"Retry-After": "0"})
        elif route.location is not None:
            self._send(route.status, "text/html", b"", {"Location": route.location})
        else:
            origin = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"
            self._send(route.status, route.content_type, _page(route, path, origin))

    def _send(self, status: int, content_type: str, body: bytes, headers: Optional[dict] = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops connections under a concurrent crawl

    def __init__(self, site: Site) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.site = site
        self.requests: Counter = Counter()
        self._lock = threading.Lock()

    def count(self, path: str) -> int:
        with self._lock:
            self.requests[path] += 1
            return self.requests[path]


class SiteServer:
    """Serves a Site on 127.0.0.1 from a thread: `with SiteServer(site) as server: server.url("/")`."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._server = _Server(site)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str) -> str:
        return self.origin + path

    @property
    def requests(self) -> Counter:
        with self._server._lock:
            return Counter(self._server.requests)

    def reset(self) -> None:
        with self._server._lock:
            self._server.requests.clear()

    def __enter__(self) -> "SiteServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# -- a docs-like site for the benchmark and the large integration test ----------


def docs_site(
    sections: int = 10,
    pages_per_section: int = 12,
    children_per_page: int = 12,
    latency_s: float = 0.02,
    root: str = "/docs/",
) -> Site:
    """A tree of pages under `root`, shaped like a documentation site.

    home -> sections -> pages -> children; every page also links back up (home,
    its parent, a sibling), so the graph is full of cycles, and carries links a
    crawler must not follow (a fragment, mailto:, javascript:, another host,
    a path outside `root`). The links are written in every form a real site
    uses: relative, "../", "./", absolute path, full URL.
    Tree level = shortest hop count from the home page.
    """
    home = root + "index.html"
    routes: dict[str, Route] = {}
    depth_of: dict[str, int] = {}
    distractions = [
        "#top",
        "mailto:docs@example.invalid",
        "javascript:void(0)",
        "https://example.invalid/elsewhere.html",
        "/blog/index.html",
    ]

    def add(path: str, level: int, hrefs: list[str]) -> None:
        routes[path] = Route(hrefs=hrefs + distractions)
        depth_of[path] = level

    add(home, 0, [f"s{s}/index.html" for s in range(sections)])
    for s in range(sections):
        section = f"{root}s{s}/"
        add(section + "index.html", 1, [f"p{p}.html" for p in range(pages_per_section)] + ["../index.html"])
        for p in range(pages_per_section):
            page = f"{section}p{p}.html"
            sibling = f"{{origin}}{section}p{(p + 1) % pages_per_section}.html"
            children = [f"p{p}/c{c}.html" for c in range(children_per_page)]
            add(page, 2, children + ["./index.html", home, sibling])
            for c in range(children_per_page):
                add(
                    f"{section}p{p}/c{c}.html",
                    3,
                    [f"../p{p}.html", home, "../index.html", f"c{(c + 1) % children_per_page}.html#part-2"],
                )
    routes["/blog/index.html"] = Route(hrefs=[home])  # outside the prefix: must never be requested
    return Site(routes, latency_s, depth_of)


# -- serving a site from another process, so the server does not share the crawler's GIL --


def _serve_forever(site: Site, conn) -> None:
    with SiteServer(site) as server:
        conn.send(server.origin)
        while True:
            command = conn.recv()
            if command == "requests":
                conn.send(server.requests)
            elif command == "reset":
                server.reset()
                conn.send(True)
            else:
                conn.send(True)
                return


class SiteProcess:
    """A Site served by a child process: `with SiteProcess(site) as server: ...`."""

    def __init__(self, site: Site) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve_forever, args=(site, child), daemon=True)
        self.origin = ""

    def url(self, path: str) -> str:
        return self.origin + path

    @property
    def requests(self) -> Counter:
        self._conn.send("requests")
        return self._conn.recv()

    def reset(self) -> None:
        self._conn.send("reset")
        self._conn.recv()

    def __enter__(self) -> "SiteProcess":
        self._process.start()
        if not self._conn.poll(30):
            self._process.kill()
            raise RuntimeError("the synthetic site did not start within 30s")
        self.origin = self._conn.recv()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._conn.send("stop")
            self._conn.recv()
        except (BrokenPipeError, EOFError):
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
