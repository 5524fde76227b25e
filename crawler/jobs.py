"""Run a crawl on a Ray cluster through the Jobs API, and get its result back.

The job declares its own runtime environment: the crawler package travels as
the job's working_dir, and any pip requirements go in its "pip" list, so
nothing is installed into the cluster's pods by hand.
"""

from __future__ import annotations

import shlex
import time
import uuid
from pathlib import Path
from typing import Callable, Optional, Sequence

from .joblog import ResultMissing, is_result_line, parse_result
from .report import summarize

__all__ = ["CrawlJobError", "crawl_runtime_env", "follow_command", "submit_crawl", "summarize"]

PACKAGE_DIR = Path(__file__).resolve().parent
_POLL_S = 0.5
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


def crawl_runtime_env(pip: Optional[list[str]] = None) -> dict:
    """The job's runtime_env: the package's parent directory as working_dir, with
    everything in it but the crawler package excluded (tests, .git, other code)."""
    root = PACKAGE_DIR.parent
    excludes = [f"/{entry.name}" for entry in sorted(root.iterdir()) if entry.name != PACKAGE_DIR.name]
    excludes += ["__pycache__", "*.pyc"]
    env: dict = {"working_dir": str(root), "excludes": excludes}
    packages = requirements() if pip is None else pip
    if packages:
        env["pip"] = list(packages)
    return env


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
    on_log: Callable[[str], None] = print,
    timeout_s: float = 1800,
    follow_address: Optional[str] = None,
    follow_note: str = "",
) -> dict:
    """Submit `python -m crawler <crawl_args> --ray` as a Ray job, stream its log, return its result.

    address is the Ray dashboard, e.g. http://127.0.0.1:8265. Before the log,
    on_log gets the job's submission ID and the command that follows the job
    from elsewhere (at follow_address, when the user reaches the dashboard by
    another address than this process; follow_note says how). Raises
    CrawlJobError when the job fails, is stopped, or outlives timeout_s (it is
    then stopped).
    """
    submit = time.time()  # the client's moments, for crawler.timing
    from ray.job_submission import JobSubmissionClient  # Ray only where a job is submitted

    entrypoint = crawl_entrypoint(crawl_args)
    try:
        client = JobSubmissionClient(address)
        job_id = client.submit_job(
            entrypoint=entrypoint,
            runtime_env=crawl_runtime_env(pip),
            metadata={"app": "kindlab-crawler"},
        )
    except ConnectionError as exc:
        raise CrawlJobError(
            "(not submitted)", "UNREACHABLE",
            f"no Ray dashboard answered at {address} ({exc}); is the head service port-forwarded?",
        ) from exc
    submitted = time.time()
    on_log(f"submitted Ray job {job_id}: {entrypoint}")
    on_log(f"follow it: {follow_command(follow_address or address, job_id)}" + (f"  ({follow_note})" if follow_note else ""))
    log, info = _follow(client, job_id, on_log, timeout_s)
    try:
        result = parse_result(log)
    except ResultMissing as exc:
        raise CrawlJobError(job_id, "SUCCEEDED", f"{exc}", log[-_TAIL_LINES:]) from exc
    timing = {"submit": submit, "submitted": submitted, "done": time.time(),
              "job_start": (info.start_time or 0) / 1000 or None}  # the cluster's clock, as the job's marks
    result["job"] = {"id": job_id, "address": address, "timing": timing}
    return result


def _follow(client, job_id: str, on_log: Callable[[str], None], timeout_s: float):
    """Stream the job's new log lines to on_log until it ends; return the whole log and the job's info."""
    deadline = time.monotonic() + timeout_s
    seen = 0
    while True:
        info = client.get_job_info(job_id)
        status = info.status
        text = client.get_job_logs(job_id)
        complete = text if status.is_terminal() else text[: text.rfind("\n") + 1]
        for line in complete[seen:].splitlines():
            if not is_result_line(line):
                on_log(line)
        seen = max(seen, len(complete))
        lines = text.splitlines()
        if status.is_terminal():
            if status.value != "SUCCEEDED":
                tail = [line for line in lines if not is_result_line(line)][-_TAIL_LINES:]
                raise CrawlJobError(job_id, status.value, info.message or "no message from Ray", tail)
            return lines, info
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            tail = [line for line in lines if not is_result_line(line)][-_TAIL_LINES:]
            raise CrawlJobError(job_id, "STOPPED", f"still {status.value} after {timeout_s:.0f}s; stopped it", tail)
        time.sleep(_POLL_S)
