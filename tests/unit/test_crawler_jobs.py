"""The Ray Jobs side of the crawler, without Ray: entrypoint, runtime_env, log streaming, result transport."""

from __future__ import annotations

import hashlib
import shlex
import time
import zipfile
from pathlib import Path

import pytest

from crawler import jobs
from crawler.cli import build_parser, config_from_args, main
from crawler.jobs import CrawlJobError, crawl_entrypoint, crawl_runtime_env, summarize
from playbooks.core.deadline import Deadline

ROOT = Path(__file__).resolve().parents[2]
from crawler.joblog import ResultMissing, parse_result, result_lines

RESULT = {
    "config": {"starts": ["http://a.test/", "http://a.test/b/"]},
    "pages": [
        {"url": "http://a.test/", "final_url": "http://a.test/", "status": 200, "depth": 0, "start": "http://a.test/",
         "links": ["http://a.test/x"]},
        {"url": "http://a.test/x", "final_url": "http://a.test/x/", "status": 200, "depth": 1,
         "start": "http://a.test/", "links": []},
        {"url": "http://a.test/b/", "final_url": "http://a.test/b/", "status": 200, "depth": 0,
         "start": "http://a.test/b/", "links": []},
    ],
    "broken": [{"url": "http://a.test/gone", "status": 404, "error": "HTTP 404", "found_on": "http://a.test/",
                "depth": 1, "start": "http://a.test/"}],
    "stats": {"fetched": 4, "unique": 3, "failed": 1, "wall_s": 0.5, "pages_per_s": 6.0, "requests": 5},
}


# -- the result through the job log -------------------------------------------------


def big_result(pages: int = 3000) -> dict:
    """A result too large for one log line: page URLs that do not compress away."""
    urls = [f"http://a.test/{hashlib.sha256(str(n).encode()).hexdigest()}" for n in range(pages)]
    return dict(RESULT, pages=[dict(RESULT["pages"][0], url=url, final_url=url) for url in urls])


def test_result_survives_the_log_with_other_lines_interleaved():
    big = big_result()
    lines = result_lines(big)
    assert len(lines) > 2
    log = ["(fetch_batch pid=1) a worker line"]
    for line in lines:
        log += [line, "2026-01-01 INFO something else"]
    assert parse_result(reversed(log)) == big


def test_a_missing_result_line_is_an_error_not_a_partial_result():
    lines = result_lines(big_result())
    with pytest.raises(ResultMissing, match="lacks 1 of"):
        parse_result(lines[:1] + lines[2:])
    with pytest.raises(ResultMissing, match="no crawl result"):
        parse_result(["just a log"])


# -- the job it submits ----------------------------------------------------------------


def test_entrypoint_runs_the_crawl_in_ray_mode_and_prints_the_result():
    argv = shlex.split(crawl_entrypoint(["http://a.test/", "--depth", "2", "--prefix", "http://a.test/ x"]))
    assert argv[:4] == ["python", "-m", "crawler", "http://a.test/"]
    assert "http://a.test/ x" in argv  # quoted for the shell
    assert {"--ray", "--emit-result", "--json"} <= set(argv)
    build_parser().parse_args(argv[3:])  # the crawler accepts what the job runs


def test_entrypoint_keeps_a_callers_json_path_and_refuses_local_mode():
    argv = shlex.split(crawl_entrypoint(["http://a.test/", "--json", "/data/out.json"]))
    assert argv.count("--json") == 1 and "/data/out.json" in argv
    with pytest.raises(ValueError, match="--local"):
        crawl_entrypoint(["http://a.test/", "--local"])


def test_runtime_env_ships_the_crawler_package_and_nothing_else(tmp_path):
    env = crawl_runtime_env()
    assert env["working_dir"] == str(jobs.PACKAGE_DIR.parent)
    assert "pip" not in env  # the crawler needs nothing beyond the standard library and Ray
    # Zip it the way Ray does, to see exactly what a job would upload.
    from ray._private.runtime_env.packaging import create_package

    create_package(env["working_dir"], tmp_path / "job.zip", excludes=env["excludes"])
    names = zipfile.ZipFile(tmp_path / "job.zip").namelist()
    assert "crawler/__main__.py" in names and "crawler/jobs.py" in names
    assert [name for name in names if not name.startswith("crawler/")] == []
    assert not [name for name in names if "__pycache__" in name]


