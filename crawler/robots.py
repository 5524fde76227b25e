"""robots.txt, read once a host, with the outcomes RFC 9309 gives each status."""

from __future__ import annotations

from typing import Callable, Optional
from urllib.robotparser import RobotFileParser

# (url) -> (status or None when unreachable, body, requests made)
TextFetcher = Callable[[str], "tuple[Optional[int], str, int]"]


class RobotsRules:
    """Answers "may this URL be fetched?" per host, fetching each robots.txt once."""

    def __init__(self, fetch_text: TextFetcher, user_agent: str) -> None:
        self._fetch_text = fetch_text
        self._user_agent = user_agent
        self._parsers: dict[str, RobotFileParser] = {}
        self.requests = 0

    def allowed(self, host: str, url: str) -> bool:
        return self._parser(host).can_fetch(self._user_agent, url)

    def crawl_delay(self, host: str) -> float:
        delay = self._parser(host).crawl_delay(self._user_agent)
        return float(delay) if delay else 0.0

    def _parser(self, host: str) -> RobotFileParser:
        parser = self._parsers.get(host)
        if parser is None:
            parser = self._parsers[host] = self._load(host)
        return parser

    def _load(self, host: str) -> RobotFileParser:
        parser = RobotFileParser(host + "/robots.txt")
        status, body, requests = self._fetch_text(host + "/robots.txt")
        self.requests += requests
        if status is not None and 200 <= status < 300:
            parser.parse(body.splitlines())
        elif status is not None and 400 <= status < 500:
            parser.allow_all = True  # no robots.txt: everything may be crawled
        else:
            parser.disallow_all = True  # unreachable or 5xx: RFC 9309 says assume "disallow all"
        return parser
