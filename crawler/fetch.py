"""Fetch-and-parse: the work a crawl hands to its fetchers, with aiohttp.

One PageFetcher holds one aiohttp session, so connections to a host are kept
alive and reused, and it fetches as many pages at once as it is given. aiohttp
comes with ray[default], so a Ray image has it without a pip step.

A fetch never follows a redirect itself: it reports the target and the driver
decides, against what it has already requested, whether the target is
requested at all. That is what keeps "every URL requested at most once" true
across workers.
"""

from __future__ import annotations

import asyncio
import random
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Optional, Sequence

from .parse import extract_links
from .urls import normalize

HTML_TYPES = ("text/html", "application/xhtml+xml")
# Worth another try: the server or the path to it may recover within seconds.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 10.0


@dataclass(frozen=True)
class FetchOptions:
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.25
    user_agent: str = "kindlab-crawler/0.1"
    max_bytes: int = 5_000_000


@dataclass
class FetchResult:
    """What one URL gave. Exactly one of links / location / error tells the outcome,
    except for a non-HTML page, which has a status and a content_type only."""

    url: str
    status: Optional[int] = None
    content_type: str = ""
    links: list[str] = field(default_factory=list)
    location: Optional[str] = None  # normalized redirect target
    error: Optional[str] = None
    attempts: int = 0  # HTTP requests made, retries included

    @property
    def is_redirect(self) -> bool:
        return self.status is not None and 300 <= self.status < 400 and self.error is None

    @property
    def is_html(self) -> bool:
        return self.error is None and not self.is_redirect and self.content_type in HTML_TYPES


class PageFetcher:
    """GETs pages with one aiohttp session: timeouts, bounded retries, links parsed.

    Create it inside the event loop that will use it; close() it there too.
    """

    def __init__(self, options: FetchOptions) -> None:
        import aiohttp  # imported here so that `python -m crawler --help` stays light

        self.options = options
        self._aiohttp = aiohttp
        self._session = aiohttp.ClientSession(
            # The driver bounds requests in flight, per host and in all; the pool need not.
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=options.timeout_s),
            headers={"User-Agent": options.user_agent,
                     "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"},
            cookie_jar=aiohttp.DummyCookieJar(),  # a crawler keeps no sessions
        )

    async def fetch(self, url: str) -> FetchResult:
        """GET one URL, retrying transient failures a bounded number of times."""
        result = FetchResult(url)
        result.attempts = await _with_retries(self.options, lambda: self._get_once(url, result))
        return result

    async def close(self) -> None:
        await self._session.close()

    async def _get_once(self, url: str, result: FetchResult) -> Optional[float]:
        """One request; fills `result`. Returns None when done, else seconds to wait
        before a retry (0 means: use the backoff)."""
        result.status, result.error, result.location, result.links = None, None, None, []
        try:
            async with self._session.get(url, allow_redirects=False) as response:
                result.status = response.status
                if 300 <= response.status < 400:
                    return _record_redirect(url, response.status, response.headers.get("Location"), result)
                if response.status >= 400:
                    result.error = f"HTTP {response.status} {response.reason or ''}".rstrip()
                    if response.status in RETRY_STATUSES:
                        return _retry_after(response.headers.get("Retry-After"))
                    return None
                # A server that sends no Content-Type is taken at its word that this is a page.
                has_type = "Content-Type" in response.headers
                result.content_type = response.content_type if has_type else "text/html"
                if result.content_type not in HTML_TYPES:
                    return None  # not a page: the body is never read
                body = await _read_at_most(response, self.options.max_bytes)
                result.links = extract_links(_decode(body, response.charset), url)
                return None
        except (asyncio.TimeoutError, self._aiohttp.ClientError, OSError, ValueError) as exc:
            result.status = None
            result.error = _describe(exc)
            return 0.0 if _is_transient(exc, self._aiohttp) else None


