"""Synthetic web sites on 127.0.0.1, with a known link graph and a per-request latency.

Shared by the crawler tests and benchmarks/crawl.py. The server counts every
request by path (query included), so a test can assert that no URL was
requested twice. Nothing here talks to any address but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import html
import multiprocessing
import threading
from collections import Counter
from dataclasses import dataclass, field
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


_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 308: "Permanent Redirect", 404: "Not Found",
            410: "Gone", 500: "Internal Server Error", 503: "Service Unavailable"}


class SiteServer:
    """Serves a Site on 127.0.0.1 from an event loop in a thread: `with SiteServer(site) as server: server.url("/")`.

    HTTP/1.1 with keep-alive, as real web servers speak it, so a client that
    reuses connections can; a client that asks to close (urllib) gets a close.
    An event loop rather than a thread per connection keeps the server's own
    CPU small, since it shares the machine with the crawler it serves.
    """

    def __init__(self, site: Site) -> None:
        self.site = site
        self._requests: Counter = Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024))
        host, port = self._server.sockets[0].getsockname()[:2]
        self.origin = f"http://{host}:{port}"  # kept: the server's sockets are gone once it stops
        self._connections: set = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, path: str) -> str:
        return self.origin + path

    @property
    def requests(self) -> Counter:
        with self._lock:
            return Counter(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()

    def __enter__(self) -> "SiteServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _stop(self) -> None:
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _count(self, path: str) -> int:
        with self._lock:
            self._requests[path] += 1
            return self._requests[path]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        try:
            while await self._answer_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client gave up (a timeout test), or the server stops
        finally:
            self._connections.discard(task)
            writer.close()

    async def _answer_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Reads one request and answers it; True when the connection stays open for another."""
        request_line = await reader.readline()
        if not request_line.strip():
            return False
        _method, path, version = request_line.decode("latin-1").split(" ", 2)
        headers = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        keep_alive = version.strip() == "HTTP/1.1" and headers.get("connection") != "close"
        served = self._count(path)
        route = self.site.routes.get(path)
        await asyncio.sleep(self.site.latency_s + (route.delay_s if route else 0.0))
        if route is None:
            status, content_type, body, extra = 404, "text/html", b"<html><body>not found</body></html>", {}
        elif served <= route.fail_first:
            status, content_type, body, extra = 503, "text/html", b"busy", {"Retry-After": "0"}
        elif route.location is not None:
            status, content_type, body, extra = route.status, "text/html", b"", {"Location": route.location}
        else:
            status, content_type, body, extra = route.status, route.content_type, _page(route, path, self.origin), {}
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        head += [f"{name}: {value}" for name, value in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        return keep_alive


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
    def pid(self) -> int:
        return self._process.pid

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
