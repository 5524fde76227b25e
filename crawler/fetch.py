"""Fetch-and-parse: the work a crawl sends to threads or Ray tasks.

A fetch never follows a redirect itself: it reports the target and the driver
decides, against its visited set, whether the target is requested at all. That
is what keeps "every URL requested at most once" true across workers.
"""

from __future__ import annotations

import http.client
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from .parse import extract_links
from .urls import normalize

HTML_TYPES = ("text/html", "application/xhtml+xml")
# Worth another try: the server or the path to it may recover within seconds.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 10.0
# socket.timeout is TimeoutError from Python 3.10 on; a Ray image may run 3.9.
_TRANSIENT_ERRORS = (TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException)


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx code


_opener = urllib.request.build_opener(_NoRedirect)


def fetch_page(url: str, options: FetchOptions) -> FetchResult:
    """GET one URL with a timeout, retrying transient failures a bounded number of times."""
    result = FetchResult(url)
    result.attempts = _with_retries(options, lambda: _get_once(url, options, result))
    return result


def fetch_batch(urls: Sequence[str], options: FetchOptions, threads: int = 1) -> list[FetchResult]:
    """fetch_page over a batch, `threads` at a time; results in the order of `urls`.

    This is the unit of work a Ray task runs, so it takes and returns plain data.
    """
    if threads <= 1 or len(urls) <= 1:
        return [fetch_page(url, options) for url in urls]
    with ThreadPoolExecutor(max_workers=min(threads, len(urls))) as pool:
        return list(pool.map(lambda url: fetch_page(url, options), urls))


def fetch_text(url: str, options: FetchOptions) -> tuple[Optional[int], str, int]:
    """GET a small text resource (robots.txt): (status or None on failure, body, requests made).

    Redirects are followed here (robots.txt may move), and the body is returned
    whatever its content type.
    """
    request = urllib.request.Request(url, headers={"User-Agent": options.user_agent})
    outcome: dict = {"status": None, "body": ""}

    def get_once() -> Optional[float]:
        outcome.update(status=None, body="")
        try:
            with urllib.request.urlopen(request, timeout=options.timeout_s) as response:
                charset = response.headers.get_content_charset() or "utf-8"
                outcome.update(status=response.status, body=response.read(options.max_bytes).decode(charset, "replace"))
                return None
        except urllib.error.HTTPError as exc:
            with exc:
                outcome["status"] = exc.code
                return _retry_after(exc.headers.get("Retry-After")) if exc.code in RETRY_STATUSES else None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            return 0.0 if _is_transient(exc) else None

    attempts = _with_retries(options, get_once)
    return outcome["status"], outcome["body"], attempts


def _with_retries(options: FetchOptions, get_once: Callable[[], Optional[float]]) -> int:
    """Calls get_once until it is done (returns None) or the retries are spent; returns the calls made.

    get_once returns the seconds to wait before trying again, 0 for the backoff.
    """
    for attempt in range(options.retries + 1):
        wait_s = get_once()
        if wait_s is None or attempt == options.retries:
            return attempt + 1
        time.sleep(wait_s if wait_s > 0 else _backoff(options.backoff_s, attempt))
    return options.retries + 1


def _get_once(url: str, options: FetchOptions, result: FetchResult) -> Optional[float]:
    """One request; fills `result`. Returns None when done, else seconds to wait
    before a retry (0 means: use the backoff)."""
    request = urllib.request.Request(
        url,
        headers={
            "User-Agent": options.user_agent,
            "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
        },
    )
    result.error = None
    try:
        with _opener.open(request, timeout=options.timeout_s) as response:
            result.status = response.status
            # A server that sends no Content-Type is taken at its word that this is a page.
            has_type = response.headers.get("Content-Type") is not None
            result.content_type = response.headers.get_content_type() if has_type else "text/html"
            if result.content_type not in HTML_TYPES:
                return None  # not a page: the body is never read
            body = response.read(options.max_bytes)
            charset = response.headers.get_content_charset() or "utf-8"
            result.links = extract_links(body.decode(charset, "replace"), url)
            return None
    except urllib.error.HTTPError as exc:
        with exc:
            result.status = exc.code
            if 300 <= exc.code < 400:
                return _record_redirect(url, exc, result)
            result.error = f"HTTP {exc.code} {exc.reason}"
            if exc.code in RETRY_STATUSES:
                return _retry_after(exc.headers.get("Retry-After"))
            return None
    except (OSError, http.client.HTTPException, ValueError) as exc:
        result.status = None
        result.error = _describe(exc)
        return 0.0 if _is_transient(exc) else None


def _record_redirect(url: str, exc: urllib.error.HTTPError, result: FetchResult) -> None:
    location = exc.headers.get("Location")
    target = normalize(urllib.parse.urljoin(url, location)) if location else None
    if target is None:
        result.error = f"HTTP {exc.code} redirect without a usable Location ({location!r})"
    result.location = target
    return None


def _retry_after(header: Optional[str]) -> float:
    try:
        return min(max(float(header), 0.0), MAX_RETRY_AFTER_S) if header else 0.0
    except ValueError:  # an HTTP date: not worth parsing for a bounded retry
        return 0.0


def _backoff(base_s: float, attempt: int) -> float:
    return base_s * (2**attempt) * (0.5 + random.random())


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, (socket.gaierror, ValueError)):
        return False  # unknown host, malformed URL: the same next time
    return isinstance(exc, _TRANSIENT_ERRORS)


def _describe(exc: BaseException) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    return f"{type(reason).__name__}: {reason}"
