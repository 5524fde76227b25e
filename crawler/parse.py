"""Link extraction from an HTML page: a scanner for the three tags that carry links.

A general HTML parser (html.parser) costs most of a crawl's CPU on small
pages: it builds every tag and attribute of the page to keep three of them.
This module reads only what a browser would follow: <a href>, <area href> and
the first <base href>; comments and the text of <script>, <style>,
<textarea> and <title> are skipped, since a browser does not read tags there.
Attribute values are decoded (&amp;) as a browser does; markup that never
closes a tag yields nothing for that tag, and the scan goes on after it.
"""

from __future__ import annotations

import html
import re
from typing import Optional

from .urls import Resolver

_SCAN = re.compile(
    r"<!--.*?(?:-->|\Z)"  # a comment
    r"|<(script|style|textarea|title)(?=[\s/>])[^>]*>.*?(?:</\1\s*>|\Z)"  # raw text: tags in it are text
    r"|<(a|area|base)(?=[\s/>])((?:\"[^\"]*\"|'[^']*'|[^'\">])*)>",  # a tag that may carry a link
    re.S | re.I,
)
_ATTRIBUTE = re.compile(r"""([^\s/>="']+)(?:\s*=\s*("[^"]*"|'[^']*'|[^\s>]*))?""")


def _href(attributes: str) -> Optional[str]:
    """The first href among a tag's attributes, decoded, or None."""
    if "href" not in attributes.lower():
        return None
    for match in _ATTRIBUTE.finditer(attributes):
        if match.group(1).lower() == "href":
            value = match.group(2) or ""
            if value[:1] in ("'", '"'):
                value = value[1:-1]
            return html.unescape(value) if "&" in value else value
    return None


def _scan(page: str) -> tuple[Optional[str], list[str]]:
    """(the first <base href>, every <a>/<area> href in page order)."""
    base: Optional[str] = None
    hrefs: list[str] = []
    for match in _SCAN.finditer(page):
        tag = match.group(2)
        if tag is None:
            continue  # a comment or raw text
        href = _href(match.group(3))
        if href is None:
            continue
        if tag.lower() == "base":
            if base is None:
                base = href
        else:
            hrefs.append(href)
    return base, hrefs


def raw_hrefs(page: str) -> list[str]:
    """The href of every <a> and <area> on the page, as written, duplicates included."""
    return _scan(page)[1]


def extract_links(page: str, page_url: str) -> list[str]:
    """Every http(s) link on the page, absolute and normalized, once each, in page order.

    Relative links are resolved against the page's final URL, or its
    <base href> when it has one; fragments are dropped, so "a.html#x" and
    "a.html#y" are one link. External hosts are kept: scope is the caller's
    decision.
    """
    base_href, hrefs = _scan(page)
    resolver = Resolver(page_url)
    if base_href:
        resolver = Resolver(resolver.resolve(base_href) or page_url)
    links: dict[str, None] = {}
    for href in hrefs:
        url = resolver.resolve(href)
        if url is not None:
            links.setdefault(url)
    return list(links)