def test_runtime_env_pip_list_comes_from_the_caller_when_given():
    assert crawl_runtime_env(pip=["lxml==5.3.0"])["pip"] == ["lxml==5.3.0"]


# -- following a job, with a fake Jobs API client ---------------------------------------


class FakeJobs:
    """Plays a job's life through the Jobs API's calls: each poll of the job's info moves one step through
    `steps` (status, log so far)."""

    def __init__(self, steps):
        self.steps = steps
        self.polls = 0
        self.stopped = []
        self.submitted = {}
        self.started_ms = int(time.time() * 1000)
        self.address = "http://127.0.0.1:8265"

    def submit_job(self, entrypoint, runtime_env, metadata):
        self.submitted = {"entrypoint": entrypoint, "runtime_env": runtime_env, "metadata": metadata}
        return "raysubmit_fake"

    def get_job_info(self, job_id):
        self.polls = min(self.polls + 1, len(self.steps))
        return {"status": self.steps[self.polls - 1][0], "start_time": self.started_ms,
                "message": "Job entrypoint command failed with exit code 2"}

    def get_job_logs(self, job_id):
        return self.steps[self.polls - 1][1]

    def stop_job(self, job_id):
        self.stopped.append(job_id)


@pytest.fixture
def fake_jobs(monkeypatch):
    """Installs a FakeJobs as crawler.jobs' Jobs API client; returns a setter."""
    holder = {}

    def install(steps):
        holder["client"] = FakeJobs(steps)
        monkeypatch.setattr(jobs, "JobsAPI", lambda address: holder["client"])
        return holder["client"]

    monkeypatch.setattr(jobs, "_POLL_FAST_S", 0.0)
    monkeypatch.setattr(jobs, "_POLL_S", 0.0)
    return install


def test_submit_crawl_streams_new_lines_once_and_returns_the_result(fake_jobs):
    done = "starting\ncrawling\n" + "\n".join(result_lines(RESULT)) + "\nTotal: 3 pages\n"
    client = fake_jobs(
        [
            ("PENDING", ""),
            ("RUNNING", "starting\ncrawl"),  # a line still being written is held back
            ("RUNNING", "starting\ncrawling\n"),
            ("SUCCEEDED", done),
        ]
    )
    seen = []
    result = jobs.submit_crawl("http://127.0.0.1:8265", ["http://a.test/"], on_log=seen.append, timeout_s=30)
    assert seen[0].startswith("submitted Ray job raysubmit_fake: python -m crawler http://a.test/")
    assert seen[1] == "follow it: ray job logs --follow --address http://127.0.0.1:8265 raysubmit_fake"
    assert seen[2:] == ["starting", "crawling", "Total: 3 pages"]
    assert result["pages"] == RESULT["pages"]
    assert (result["job"]["id"], result["job"]["address"]) == ("raysubmit_fake", "http://127.0.0.1:8265")
    timing = result["job"]["timing"]  # the client's moments and the job's start, for the --verbose breakdown
    assert timing["submit"] <= timing["submitted"] <= timing["done"] and timing["job_start"] == client.started_ms / 1000
    assert client.submitted["runtime_env"]["working_dir"] == str(jobs.PACKAGE_DIR.parent)


def test_the_result_in_the_log_ends_the_wait_before_the_job_says_succeeded(fake_jobs):
    """The driver prints its result last: the job's status turns SUCCEEDED only after its process ends and
    the supervisor notices (0.3-0.5 s measured on the lab), time the caller need not wait."""
    whole = "Total: 3 pages\n" + "\n".join(result_lines(RESULT)) + "\n"
    half = "Total: 3 pages\n" + result_lines(RESULT)[0][:20]  # a result line still being written
    client = fake_jobs([("RUNNING", half), ("RUNNING", whole), ("SUCCEEDED", whole)])
    result = jobs.submit_crawl("http://127.0.0.1:8265", ["http://a.test/"], on_log=lambda line: None, timeout_s=30)
    assert result["pages"] == RESULT["pages"]
    assert client.polls == 2


def test_failed_job_raises_with_id_status_reason_and_last_lines(fake_jobs):
    fake_jobs([("RUNNING", "a\n"), ("FAILED", "a\ncrawler: start URL is outside the prefix\n")])
    with pytest.raises(CrawlJobError) as caught:
        jobs.submit_crawl("http://127.0.0.1:8265", ["http://a.test/"], on_log=lambda line: None)
    error = caught.value
    assert (error.job_id, error.status) == ("raysubmit_fake", "FAILED")
    assert "exit code 2" in str(error) and "outside the prefix" in str(error)


