"""Run a crawl on a Ray cluster through the Jobs API, and get its result back.

The job declares its own runtime environment: the crawler package travels as
the job's working_dir (unless the cluster's image has this very crawler
installed: kindlab's Ray image), and any pip requirements go in its "pip"
list, so nothing is installed into the cluster's pods by hand.

The Jobs API is Ray's documented REST API (submit, job info, logs, stop),
spoken here over the standard library's HTTP client: a job that ships nothing
is submitted and followed without importing Ray, which costs a second of CPU.
Only a working_dir to upload takes Ray's own client (it zips and uploads it).
"""

from __future__ import annotations

import json
import shlex
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence

from .joblog import MARKER, ResultMissing, is_result_line, parse_result
from .report import summarize

__all__ = ["CrawlJobError", "crawl_runtime_env", "follow_command", "submit_crawl", "summarize"]

PACKAGE_DIR = Path(__file__).resolve().parent
# The log and status are polled quickly while a job is young, so a short crawl's end is seen at once,
# and every _POLL_S later, so a long one costs the head little.
_POLL_FAST_S, _FAST_FOR_S, _POLL_S = 0.1, 10.0, 0.5
_HTTP_TIMEOUT_S = 30
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_TAIL_LINES = 30
# Flags submit_crawl sets itself: a caller passing them would fight the job's plumbing.
_RESERVED_FLAGS = ("--local", "--emit-result", "--ray-address")


class CrawlJobError(RuntimeError):
    """A crawl job that did not give a result: names the job, its status and its last log lines."""

    def __init__(self, job_id: str, status: str, reason: str, log_tail: Sequence[str] = ()):
        self.job_id, self.status, self.log_tail = job_id, status, list(log_tail)
        message = f"Ray crawl job {job_id} {status}: {reason}"
        if self.log_tail:
            message += "\nlast log lines:\n" + "\n".join("  " + line for line in self.log_tail)
        super().__init__(message)


def requirements(path: Path = PACKAGE_DIR / "requirements.txt") -> list[str]:
    """The crawler's pip requirements beyond Ray: the non-comment lines of requirements.txt."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def crawl_runtime_env(pip: Optional[list[str]] = None, ship_package: bool = True) -> dict:
    """The job's runtime_env: the package's parent directory as working_dir, with
    everything in it but the crawler package excluded (tests, .git, other code);
    nothing of the package where the cluster's image has it (ship_package=False)."""
    env: dict = {}
    if ship_package:
        root = PACKAGE_DIR.parent
        excludes = [f"/{entry.name}" for entry in sorted(root.iterdir()) if entry.name != PACKAGE_DIR.name]
        env = {"working_dir": str(root), "excludes": excludes + ["__pycache__", "*.pyc"]}
    packages = requirements() if pip is None else pip
    if packages:
        env["pip"] = list(packages)
    return env


