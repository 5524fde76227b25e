"""Lab health probes: reading Prometheus, Grafana and nginx answers, and http_get."""

import copy
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from playbooks import probes
from playbooks.probes import (
    HttpGetError,
    grafana_health_problems,
    http_get,
    nginx_welcome_ok,
    prometheus_target_problems,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fixture(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


# --- Prometheus ------------------------------------------------------------


def test_all_targets_up_means_no_problems():
    assert prometheus_target_problems(fixture("prometheus_targets_all_up.json")) == []


def test_two_down_targets_give_one_sentence_each_with_job_url_and_error():
    problems = prometheus_target_problems(fixture("prometheus_targets_two_down.json"))
    assert len(problems) == 2
    etcd, scheduler = problems
    assert "kube-etcd" in etcd
    assert "http://172.18.0.2:2381/metrics" in etcd
    assert "is down" in etcd
    assert "connect: connection refused" in etcd
    assert "kube-scheduler" in scheduler
    assert "https://172.18.0.2:10259/metrics" in scheduler
    assert "connection refused" in scheduler


def test_problem_names_the_scrape_pool():
    problems = prometheus_target_problems(fixture("prometheus_targets_two_down.json"))
    assert "serviceMonitor/monitoring/kube-prometheus-stack-kube-etcd/0" in problems[0]


def test_unknown_health_is_a_problem_too():
    targets = fixture("prometheus_targets_all_up.json")
    targets["data"]["activeTargets"][1]["health"] = "unknown"
    problems = prometheus_target_problems(targets)
    assert len(problems) == 1
    assert "kube-prometheus-stack-prometheus" in problems[0]
    assert "unknown" in problems[0]


def test_no_active_targets_is_healthy():
    assert prometheus_target_problems({"status": "success", "data": {"activeTargets": []}}) == []


def test_prometheus_error_status_raises_with_its_message():
    with pytest.raises(ValueError, match="status is 'error'.*bad_data.*sleepy"):
        prometheus_target_problems(fixture("prometheus_targets_error.json"))


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"status": "success"},
        {"status": "success", "data": {"activeTargets": "none"}},
        {"status": "success", "data": []},
        fixture("grafana_health.json"),
    ],
)
def test_wrong_shape_raises_value_error(answer):
    with pytest.raises(ValueError, match="Prometheus targets response"):
        prometheus_target_problems(answer)


def test_target_without_health_raises_value_error():
    targets = fixture("prometheus_targets_all_up.json")
    broken = copy.deepcopy(targets)
    del broken["data"]["activeTargets"][2]["health"]
    with pytest.raises(ValueError, match=r"activeTargets\[2\]"):
        prometheus_target_problems(broken)


# --- Grafana ---------------------------------------------------------------


def test_grafana_database_ok_means_no_problems():
    assert grafana_health_problems(fixture("grafana_health.json")) == []


def test_grafana_failing_database_is_reported():
    problems = grafana_health_problems(fixture("grafana_health_failing.json"))
    assert len(problems) == 1
    assert "'failing'" in problems[0]
    assert "database" in problems[0]


def test_grafana_with_version_hidden_still_checked():
    # anonymous users may get no version/commit fields
    assert grafana_health_problems({"database": "ok"}) == []
    assert len(grafana_health_problems({"database": "failing"})) == 1


@pytest.mark.parametrize("answer", [{}, {"status": "success"}, ["ok"]])
def test_grafana_wrong_shape_raises_value_error(answer):
    with pytest.raises(ValueError, match="Grafana health response"):
        grafana_health_problems(answer)


# --- nginx -----------------------------------------------------------------

NGINX_PAGE = """<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, nginx is successfully installed and working.</p>
</body>
</html>
"""


def test_nginx_welcome_page_recognised():
    assert nginx_welcome_ok(NGINX_PAGE)


@pytest.mark.parametrize(
    "html", ["", "<html><body>502 Bad Gateway</body></html>", "welcome to NGINX"]
)
def test_other_pages_are_not_the_welcome_page(html):
    assert not nginx_welcome_ok(html)


# --- http_get --------------------------------------------------------------


class ScriptedServer:
    """An HTTP server on 127.0.0.1 answering GETs from a script of (status, body)."""

    def __init__(self, script):
        self.script = list(script)
        self.requests = 0
        self.request_times = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                index = min(outer.requests, len(outer.script) - 1)
                outer.requests += 1
                outer.request_times.append(time.monotonic())
                status, body = outer.script[index]
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/api/health" % self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def closed_port_url():
    # Bind, note the port, close: nothing listens there afterwards.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return "http://127.0.0.1:%d/metrics" % port