def test_job_that_outlives_the_timeout_is_stopped(fake_jobs):
    client = fake_jobs([("RUNNING", "still going\n")])
    with pytest.raises(CrawlJobError, match="still RUNNING after 0s; stopped it"):
        jobs.submit_crawl("http://127.0.0.1:8265", ["http://a.test/"], on_log=lambda line: None, timeout_s=0)
    assert client.stopped == ["raysubmit_fake"]


def test_succeeded_job_without_a_result_is_an_error(fake_jobs):
    fake_jobs([("SUCCEEDED", "no result here\n")])
    with pytest.raises(CrawlJobError, match="no crawl result"):
        jobs.submit_crawl("http://127.0.0.1:8265", ["http://a.test/"], on_log=lambda line: None)


def test_unreachable_dashboard_says_what_to_check():
    with pytest.raises(CrawlJobError, match="no Ray dashboard answered at http://127.0.0.1:9"):
        jobs.submit_crawl("http://127.0.0.1:9", ["http://a.test/"], on_log=lambda line: None)


# -- what a person reads ------------------------------------------------------------------


def test_summary_is_per_start_url():
    text = summarize(RESULT)
    lines = text.splitlines()
    assert lines[1] == "  http://a.test/  2 pages (depth 0: 1, depth 1: 1), 1 broken"
    assert lines[2] == "      broken: http://a.test/gone (HTTP 404) on http://a.test/"
    assert lines[3] == "  http://a.test/b/  1 pages (depth 0: 1), 0 broken"
    assert "Total: 3 unique pages, 4 URLs fetched, 1 failed" in text


TRUNCATED = dict(
    RESULT,
    config=dict(RESULT["config"], max_pages=4, max_depth=3),
    unfetched=[{"url": f"http://a.test/u{n}", "depth": 2, "start": "http://a.test/", "found_on": "http://a.test/x"}
               for n in range(5)],
    stats=dict(RESULT["stats"], truncated=True, unfetched=5),
)


def test_summary_of_a_crawl_cut_by_max_pages_says_so_in_words():
    text = summarize(TRUNCATED)
    lines = text.splitlines()
    assert lines[1] == ("  http://a.test/  2 pages (depth 0: 1, depth 1: 1), 1 broken, "
                        "5 found but left unfetched (--max-pages)")
    assert lines[3] == "  http://a.test/b/  1 pages (depth 0: 1), 0 broken"
    assert ("Truncated: --max-pages 4 stopped the crawl; 5 URLs found within depth 3 were left unfetched. "
            "Raise --max-pages to crawl them.") in lines


def test_summary_of_a_whole_crawl_says_nothing_of_truncation():
    assert "Truncated" not in summarize(dict(RESULT, unfetched=[], stats=dict(RESULT["stats"], truncated=False)))
    assert "left unfetched" not in summarize(RESULT)


def test_cli_options_become_the_crawl_config():
    args = build_parser().parse_args(
        ["http://a.test/", "http://a.test/b/", "--prefix", "http://a.test/", "--depth", "3", "--max-pages", "50",
         "--concurrency", "4", "--per-host", "2", "--no-robots", "--timeout", "1.5", "--retries", "0", "--local"]
    )
    config = config_from_args(args)
    assert config.starts == ("http://a.test/", "http://a.test/b/")
    assert (config.max_depth, config.max_pages, config.concurrency, config.per_host) == (3, 50, 4, 2)
    assert (config.respect_robots, config.fetch.timeout_s, config.fetch.retries) == (False, 1.5, 0)


@pytest.mark.parametrize("argv", [["http://a.test/", "--ray", "--local"], ["http://a.test/", "--depth", "-1"],
                                  ["http://a.test/", "--concurrency", "0"], []])
