"""Health probes for the lab's web endpoints.

Pure functions read what Prometheus, Grafana and nginx answered and turn it
into sentences a user can act on (an empty list means healthy); `http_get`
fetches those answers, riding out the moments when a port-forward or a pod
is not quite there yet.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request
from http import HTTPStatus

from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

NGINX_WELCOME = "Welcome to nginx!"
# Upper bound on one pause between attempts, whatever `backoff` and `attempts` say.
MAX_BACKOFF_SECONDS = 30.0


class HttpGetError(RuntimeError):
    """A GET that did not produce an HTTP response worth returning.

    When the last attempt did get an answer (a 5xx), `status` and `body` hold
    it: Grafana, for one, answers /api/health with 503 and a JSON body that
    says what is wrong.
    """

    def __init__(self, message: str, status: int | None = None, body: bytes | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


# --- Prometheus ------------------------------------------------------------


def prometheus_target_problems(targets_json: dict) -> list[str]:
    """Describe every scrape target that is not up in a `/api/v1/targets` answer.

    Returns one sentence per active target whose health is "down" or
    "unknown", naming its job, scrape pool, URL and last scrape error; an
    empty list means every target is up. Raises ValueError when the answer is
    a Prometheus error or does not have the documented shape.
    """
    for index, target in enumerate(_active_targets(targets_json)):
        if not isinstance(target, dict) or not isinstance(target.get("health"), str):
            raise ValueError(
                f"Prometheus targets response: activeTargets[{index}] has no 'health' field; "
                "is this the answer of /api/v1/targets?"
            )
    return [
        describe_target(target)
        for target in targets_json["data"]["activeTargets"]
        if target["health"] != "up"
    ]


def _active_targets(targets_json: dict) -> list:
    if not isinstance(targets_json, dict):
        kind = type(targets_json).__name__
        raise ValueError(f"Prometheus targets response: expected a JSON object, got {kind}")
    status = targets_json.get("status")
    if status != "success":
        detail = targets_json.get("error") or "no error message"
        kind = targets_json.get("errorType")
        kind = f" ({kind})" if kind else ""
        raise ValueError(
            f"Prometheus targets response: status is {status!r}, not 'success'{kind}: {detail}"
        )
    data = targets_json.get("data")
    targets = data.get("activeTargets") if isinstance(data, dict) else None
    if not isinstance(targets, list):
        raise ValueError(
            "Prometheus targets response: no data.activeTargets list; "
            "is this the answer of /api/v1/targets?"
        )
    return targets


def describe_target(target: dict) -> str:
    labels = target.get("labels") if isinstance(target.get("labels"), dict) else {}
    job = labels.get("job") or target.get("scrapePool") or "unknown job"
    pool = target.get("scrapePool")
    where = f"{job} (scrape pool {pool})" if pool and pool != job else job
    url = target.get("scrapeUrl") or labels.get("instance") or "an unknown URL"
    health = target["health"]
    error = (target.get("lastError") or "").strip()
    if health == "down":
        return f"Prometheus target {where} at {url} is down: {error or 'no error recorded'}"
    if health == "unknown":
        suffix = f": {error}" if error else "; it has not been scraped yet"
        return f"Prometheus target {where} at {url} has unknown health{suffix}"
    error = error or "no error recorded"
    return f"Prometheus target {where} at {url} has health {health!r}: {error}"


# --- Grafana ---------------------------------------------------------------


def grafana_health_problems(health_json: dict) -> list[str]:
    """Describe what is wrong in a Grafana `/api/health` answer; empty means healthy.

    Grafana answers {"commit": ..., "database": "ok", "version": ...} with
    200 when it can use its database, and "database": "failing" with 503 when
    it cannot (http_get then raises HttpGetError carrying that body). Raises
    ValueError when the answer has no "database" field.
    """
    if not isinstance(health_json, dict) or "database" not in health_json:
        raise ValueError(
            "Grafana health response: no 'database' field; is this the answer of /api/health?"
        )
    database = health_json["database"]
    if database == "ok":
        return []
    version = health_json.get("version")
    version = f" {version}" if version else ""
    return [
        f"Grafana{version} reports its database as {database!r}, not 'ok'; "
        "check the Grafana pod's logs and its storage"
    ]


# --- nginx -----------------------------------------------------------------


def nginx_welcome_ok(html: str) -> bool:
    """Whether `html` is nginx's default welcome page."""
    return NGINX_WELCOME in html


# --- HTTP ------------------------------------------------------------------


class _ServerError(Exception):
    """A 5xx answer: the server is there but not ready, so worth another try."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"HTTP {status} {_reason_phrase(status)}".rstrip())
        self.status = status
        self.body = body


def http_get(
    url: str, timeout: float = 5.0, attempts: int = 5, backoff: float = 0.5, data: bytes | None = None
) -> tuple[int, bytes]:
    """GET `url` (POST `data`, where given) and return (status, body).

    Retries up to `attempts` times, waiting `backoff`, 2*`backoff`,
    4*`backoff`... between tries, when the connection is refused, reset, closed
    before the request was written or times out, or the server answers 5xx: what a starting pod or a fresh
    port-forward looks like. A 4xx answer is returned at once, not retried:
    asking again would not change it. Raises HttpGetError naming the URL and
    the last error when no usable answer came.
    """
    if attempts < 1:
        raise ValueError(f"http_get: attempts must be at least 1, got {attempts}")
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff, max=MAX_BACKOFF_SECONDS),
        retry=retry_if_exception(_is_transient),
    )
    shown = _redact(url)
    try:
        return retrying(_get_once, url, timeout, data)
    except RetryError as err:
        last = err.last_attempt
        cause = last.exception()
        tries = "1 attempt" if last.attempt_number == 1 else f"{last.attempt_number} attempts"
        raise HttpGetError(
            f"{'POST' if data is not None else 'GET'} {shown}: no usable answer after {tries}; "
            f"last error: {_describe(cause, timeout)}",
            status=getattr(cause, "status", None),
            body=getattr(cause, "body", None),
        ) from cause
    except (OSError, ValueError, http.client.HTTPException) as err:
        # Not worth retrying: a bad URL, an unknown host name, a TLS failure.
        raise HttpGetError(f"{'POST' if data is not None else 'GET'} {shown} failed: {_describe(err, timeout)}") from err


def _get_once(url: str, timeout: float, data: bytes | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        with err:
            if err.code >= 500:
                raise _ServerError(err.code, err.read()) from err
            return err.code, err.read()


def _is_transient(err: BaseException) -> bool:
    if isinstance(err, _ServerError):
        return True
    if isinstance(err, urllib.error.URLError) and isinstance(err.reason, BaseException):
        err = err.reason
    # ConnectionError: refused, reset (http.client.RemoteDisconnected too), aborted, and a broken pipe:
    # the far end closed the connection before the request was written, as kind's port mapping does
    # while a Service's old pod is going.
    return isinstance(err, (ConnectionError, TimeoutError))


def _describe(err: BaseException, timeout: float) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (nothing is listening there yet)"
    if isinstance(err, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(err, BrokenPipeError):
        return "the server closed the connection before the request was written"
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout:g}s"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _redact(url: str) -> str:
    """The URL without any password in it, fit for an error message."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