def test_retries_5xx_then_returns_the_200():
    script = [(503, b"starting"), (503, b"starting"), (200, b'{"database": "ok"}')]
    with ScriptedServer(script) as server:
        status, body = http_get(server.url, timeout=2, attempts=5, backoff=0.05)
    assert (status, body) == (200, b'{"database": "ok"}')
    assert server.requests == 3


def test_waits_grow_exponentially_between_retries():
    script = [(503, b""), (503, b""), (200, b"ok")]
    with ScriptedServer(script) as server:
        http_get(server.url, timeout=2, attempts=5, backoff=0.1)
    first_wait = server.request_times[1] - server.request_times[0]
    second_wait = server.request_times[2] - server.request_times[1]
    assert first_wait >= 0.09
    assert second_wait >= 0.19


def test_4xx_is_returned_without_retrying():
    with ScriptedServer([(404, b"no such page")]) as server:
        status, body = http_get(server.url, timeout=2, attempts=5, backoff=0.05)
    assert (status, body) == (404, b"no such page")
    assert server.requests == 1


def test_5xx_until_the_last_attempt_raises_with_url_status_and_body():
    body = b'{"database": "failing"}'
    with ScriptedServer([(503, body)]) as server:
        with pytest.raises(HttpGetError) as caught:
            http_get(server.url, timeout=2, attempts=3, backoff=0.01)
    assert server.requests == 3
    message = str(caught.value)
    assert server.url in message
    assert "3 attempts" in message
    assert "HTTP 503 Service Unavailable" in message
    assert caught.value.status == 503
    assert caught.value.body == body


def test_closed_port_raises_error_naming_the_url():
    url = closed_port_url()
    started = time.monotonic()
    with pytest.raises(HttpGetError) as caught:
        http_get(url, timeout=2, attempts=3, backoff=0.05)
    message = str(caught.value)
    assert url in message
    assert "connection refused" in message
    assert "3 attempts" in message
    # two pauses, 0.05 s then 0.1 s: it did wait between attempts
    assert time.monotonic() - started >= 0.14


def test_password_in_url_is_not_in_the_error():
    url = closed_port_url().replace("http://", "http://admin:s3cret@")
    with pytest.raises(HttpGetError) as caught:
        http_get(url, timeout=2, attempts=1, backoff=0.01)
    assert "s3cret" not in str(caught.value)
    assert "admin:***@127.0.0.1" in str(caught.value)


def test_malformed_url_raises_http_get_error_at_once():
    with pytest.raises(HttpGetError, match="not-a-url"):
        http_get("not-a-url", attempts=3, backoff=10)


def test_attempts_must_be_positive():
    with pytest.raises(ValueError):
        http_get("http://127.0.0.1:1/", attempts=0)


class DroppingProxy:
    """What kind's port mapping does while a Service's old pod is going: docker's proxy takes the
    connection, finds no backend, and closes it. The first `drops` connections are closed at once;
    later ones are answered 200 with the body posted, reversed."""

    def __init__(self, drops):
        self.drops = drops
        self.connections = 0
        self.closed = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d/" % self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                if self.connections <= self.drops:
                    conn.close()
                    self.closed.set()
                    continue
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                head, _, body = request.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(body), body[::-1]))


def test_a_connection_closed_before_the_request_was_written_is_tried_again(monkeypatch):
    """The real case (CI, the function's node port just after a redeploy): the headers went out on a
    connection the far end had closed, and writing the body failed with Broken pipe. The client here
    waits until the proxy has closed each dropped connection before it writes, so that is what it gets."""
    proxy = DroppingProxy(drops=2)
    real_connect = socket.create_connection
    errors = []

    def connect_after_the_close(*args, **kwargs):
        sock = real_connect(*args, **kwargs)
        if proxy.closed.wait(0.3):  # a dropped one: its FIN is in before the request is written
            proxy.closed.clear()
        return sock

    monkeypatch.setattr(socket, "create_connection", connect_after_the_close)
    real_once = probes._get_once

    def noting(*args):
        try:
            return real_once(*args)
        except Exception as err:
            errors.append(type(getattr(err, "reason", err)).__name__)
            raise

    monkeypatch.setattr(probes, "_get_once", noting)
    assert http_get(proxy.url, timeout=2, attempts=4, backoff=0.01, data=b"Hello World") == (200, b"dlroW olleH")
    assert proxy.connections == 3
    assert "BrokenPipeError" in errors, errors  # the case itself, not only resets
    proxy.sock.close()
