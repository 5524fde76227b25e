"""of-watchdog's health and readiness, on the real fwatchdog (built by `invoke setup` from its archive).

A trait of the real thing that broke the lab: of-watchdog writes its lock file, so `/_/health` answers
200, as soon as it listens, while the function's own process (the template's Flask server) may still be
starting. A pod probed on `/_/health` is then Ready while a call gets HTTP 500 from the watchdog
("connection refused" upstream): `invoke all` on the three-node lab failed its `invoke reverse` in 0.0 s
so. With `ready_path` set, `/_/ready` asks the function itself, and answers 200 only once it serves:
kindlab's function Deployment probes that (playbooks/faas.py, function_documents).

The watchdog binds its metrics port (8081) on every interface, so each run gets a network namespace of
its own (root: `unshare -n`); traffic stays on its loopback.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from playbooks import toolchain

from .. import conftest

UPSTREAM_DELAY_S = 2.0  # the function's process starts listening this long after it is started

PROBE = r'''
import json, os, subprocess, sys, tempfile, time, urllib.error, urllib.request

watchdog, delay, ready_path = sys.argv[1], float(sys.argv[2]), sys.argv[3]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
work = tempfile.mkdtemp()
with open(os.path.join(work, "upstream.py"), "w") as f:
    f.write(f"""
import http.server, time
time.sleep({delay})
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        body = b"served"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", 5000), H).serve_forever()
""")
env = {"PATH": os.environ["PATH"], "TMPDIR": work, "mode": "http", "port": "8080",
       "fprocess": f"{sys.executable} {os.path.join(work, 'upstream.py')}", "upstream_url": "http://127.0.0.1:5000"}
if ready_path:
    env["ready_path"] = ready_path
proc = subprocess.Popen([watchdog], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def status(path, data=None):
    try:
        with urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:8080" + path, data=data), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None

start, out = time.monotonic(), {}
try:
    while status("/_/health") != 200:
        time.sleep(0.02)
    out["health_s"] = time.monotonic() - start
    out["ready_at_health"] = status("/_/ready")
    out["call_at_health"] = status("/", b"x")
    while status("/_/ready") != 200:
        time.sleep(0.02)
    out["ready_s"] = time.monotonic() - start
    out["call_at_ready"] = status("/", b"x")
finally:
    proc.terminate()
    proc.wait(10)
print(json.dumps(out))
'''


def watchdog_run(ready_path: str) -> dict:
    watchdog = toolchain.component_dir(toolchain.default_bin_dir()) / "fwatchdog"
    if not watchdog.exists():
        message = f"fwatchdog not built in {watchdog.parent}: run `invoke setup` (or `invoke images.build --only of-watchdog`)"
        conftest.unavailable(message, conftest.testbed_required())
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("a network namespace of its own needs root, unshare and ip")
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", PROBE, str(watchdog), str(UPSTREAM_DELAY_S),
                           ready_path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_health_answers_before_the_function_serves_so_a_call_then_fails():
    seen = watchdog_run("")
    # healthy within a moment of its start, long before the function's process listens
    assert seen["health_s"] < UPSTREAM_DELAY_S - 0.5, seen
    assert seen["call_at_health"] == 500, seen   # the watchdog's own answer: upstream connection refused
    assert seen["ready_at_health"] == 200, seen  # without ready_path, /_/ready knows no better


def test_with_ready_path_ready_waits_for_the_function_and_a_call_then_succeeds():
    seen = watchdog_run("/")
    assert seen["ready_at_health"] != 200 and seen["call_at_health"] == 500, seen
    assert seen["ready_s"] >= UPSTREAM_DELAY_S - 0.1, seen
    assert seen["call_at_ready"] == 200, seen
