"""Link extraction from an HTML page, with the standard library's tolerant parser."""

from __future__ import annotations

from html.parser import HTMLParser

from .urls import resolve

_LINK_TAGS = ("a", "area")


class _LinkCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base_href: str | None = None
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _LINK_TAGS and tag != "base":
            return
        href = dict(attrs).get("href")
        if href is None:
            return
        if tag == "base":
            if self.base_href is None:  # only the first <base> counts
                self.base_href = href
        else:
            self.hrefs.append(href)

    handle_startendtag = handle_starttag


def _collect(html: str) -> _LinkCollector:
    collector = _LinkCollector()
    collector.feed(html)
    collector.close()
    return collector


def raw_hrefs(html: str) -> list[str]:
    """The href of every <a> and <area> on the page, as written, duplicates included."""
    return _collect(html).hrefs


def extract_links(html: str, page_url: str) -> list[str]:
    """Every http(s) link on the page, absolute and normalized, once each, in page order.

    Relative links are resolved against the page's final URL, or its
    <base href> when it has one; fragments are dropped, so "a.html#x" and
    "a.html#y" are one link. External hosts are kept: scope is the caller's
    decision.
    """
    collector = _collect(html)
    base = page_url
    if collector.base_href:
        base = resolve(collector.base_href, page_url) or page_url
    links: dict[str, None] = {}
    for href in collector.hrefs:
        url = resolve(href, base)
        if url is not None:
            links.setdefault(url)
    return list(links)
