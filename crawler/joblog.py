"""The crawl result carried through a Ray job's log.

The Jobs API gives a client the job's log and nothing else, so the crawl
prints its result there: compressed, base64, in numbered lines that each carry
a marker. Ray may interleave worker output with the driver's; numbered,
self-marked lines survive that, where one long JSON line between two markers
would not.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from typing import Iterable, Optional

MARKER = "KINDLAB-CRAWL-RESULT"
_CHUNK = 3000
_LINE = re.compile(rf"^{MARKER} (\d+)/(\d+) ([A-Za-z0-9+/=]+)\s*$")


class ResultMissing(ValueError):
    """The log holds no complete crawl result."""


def result_lines(result: dict) -> list[str]:
    packed = base64.b64encode(zlib.compress(json.dumps(result, separators=(",", ":")).encode(), 6)).decode()
    chunks = [packed[i : i + _CHUNK] for i in range(0, len(packed), _CHUNK)] or [""]
    return [f"{MARKER} {n}/{len(chunks)} {chunk}" for n, chunk in enumerate(chunks, 1)]


def is_result_line(line: str) -> bool:
    return line.startswith(MARKER + " ")


def parse_result(log_lines: Iterable[str]) -> dict:
    """The result printed by `python -m crawler --emit-result`, rebuilt from a job's log."""
    chunks: dict[int, str] = {}
    total: Optional[int] = None
    for line in log_lines:
        match = _LINE.match(line)
        if match:
            chunks[int(match.group(1))] = match.group(3)
            total = int(match.group(2))
    if total is None:
        raise ResultMissing("the job log has no crawl result lines")
    missing = [n for n in range(1, total + 1) if n not in chunks]
    if missing:
        raise ResultMissing(f"the job log lacks {len(missing)} of {total} crawl result lines")
    packed = "".join(chunks[n] for n in range(1, total + 1))
    return json.loads(zlib.decompress(base64.b64decode(packed)))