def test_cli_rejects_bad_options(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2


def test_cli_start_outside_prefix_exits_2_with_a_sentence(capsys):
    assert main(["http://a.test/blog/", "--prefix", "http://a.test/docs/", "--quiet"]) == 2
    assert "start URL http://a.test/blog/ is outside the prefix http://a.test/docs/" in capsys.readouterr().err


def test_cli_ctrl_c_is_one_line_and_exit_130_with_the_fetchers_closed(capsys, monkeypatch):
    from crawler import cli, executors

    closed = []
    monkeypatch.setattr(cli.Crawl, "run", lambda self, executor: (_ for _ in ()).throw(KeyboardInterrupt()))
    monkeypatch.setattr(executors.AsyncExecutor, "close", lambda self: closed.append(True))
    assert main(["http://a.test/", "--quiet", "--per-host", "16"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["crawler: interrupted"] and closed == [True]


def test_progress_in_a_log_is_a_line_per_depth_not_per_page():
    import io

    from crawler.report import Progress

    stream = io.StringIO()
    progress = Progress(stream, log_every_s=60)
    for depth, fetched in [(0, 1), (1, 2), (1, 3), (1, 4), (2, 5)]:
        progress({"depth": depth, "fetched": fetched, "pending": 10 - fetched, "pages": fetched, "broken": 0})
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert [line.split("]")[1].split()[:4] for line in lines] == [
        ["depth", "0", "fetched", "1"], ["depth", "1", "fetched", "2"], ["depth", "2", "fetched", "5"],
    ]


# -- invoke ray.crawl: the step that submits the job ------------------------------------------


def test_crawl_step_prints_the_job_id_and_how_to_follow_it_then_whole_log_lines(fake_jobs):
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from playbooks.ray import crawl_args, crawl_steps

    long_line = "crawler: " + "x" * 150 + " [not markup] " + "/".join(f"segment{n}" for n in range(30))
    done = f"starting\n{long_line}\n" + "\n".join(result_lines(TRUNCATED)) + "\n"
    fake_jobs([("RUNNING", f"starting\n{long_line}\n"), ("SUCCEEDED", done)])
    out = io.StringIO()
    console = Console(file=out, width=80, highlight=False)
    said = []
    steps = crawl_steps(SimpleNamespace(provider="kind", timeout=60, verbose=False), crawl_args(["http://a.test/"], "", 2, 10, 4),
                        address="http://127.0.0.1:8265", show=console.print)
    detail = steps[0].apply(SimpleNamespace(say=said.append, deadline=Deadline.after(60)))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("submitted Ray job raysubmit_fake:")
    follow = next(n for n, line in enumerate(lines) if line.startswith("follow it:"))
    assert " ".join(lines[follow:follow + 2]).startswith(
        "follow it: ray job logs --follow --address http://127.0.0.1:8265 raysubmit_fake")
    assert follow < lines.index("starting")
    assert long_line in "".join(out.getvalue().split("\n"))  # wrapped at 80 columns, nothing cut
    assert "Truncated: --max-pages 4" in " ".join(lines)
    assert "cut by --max-pages, 5 URLs left unfetched" in detail
    assert said and all(len(message) < 80 for message in said)


def test_with_verbose_the_crawl_step_says_where_the_jobs_seconds_went(fake_jobs):
    from types import SimpleNamespace

    from playbooks.ray import crawl_args, crawl_steps

    now = time.time()
    marks = {"process": now, "ray_imported": now + 0.5, "ray_connected": now + 0.8, "fetchers_ready": now + 1.2,
             "first_request": now + 1.3, "crawl_done": now + 1.6, "closed": now + 1.7}
    fake_jobs([("SUCCEEDED", "\n".join(result_lines(dict(RESULT, timing=marks))) + "\n")])
    shown = []
    steps = crawl_steps(SimpleNamespace(provider="kind", timeout=60, verbose=True),
                        crawl_args(["http://a.test/"], "", 2, 10, 4), address="http://127.0.0.1:8265",
                        show=lambda text: shown.append(str(text)))
    steps[0].apply(SimpleNamespace(say=lambda message: None, deadline=Deadline.after(60)))
    breakdown = shown[-1].splitlines()
    assert breakdown[0] == "where the crawl job's seconds went (the crawler shipped as working_dir):"
    assert breakdown[-1] == "  (the first fetcher actor answered 0.40 s after ray.init; the driver fetched 0 URL(s) before it)"
    assert [line.split("  ")[1].strip() for line in breakdown[1:-1]] == [
        "submission", "runtime environment", "driver start", "ray.init", "first request", "crawl",
        "fetchers closed", "job end", "in all"]
    assert "  crawl                  0.30 s" in breakdown


def test_crawl_args_let_concurrency_reach_one_host():
    from playbooks.ray import crawl_args

    args = build_parser().parse_args(crawl_args(["http://a.test/"], "", 2, 10, 32))
    assert (args.concurrency, args.per_host) == (32, 32)


NOTHING = {"config": {"starts": ["http://docs.test/"]}, "pages": [], "broken": [],
           "stats": {"fetched": 0, "unique": 0, "failed": 0, "wall_s": 0.3, "pages_per_s": 0.0, "requests": 1,
                     "blocked_by_robots": 1}}


def test_a_crawl_that_fetched_nothing_fails_and_says_why(fake_jobs):
    """An offline lab crawling a site out of reach: robots.txt unreadable, so the start URL is blocked
    (RFC 9309). The job succeeds on nothing; the step must not report it as a crawl."""
    from types import SimpleNamespace

    from playbooks.core.steps import StepFailed
    from playbooks.ray import crawl_args, crawl_steps

    fake_jobs([("SUCCEEDED", "\n".join(result_lines(NOTHING)) + "\n")])
    steps = crawl_steps(SimpleNamespace(provider="kind", timeout=60, verbose=False), crawl_args(["http://docs.test/"], "", 2, 10, 4),
                        address="http://127.0.0.1:8265", show=lambda text: None)
    with pytest.raises(StepFailed, match=r"fetched no page: its start URL was blocked by robots.txt.*"
                                         r"the host not reached from the cluster.*invoke ray.crawl --url URL"):
        steps[0].apply(SimpleNamespace(say=lambda message: None, deadline=Deadline.after(60)))


def test_offline_the_default_crawl_is_pythons_docs_inside_the_cluster_whole_and_online_rays_docs():
    from playbooks import ray
    from playbooks.core.settings import Lab

    offline = ray.default_crawl(Lab(offline=True))
    assert offline.urls == ("http://python-docs.ray.svc.cluster.local/",)  # the Service the ray part makes
    assert offline.max_pages > 518  # the site's pages within its depth: none left out
    assert ray.default_crawl(Lab()).urls == ("https://docs.ray.io/en/latest/",)
    documents = ray.site_documents("kindlab.local/python-docs:x")
    assert [(d["kind"], d["metadata"]["name"], d["metadata"]["namespace"]) for d in documents] == [
        ("Deployment", "python-docs", "ray"), ("Service", "python-docs", "ray")]


def test_the_summary_the_crawler_printed_in_the_jobs_log_is_not_printed_again(fake_jobs):
    """Seen on the real cluster: the crawler's summary, streamed from the job's log, then kindlab's copy."""
    from types import SimpleNamespace

    from playbooks.ray import crawl_args, crawl_steps

    summary = summarize(RESULT)
    fake_jobs([("SUCCEEDED", summary + "\n" + "\n".join(result_lines(RESULT)) + "\n")])
    shown = []
    steps = crawl_steps(SimpleNamespace(provider="kind", timeout=60, verbose=False), crawl_args(["http://a.test/"], "", 2, 10, 4),
                        address="http://127.0.0.1:8265", show=lambda text: shown.append(str(text)))
    steps[0].apply(SimpleNamespace(say=lambda message: None, deadline=Deadline.after(60)))
    lines = [line for text in shown for line in text.splitlines()]
    assert sum(line.startswith("Total: ") for line in lines) == 1, shown


# -- where a crawl job's seconds go (ray.crawl --verbose) -----------------------------------


def test_the_breakdown_adds_up_to_the_clients_wall_time_even_when_the_clusters_clock_is_off():
    from crawler import timing

    skew = 1000.0  # the cluster's clock runs 1000 s ahead of the client's
    job_start = 100.4 + skew
    marks = {"process": job_start + 2.0, "ray_imported": job_start + 3.0, "ray_connected": job_start + 3.5,
             "fetchers_ready": job_start + 4.5, "first_request": job_start + 4.6, "crawl_done": job_start + 8.0,
             "closed": job_start + 8.2}
    result = {"timing": marks, "job": {"timing": {"submit": 100.0, "submitted": 100.5, "done": 110.0,
                                                  "job_start": job_start}}}
    phases = dict(timing.job_phases(result, forward_s=0.3))
    assert list(phases) == ["port-forward", "submission", "runtime environment", "driver start", "ray.init",
                            "first request", "crawl", "fetchers closed", "job end"]
    assert phases["runtime environment"] == pytest.approx(2.0) and phases["crawl"] == pytest.approx(3.4)
    assert phases["job end"] == pytest.approx(9.5 - 8.2)  # the client's 9.5 s after submitting, less the job's 8.2
    assert sum(phases.values()) == pytest.approx(0.3 + 10.0)
    text = timing.format_phases(list(phases.items()))
    assert "  runtime environment    2.00 s" in text and text.endswith("in all                10.30 s")


def test_a_driver_that_joined_ray_beside_its_crawl_has_its_start_and_crawl_as_phases_and_ray_aside():
    from crawler import timing

    marks = {"process": 10.0, "first_request": 10.3, "ray_imported": 10.7, "ray_connected": 10.8,
             "fetchers_ready": 11.9, "crawl_done": 14.0}
    assert timing.driver_phases(marks) == [("first request", pytest.approx(0.3)), ("crawl", pytest.approx(3.7))]
    aside = timing.fetchers_aside({"timing": marks, "stats": {"fetched_in_driver": 12}})
    ended_first = {"timing": {"process": 10.0, "first_request": 10.3, "ray_join": 10.4, "crawl_done": 10.5},
                   "stats": {"fetched_in_driver": 3}, "config": {"mode": "ray"}}
    assert timing.fetchers_aside(ended_first) == ("the crawl ended before the driver had joined Ray: it fetched all "
                                                  "3 URL(s) itself")
    start_only = {"timing": {"process": 10.0, "first_request": 10.3, "crawl_done": 10.4},
                  "stats": {"fetched_in_driver": 1}, "config": {"mode": "ray"}}
    assert timing.fetchers_aside(start_only) == ("the crawl went no further than its start URL(s): the driver "
                                                 "fetched all 1 itself, and Ray was not joined")
    assert aside == ("Ray joined beside the crawl: `import ray` done 0.70 s after the driver started, ray.init "
                     "0.80 s; the first fetcher actor answered 1.10 s after ray.init; the driver fetched 12 URL(s) "
                     "before it")


def test_a_local_crawl_has_no_ray_phases_and_its_start_is_one_phase():
    from crawler import timing

    marks = {"process": 10.0, "first_request": 10.4, "crawl_done": 11.0, "closed": 11.1}
    assert timing.driver_phases(marks) == [("first request", pytest.approx(0.4)), ("crawl", pytest.approx(0.6)),
                                           ("fetchers closed", pytest.approx(0.1))]


def test_the_process_start_is_read_from_the_system_and_precedes_now():
    # Asked in a process started just now (this test process may have run for half an hour):
    # its start is read from /proc, lies before the moment it answers and after the moment
    # it was launched (less a clock tick of rounding).
    import subprocess
    import sys

    launched = time.time()
    code = "from crawler import timing; import time; print(timing.process_started(), time.time())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    if out[0] != "None":  # Linux: /proc
        started, answered = float(out[0]), float(out[1])
        assert launched - 0.05 < started <= answered


# -- the Jobs REST API over HTTP -------------------------------------------------------------


class JobsServer:
    """Ray's Jobs REST API as its documentation describes it, serving one job that succeeds with `log`."""

    def __init__(self, log: str):
        import http.server
        import json
        import threading

        self.requests: list[tuple[str, str, dict]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                server.requests.append(("POST", self.path, body))
                self.reply({"job_id": "raysubmit_http", "submission_id": "raysubmit_http"})

            def do_GET(self):
                server.requests.append(("GET", self.path, {}))
                if self.path.endswith("/logs"):
                    self.reply({"logs": log})
                else:
                    self.reply({"status": "SUCCEEDED", "message": "done", "start_time": int(time.time() * 1000)})

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_a_job_that_ships_nothing_is_submitted_and_followed_without_importing_ray(tmp_path):
    """kindlab's Ray image has the crawler: the client speaks the Jobs REST API alone, and `import ray`
    (a second of CPU before anything is submitted) is never paid."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    server = JobsServer("crawling\n" + "\n".join(result_lines(RESULT)) + "\n")
    script = ("import json, sys\nfrom crawler import jobs\n"
              f"result = jobs.submit_crawl({server.address!r}, ['http://a.test/'], ship_package=False, pip=[], "
              "on_log=lambda line: None)\n"
              "print(json.dumps({'pages': len(result['pages']), 'ray': 'ray' in sys.modules, "
              "'shipped': result['job']['package_shipped']}))\n")
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                             cwd=Path(jobs.PACKAGE_DIR).parent)
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"pages": 3, "ray": False, "shipped": False}
    method, path, body = server.requests[0]
    assert (method, path) == ("POST", "/api/jobs/")
    assert body["runtime_env"] == {} and body["entrypoint"].startswith("python -m crawler http://a.test/")
    assert body["metadata"] == {"app": "kindlab-crawler"}
    assert ("GET", "/api/jobs/raysubmit_http/logs", {}) in server.requests


def test_a_jobs_api_that_refuses_the_job_is_named_with_its_answer():
    import http.server
    import threading

    class Refusing(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.send_response(400)
            self.end_headers()
            self.wfile.write(b"runtime_env: unknown field 'pipp'")

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(CrawlJobError, match=r"\(not submitted\) REFUSED: the Jobs API at http://127.0.0.1:\d+ "
                                                r"refused the job: POST /api/jobs/ answered HTTP 400: runtime_env"):
            jobs.submit_crawl(f"http://127.0.0.1:{httpd.server_port}", ["http://a.test/"], ship_package=False,
                              on_log=lambda line: None)
    finally:
        httpd.shutdown()


def test_without_the_package_to_ship_the_runtime_env_is_empty():
    assert crawl_runtime_env(ship_package=False, pip=[]) == {}
    assert crawl_runtime_env(ship_package=False, pip=["lxml==5.3.0"]) == {"pip": ["lxml==5.3.0"]}


# -- `invoke all` crawls once: the kept crawl ---------------------------------------------------


class RayNamespace:
    """kubectl as the kept crawl asks it: the ray namespace's objects, and the ConfigMap it applies."""

    def __init__(self, pod_image: str):
        self.pod_image, self.configmap, self.calls = pod_image, None, []

    def run(self, argv, check=True, input=None, **kwargs):
        import json

        from playbooks.core.commands import Result
        self.calls.append(argv)
        if "apply" in argv:
            self.configmap = json.loads(input)
            return Result(tuple(argv), 0, "configmap/kindlab-crawl serverside-applied", "")
        items = [{"kind": "RayCluster", "metadata": {"name": "raylab", "uid": "u1"}, "spec": {}},
                 {"kind": "Pod", "metadata": {"name": "raylab-head-x", "labels": {"ray.io/node-type": "head"}},
                  "spec": {"containers": [{"image": self.pod_image}]}},
                 {"kind": "Deployment", "metadata": {"name": "python-docs"},
                  "spec": {"template": {"spec": {"containers": [{"image": "kindlab.local/python-docs:1"}]}}}}]
        if self.configmap:
            items.append(self.configmap)
        return Result(tuple(argv), 0, json.dumps({"items": items}), "")


def test_all_crawls_once_and_a_rerun_names_the_kept_crawl_until_the_crawler_changes(fake_jobs):
    from types import SimpleNamespace

    from playbooks.core.settings import Lab
    from playbooks.ray import crawl_args, crawl_steps

    lab = Lab(provider="kind", cluster="lab", offline=True)
    sh = RayNamespace("kindlab.local/ray:aaa")
    ctx = SimpleNamespace(sh=sh, lab=lab, say=lambda message: None, deadline=Deadline.after(60))
    args = crawl_args(["http://a.test/"], "", 2, 10, 4)
    step = crawl_steps(lab, args, address="http://127.0.0.1:8265", show=lambda text: None, keep=True)[0]
    assert not step.action
    first = step.check(ctx)
    assert first.needs_change and "no crawl of it kept" in first.detail
    fake_jobs([("SUCCEEDED", "\n".join(result_lines(RESULT)) + "\n")])
    assert "job finished" in step.apply(ctx)
    again = step.check(ctx)
    assert not again.needs_change
    assert again.detail.startswith("crawled before with this crawler, site and RayCluster (job raysubmit_fake, ")
    assert again.detail.endswith("3 pages, 1 failed; `invoke ray.crawl` crawls again")
    sh.pod_image = "kindlab.local/ray:bbb"  # a crawler edit: a new Ray image in the pods
    assert step.check(ctx).needs_change
    assert not crawl_steps(lab, args, address="http://127.0.0.1:8265")[0].check(ctx).needs_change  # ray.crawl: an action
