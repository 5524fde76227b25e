"""What a person reads about a crawl: a progress line while it runs, a summary after."""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict
from typing import Optional, TextIO

_BAR_WIDTH = 24


class Progress:
    """A one-line progress bar on a terminal; an occasional plain line in a log."""

    def __init__(self, stream: Optional[TextIO] = None, log_every_s: float = 5.0) -> None:
        self._stream = stream or sys.stderr
        self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()
        self._every_s = 0.1 if self._tty else log_every_s
        self._last = 0.0
        self._began = time.monotonic()
        self._depth = -1
        self._shown = False

    def __call__(self, snapshot: dict) -> None:
        now = time.monotonic()
        new_depth = snapshot["depth"] != self._depth
        if now - self._last < self._every_s and not new_depth:
            return
        self._last, self._depth = now, snapshot["depth"]
        done, pending = snapshot["fetched"], snapshot["pending"]
        filled = int(_BAR_WIDTH * done / max(done + pending, 1))
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        line = (
            f"[{bar}] depth {snapshot['depth']}  fetched {done}  queued {pending}  "
            f"pages {snapshot['pages']}  broken {snapshot['broken']}  {now - self._began:.1f}s"
        )
        if self._tty:
            self._stream.write("\r" + line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self._tty and self._shown:
            self._stream.write("\n")
            self._stream.flush()


def summarize(result: dict, broken_shown: int = 5) -> str:
    """A human summary: pages and broken links per start URL, then the totals."""
    pages_by_start: dict[str, list[dict]] = defaultdict(list)
    for page in result["pages"]:
        pages_by_start[page.get("start", "")].append(page)
    broken_by_start: dict[str, list[dict]] = defaultdict(list)
    for entry in result["broken"]:
        broken_by_start[entry.get("start", "")].append(entry)
    unfetched_by_start = Counter(entry.get("start", "") for entry in result.get("unfetched", []))
    config = result.get("config", {})
    starts = config.get("starts") or sorted(pages_by_start)

    lines = ["Pages first reached from each start URL:"]
    for start in starts:
        pages, broken = pages_by_start.get(start, []), broken_by_start.get(start, [])
        by_depth = Counter(page["depth"] for page in pages)
        depths = ", ".join(f"depth {d}: {n}" for d, n in sorted(by_depth.items()))
        line = f"  {start}  {len(pages)} pages" + (f" ({depths})" if depths else "") + f", {len(broken)} broken"
        if unfetched_by_start[start]:
            line += f", {unfetched_by_start[start]} found but left unfetched (--max-pages)"
        lines.append(line)
        for entry in broken[:broken_shown]:
            why = entry["error"] if entry.get("status") is None else f"HTTP {entry['status']}"
            where = f" on {entry['found_on']}" if entry.get("found_on") else ""
            lines.append(f"      broken: {entry['url']} ({why}){where}")
        if len(broken) > broken_shown:
            lines.append(f"      ... and {len(broken) - broken_shown} more broken links")
    stats = result["stats"]
    lines.append(
        f"Total: {stats['unique']} unique pages, {stats['fetched']} URLs fetched, {stats['failed']} failed, "
        f"in {stats['wall_s']:.1f}s ({stats['pages_per_s']:.1f} pages/s)"
    )
    if stats.get("truncated"):
        lines.append(
            f"Truncated: --max-pages {config.get('max_pages', '?')} stopped the crawl; {stats['unfetched']} URLs "
            f"found within depth {config.get('max_depth', '?')} were left unfetched. "
            "Raise --max-pages to crawl them."
        )
    extras = [f"{stats[key]} {label}" for key, label in _EXTRA_STATS if stats.get(key)]
    if extras:
        lines.append("  also: " + ", ".join(extras))
    return "\n".join(lines)


_EXTRA_STATS = (
    ("requests", "HTTP requests"),
    ("redirects", "redirects"),
    ("non_html", "non-HTML responses skipped"),
    ("blocked_by_robots", "URLs blocked by robots.txt"),
    ("fetched_in_driver", "fetched by the driver before any Ray fetcher actor answered"),
)
