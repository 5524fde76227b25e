"""URL rules of the crawl: which links count, how they are written, what is in scope.

Pure functions, no I/O: the driver and the fetch workers both rely on them
writing one URL one way, because the visited set compares strings.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Optional
from urllib.parse import urljoin, urlsplit, urlunsplit

CRAWLABLE_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Links whose extension says "not a web page": never requested, so the crawl
# spends no request on an image or an archive. Anything else is requested and
# skipped afterwards if its Content-Type is not HTML.
_BINARY_EXTENSIONS = frozenset(
    """
    7z avi bmp bz2 css csv dmg doc docx eot exe gif gz ico iso jar jpeg jpg js json
    m4a mov mp3 mp4 mpeg ogg otf pdf png ppt pptx rar svg tar tgz tif tiff ttf txt
    wasm wav webm webp whl woff woff2 xls xlsx xml xz zip
    """.split()
)


@lru_cache(maxsize=1 << 16)  # sites repeat their absolute links on every page
def normalize(url: str) -> Optional[str]:
    """The canonical form of an absolute http(s) URL, or None for any other URL.

    Lower-cases scheme and host, drops the default port and the fragment,
    resolves "." and ".." segments, writes an empty path as "/". The query
    string is kept: "?page=2" is a different page.
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in CRAWLABLE_SCHEMES or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    if parts.username is not None:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urlunsplit((scheme, netloc, _remove_dot_segments(parts.path), parts.query, ""))


def _remove_dot_segments(path: str) -> str:
    if not path:
        return "/"
    segments = path.split("/")
    if "." not in segments and ".." not in segments:
        return path
    kept: list[str] = []
    for segment in segments:
        if segment == "..":
            if len(kept) > 1:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    if segments[-1] in (".", ".."):  # "/a/b/.." names the directory "/a/"
        kept.append("")
    clean = "/".join(kept)
    return clean if clean.startswith("/") else "/" + clean


def resolve(href: str, base: str) -> Optional[str]:
    """The absolute, normalized URL a link points to, or None if it is not http(s).

    mailto:, javascript:, tel:, data: and empty links give None; so does a bare
    fragment ("#top"), which points back at the page it sits on.
    """
    return Resolver(base).resolve(href)


_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_URL_WHITESPACE = str.maketrans("", "", "\t\r\n")  # removed from URLs, as urlsplit and browsers do


class Resolver:
    """Resolves the links of one page against its base URL, which it splits once.

    A page's links are mostly relative paths; joining those directly costs a
    fraction of urljoin + normalize, which parse the base again for every
    link. Anything else (a scheme, "//host") goes through normalize.
    """

    def __init__(self, base: str) -> None:
        base = normalize(base) or base
        parts = urlsplit(base)
        self._scheme = parts.scheme
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path or "/"
        self._directory = self._path[: self._path.rfind("/") + 1] or "/"
        self._query = parts.query
        self._base = base

    def resolve(self, href: str) -> Optional[str]:
        href = href.strip()
        if "\t" in href or "\r" in href or "\n" in href:
            href = href.translate(_URL_WHITESPACE)
        if not href or href.startswith("#"):
            return None
        if _has_scheme(href):
            scheme, rest = href.split(":", 1)
            if scheme.lower() != self._scheme or rest.startswith("//"):
                return normalize(href)
            return self._join(href)  # "http:page.html" on an http page is relative
        if href.startswith("//"):
            return normalize(f"{self._scheme}:{href}")
        path, has_query, query = href.split("#", 1)[0].rstrip().partition("?")
        if "//" in path:
            return self._join(href)  # urljoin folds empty segments of a relative path; keep its spelling
        if not path:
            path = self._path
            if not has_query:
                query = self._query
        elif not path.startswith("/"):
            path = self._directory + path
        url = self._origin + _remove_dot_segments(path)
        return f"{url}?{query}" if query else url

    def _join(self, href: str) -> Optional[str]:
        return normalize(urljoin(self._base, href))


def _has_scheme(href: str) -> bool:
    """True when href starts with "scheme:", as urlsplit reads it (a colon before any / ? #)."""
    colon = href.find(":")
    if colon <= 0:
        return False
    head = href[:colon]
    return "/" not in head and "?" not in head and "#" not in head and head[0].isalpha() \
        and all(char in _SCHEME_CHARS for char in head)


def default_prefix(start_url: str) -> str:
    """The directory of a start URL: the crawl scope when no --prefix is given."""
    url = normalize(start_url) or start_url
    parts = urlsplit(url)
    directory = parts.path[: parts.path.rfind("/") + 1] or "/"
    return urlunsplit((parts.scheme, parts.netloc, directory, "", ""))


def in_scope(url: str, prefixes: Iterable[str]) -> bool:
    """True when the (normalized) URL starts with one of the prefixes."""
    return any(url.startswith(prefix) for prefix in prefixes)


def looks_binary(url: str) -> bool:
    """True when the URL's path ends in an extension that is never an HTML page."""
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    _, dot, ext = last.rpartition(".")
    return bool(dot) and ext.lower() in _BINARY_EXTENSIONS


def host_of(url: str) -> str:
    """scheme://host[:port], the unit of politeness and of robots.txt."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