async def _read_at_most(response, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _decode(body: bytes, charset: Optional[str]) -> str:
    try:
        return body.decode(charset or "utf-8", "replace")
    except LookupError:  # a charset Python does not know: read it as UTF-8 rather than lose the page
        return body.decode("utf-8", "replace")


def _record_redirect(url: str, status: int, location: Optional[str], result: FetchResult) -> None:
    target = normalize(urllib.parse.urljoin(url, location)) if location else None
    if target is None:
        result.error = f"HTTP {status} redirect without a usable Location ({location!r})"
    result.location = target
    return None


async def _with_retries(options: FetchOptions, get_once: Callable[[], Awaitable[Optional[float]]]) -> int:
    """Awaits get_once until it is done (returns None) or the retries are spent; returns the calls made.

    get_once returns the seconds to wait before trying again, 0 for the backoff.
    """
    for attempt in range(options.retries + 1):
        wait_s = await get_once()
        if wait_s is None or attempt == options.retries:
            return attempt + 1
        await asyncio.sleep(wait_s if wait_s > 0 else _backoff(options.backoff_s, attempt))
    return options.retries + 1


def _retry_after(header: Optional[str]) -> float:
    try:
        return min(max(float(header), 0.0), MAX_RETRY_AFTER_S) if header else 0.0
    except ValueError:  # an HTTP date: not worth parsing for a bounded retry
        return 0.0


def _backoff(base_s: float, attempt: int) -> float:
    return base_s * (2**attempt) * (0.5 + random.random())


def _cause(exc: BaseException) -> BaseException:
    """The OS error under an aiohttp connection error, else the error itself."""
    os_error = getattr(exc, "os_error", None)
    return os_error if isinstance(os_error, BaseException) else exc


def _is_transient(exc: BaseException, aiohttp) -> bool:
    cause = _cause(exc)
    if isinstance(cause, (socket.gaierror, ValueError)) or isinstance(exc, aiohttp.InvalidURL):
        return False  # unknown host, malformed URL: the same next time
    return isinstance(exc, (asyncio.TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                            ConnectionError))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    cause = _cause(exc)
    return f"{type(cause).__name__}: {cause}"


# -- for callers without an event loop: one page, a batch, robots.txt ------------------


def fetch_page(url: str, options: FetchOptions) -> FetchResult:
    """GET one URL, with a session of its own (for a one-off; a crawl keeps one session)."""
    return fetch_batch([url], options)[0]


def fetch_batch(urls: Sequence[str], options: FetchOptions, threads: int = 0) -> list[FetchResult]:
    """fetch a batch at once in a new event loop; results in the order of `urls`.

    `threads` is accepted for the thread executor's calling convention; every
    URL of the batch is in flight at once anyway.
    """

    async def run() -> list[FetchResult]:
        fetcher = PageFetcher(options)
        try:
            return list(await asyncio.gather(*(fetcher.fetch(url) for url in urls)))
        finally:
            await fetcher.close()

    return asyncio.run(run())


def fetch_text(url: str, options: FetchOptions) -> tuple[Optional[int], str, int]:
    """GET a small text resource (robots.txt): (status or None on failure, body, requests made).

    Redirects are followed here (robots.txt may move), and the body is returned
    whatever its content type. The standard library's HTTP client does it: the
    driver reads robots.txt, and so never imports aiohttp (the fetchers do).
    """
    outcome: dict = {"status": None, "body": ""}

    async def get_once() -> Optional[float]:  # blocking inside, but nothing else runs in this loop
        outcome.update(status=None, body="")
        request = urllib.request.Request(url, headers={"User-Agent": options.user_agent})
        try:
            with _TEXT_OPENER.open(request, timeout=options.timeout_s) as response:
                outcome["status"] = response.status
                outcome["body"] = _decode(response.read(options.max_bytes), response.headers.get_content_charset())
                return None
        except urllib.error.HTTPError as exc:
            outcome["status"] = exc.code
            return _retry_after(exc.headers.get("Retry-After")) if exc.code in RETRY_STATUSES else None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            cause = getattr(exc, "reason", exc)
            transient = isinstance(cause, (TimeoutError, ConnectionError)) and not isinstance(cause, socket.gaierror)
            return 0.0 if transient else None

    attempts = asyncio.run(_with_retries(options, get_once))
    return outcome["status"], outcome["body"], attempts


# Like the fetchers' aiohttp sessions, no proxy from the environment.
_TEXT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
