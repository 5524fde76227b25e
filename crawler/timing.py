"""Where a crawl's seconds go: the moments a crawl marks, and the phases between them.

The driver marks moments on its own clock (epoch seconds): its process start,
the join of Ray begun (with the head start: a running Ray once the crawl goes
past its start URLs), `import ray` done, `ray.init` done, the first request,
the crawl done and the fetchers closed; beside them, when the first fetcher
actor answered (with the driver's head start, see crawler.executors, usually
after the first request: it is told aside, not a phase). A Ray job adds the client's moments (the
submission) and the job's start as the cluster records it. Every phase is the
difference of two moments on one clock, so a client and a cluster whose clocks
disagree still get true figures; the last phase (the job's end, as the client
sees it) is what remains of the client's total.
"""

from __future__ import annotations

import os
import time
from typing import Optional

# (phase, from mark, to mark): the driver's own phases, in order.
DRIVER_PHASES = (
    ("driver start", "process", "ray_imported"),  # Python, the crawler's imports, `import ray`
    ("ray.init", "ray_imported", "ray_connected"),
    ("first request", "ray_connected", "first_request"),  # the actors created, robots.txt read, first URLs sent
    ("crawl", "first_request", "crawl_done"),
    ("fetchers closed", "crawl_done", "closed"),  # only in a result written after closing (older crawlers)
)


def process_started() -> Optional[float]:
    """When this process started (epoch seconds), from /proc; None where there is no /proc."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            ticks = int(stat.read().rsplit(b")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime", "rb") as uptime:
            up = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - (up - ticks / os.sysconf("SC_CLK_TCK"))


def joined_beside(marks: dict) -> bool:
    """Whether the driver's first request came before Ray was even imported: Ray joined beside the crawl."""
    return "first_request" in marks and marks["first_request"] < marks.get("ray_imported", float("inf"))


def driver_phases(marks: dict) -> list[tuple[str, float]]:
    """The driver's phases from its marks; a phase whose marks are missing (no Ray in --local) is
    folded into the next one. A driver that joined Ray beside its first fetches (the head start in a
    job) has Ray's moments after its first request: they are told aside (fetchers_aside), not as phases."""
    if joined_beside(marks):
        marks = {k: v for k, v in marks.items() if k not in ("ray_imported", "ray_connected")}
    phases, start = [], None
    for name, begin, end in DRIVER_PHASES:
        start = marks.get(begin, start)
        if start is not None and end in marks:
            phases.append((name, max(0.0, marks[end] - start)))
            start = marks[end]
    return phases


def job_phases(result: dict, forward_s: Optional[float] = None) -> list[tuple[str, float]]:
    """A crawl job's phases, from the client's submission to the result in its hands.

    result["timing"] holds the driver's marks, result["job"]["timing"] the
    client's (submit, submitted, done: its clock) and the job's start (the
    cluster's clock).
    """
    marks, job = result.get("timing") or {}, result["job"]["timing"]
    phases = [("port-forward", forward_s)] if forward_s is not None else []
    phases.append(("submission", job["submitted"] - job["submit"]))
    driver = driver_phases(marks)
    if "process" in marks and job.get("job_start"):
        # the job's start to its driver's start: the job supervisor and the runtime environment
        phases.append(("runtime environment", max(0.0, marks["process"] - job["job_start"])))
        # the driver's last moment in the result: the crawl's end (its fetchers are closed after the result
        # is out, in the job's end); "closed" in results of crawlers that closed first
        cluster_span = marks.get("closed", marks.get("crawl_done", marks["process"])) - job["job_start"]
    else:
        cluster_span = sum(seconds for _, seconds in driver)
    phases += driver
    phases.append(("job end", max(0.0, (job["done"] - job["submitted"]) - cluster_span)))
    return phases


def fetchers_aside(result: dict) -> str:
    """When the first fetcher actor answered, and how many URLs the driver fetched before (its head start)."""
    marks, stats = result.get("timing") or {}, result.get("stats") or {}
    driver = stats.get("fetched_in_driver", 0)
    if "ray_connected" not in marks:
        if (result.get("config") or {}).get("mode") != "ray" or not driver:
            return ""
        if "ray_join" not in marks:
            return (f"the crawl went no further than its start URL(s): the driver fetched all {driver} itself, "
                    f"and Ray was not joined")
        return f"the crawl ended before the driver had joined Ray: it fetched all {driver} URL(s) itself"
    joined = (f"Ray joined beside the crawl: `import ray` done {marks['ray_imported'] - marks['process']:.2f} s "
              f"after the driver started, ray.init {marks['ray_connected'] - marks['process']:.2f} s; "
              if joined_beside(marks) and "process" in marks else "")
    if "fetchers_ready" not in marks:
        return f"{joined}no fetcher actor had answered when the crawl ended: the driver fetched all {driver} URL(s)"
    answered = marks["fetchers_ready"] - marks["ray_connected"]
    return (f"{joined}the first fetcher actor answered {answered:.2f} s after ray.init; the driver fetched "
            f"{driver} URL(s) before it")


def format_phases(phases: list[tuple[str, float]], title: str = "where the seconds went") -> str:
    width = max((len(name) for name, _ in phases), default=0)
    lines = [f"{title}:"]
    lines += [f"  {name:<{width}}  {seconds:6.2f} s" for name, seconds in phases]
    lines.append(f"  {'in all':<{width}}  {sum(s for _, s in phases):6.2f} s")
    return "\n".join(lines)


__all__ = ["DRIVER_PHASES", "process_started", "driver_phases", "job_phases", "fetchers_aside", "format_phases"]
