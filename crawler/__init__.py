"""kindlab's web crawler: a streaming breadth-first frontier, fetches in an event loop or Ray actors.

`kindlab-crawl --help` (or `python -m crawler --help`) for the command line;
crawler.jobs submits a crawl to a Ray cluster through the Jobs API. It needs
aiohttp, which ray[default] brings, and Ray for --ray.
"""

from .crawl import Crawl, CrawlConfig, CrawlError, crawl
from .fetch import FetchOptions, FetchResult, fetch_batch, fetch_page
from .parse import extract_links
from .report import summarize
from .urls import normalize, resolve

__all__ = [
    "Crawl",
    "CrawlConfig",
    "CrawlError",
    "FetchOptions",
    "FetchResult",
    "crawl",
    "extract_links",
    "fetch_batch",
    "fetch_page",
    "normalize",
    "resolve",
    "summarize",
]