class JobsAPI:
    """Ray's Jobs REST API at `address` (the dashboard, e.g. http://127.0.0.1:8265)."""

    def __init__(self, address: str) -> None:
        self.address = address.rstrip("/")

    def submit_job(self, entrypoint: str, runtime_env: dict, metadata: dict) -> str:
        """The job's submission ID. A local working_dir goes through Ray's client, which uploads it."""
        if "working_dir" in runtime_env:
            from ray.job_submission import JobSubmissionClient  # imports Ray: only where a package travels

            return JobSubmissionClient(self.address).submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                                                metadata=metadata)
        body = {"entrypoint": entrypoint, "runtime_env": runtime_env, "metadata": metadata}
        return self._call("POST", "/api/jobs/", body)["submission_id"]

    def get_job_info(self, job_id: str) -> dict:
        """status, message, start_time (ms, the cluster's clock), ... as the API answers."""
        return self._call("GET", f"/api/jobs/{job_id}")

    def get_job_logs(self, job_id: str) -> str:
        return self._call("GET", f"/api/jobs/{job_id}/logs")["logs"]

    def stop_job(self, job_id: str) -> None:
        self._call("POST", f"/api/jobs/{job_id}/stop")

    def _call(self, method: str, path: str, body: Optional[dict] = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.address + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with _OPENER.open(request, timeout=_HTTP_TIMEOUT_S) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace").strip()[-500:]
            raise JobsAPIError(f"{method} {path} answered HTTP {exc.code}: {detail or exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ConnectionError(f"{getattr(exc, 'reason', exc)}") from None


class JobsAPIError(RuntimeError):
    """The Jobs API answered, with an error."""


# The lab's dashboard is reached directly (a port-forward on 127.0.0.1): no proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def crawl_entrypoint(crawl_args: Sequence[str]) -> str:
    """The job's shell command: the crawl in Ray mode, printing its result into the log."""
    for flag in crawl_args:
        if flag.split("=", 1)[0] in _RESERVED_FLAGS:
            raise ValueError(f"submit_crawl sets {flag.split('=', 1)[0]} itself; leave it out of crawl_args")
    args = list(crawl_args)
    if "--ray" not in args:
        args.append("--ray")
    if not any(arg == "--json" or arg.startswith("--json=") for arg in args):
        args += ["--json", f"/tmp/kindlab-crawl-{uuid.uuid4().hex[:12]}.json"]  # kept on the head for a look later
    return shlex.join(["python", "-m", "crawler", *args, "--emit-result"])


def follow_command(address: str, job_id: str) -> str:
    """The command that streams a job's log from another terminal."""
    return shlex.join(["ray", "job", "logs", "--follow", "--address", address, job_id])


def submit_crawl(
    address: str,
    crawl_args: list[str],
    *,
    pip: Optional[list[str]] = None,
    ship_package: bool = True,
    on_log: Callable[[str], None] = print,
    timeout_s: float = 1800,
    follow_address: Optional[str] = None,
    follow_note: str = "",
) -> dict:
    """Submit `python -m crawler <crawl_args> --ray` as a Ray job, stream its log, return its result.

    address is the Ray dashboard, e.g. http://127.0.0.1:8265. ship_package=False
    where the cluster's image has this crawler installed (kindlab's Ray image):
    no working_dir travels. Before the log, on_log gets the job's submission ID
    and the command that follows the job from elsewhere (at follow_address, when
    the user reaches the dashboard by another address than this process;
    follow_note says how). Raises CrawlJobError when the job fails, is stopped,
    or outlives timeout_s (it is then stopped).
    """
    submit = time.time()  # the client's moments, for crawler.timing
    entrypoint = crawl_entrypoint(crawl_args)
    client = JobsAPI(address)
    try:
        job_id = client.submit_job(entrypoint, crawl_runtime_env(pip, ship_package), {"app": "kindlab-crawler"})
    except ConnectionError as exc:
        raise CrawlJobError(
            "(not submitted)", "UNREACHABLE",
            f"no Ray dashboard answered at {address} ({exc}); is the head service port-forwarded?",
        ) from exc
    except JobsAPIError as exc:
        raise CrawlJobError("(not submitted)", "REFUSED", f"the Jobs API at {address} refused the job: {exc}") from exc
    submitted = time.time()
    on_log(f"submitted Ray job {job_id}: {entrypoint}")
    on_log(f"follow it: {follow_command(follow_address or address, job_id)}" + (f"  ({follow_note})" if follow_note else ""))
    log, info = _follow(client, job_id, on_log, timeout_s)
    try:
        result = parse_result(log)
    except ResultMissing as exc:
        raise CrawlJobError(job_id, "SUCCEEDED", f"{exc}", log[-_TAIL_LINES:]) from exc
    timing = {"submit": submit, "submitted": submitted, "done": time.time(),
              "job_start": (info.get("start_time") or 0) / 1000 or None}  # the cluster's clock, as the job's marks
    result["job"] = {"id": job_id, "address": address, "timing": timing, "package_shipped": ship_package}
    return result


def _result_complete(log: str) -> bool:
    if MARKER not in log:
        return False
    try:
        parse_result(log.splitlines())
        return True
    except (ResultMissing, ValueError):  # lines still coming: a chunk cut short fails to decode
        return False


def _follow(client: JobsAPI, job_id: str, on_log: Callable[[str], None], timeout_s: float):
    """Stream the job's new log lines to on_log until it ends; return the whole log and the job's info."""
    began = time.monotonic()
    seen = 0
    while True:
        try:
            info = client.get_job_info(job_id)
            text = client.get_job_logs(job_id)
        except (ConnectionError, JobsAPIError) as exc:
            raise CrawlJobError(job_id, "UNKNOWN", f"the Jobs API at {client.address} stopped answering ({exc}); "
                                f"the job may still run: {follow_command(client.address, job_id)}") from exc
        status = info.get("status", "")
        terminal = status in _TERMINAL
        complete = text if terminal else text[: text.rfind("\n") + 1]
        for line in complete[seen:].splitlines():
            if not is_result_line(line):
                on_log(line)
        seen = max(seen, len(complete))
        lines = text.splitlines()
        if not terminal and _result_complete(complete):
            # the driver prints its result last: the crawl is in hand, and waiting for the job's status to
            # say SUCCEEDED (its process ending, the supervisor noticing) only costs the caller time
            return lines, info
        if terminal:
            if status != "SUCCEEDED":
                tail = [line for line in lines if not is_result_line(line)][-_TAIL_LINES:]
                raise CrawlJobError(job_id, status, info.get("message") or "no message from Ray", tail)
            return lines, info
        elapsed = time.monotonic() - began
        if elapsed > timeout_s:
            client.stop_job(job_id)
            tail = [line for line in lines if not is_result_line(line)][-_TAIL_LINES:]
            raise CrawlJobError(job_id, "STOPPED", f"still {status} after {timeout_s:.0f}s; stopped it", tail)
        time.sleep(_POLL_FAST_S if elapsed < _FAST_FOR_S else _POLL_S)
