"""Local daemons (the simulated cluster's operators): started detached, found again, stopped."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from playbooks.core import daemons
from playbooks.core.commands import LocalShell
from playbooks.core.daemons import Daemon, alive

HERE = LocalShell()  # the daemons of these tests run on this machine

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses sleep(1) and /proc")


def sleeper(tmp_path, name="sleeper"):
    return Daemon(name, ["sleep", "60"], tmp_path / "daemons")


def test_start_finds_and_stops_a_daemon(tmp_path):
    daemon = sleeper(tmp_path)
    assert daemons.running_pid(daemon, HERE) is None
    pid = daemons.start(daemon, HERE)
    try:
        assert daemons.running_pid(daemon, HERE) == pid
        assert os.getsid(pid) == pid  # its own session: Ctrl-C in the terminal does not reach it
        assert "starting sleep 60" in daemon.log_file.read_text()
    finally:
        assert daemons.stop(daemon, HERE) is True
    assert daemons.running_pid(daemon, HERE) is None
    assert not daemon.pid_file.exists()
    assert daemons.stop(daemon, HERE) is False  # stopping what does not run is fine


def test_a_pid_file_naming_another_program_is_not_trusted_or_killed(tmp_path):
    other = subprocess.Popen(["sleep", "60"])
    try:
        daemon = Daemon("operator", ["ray-operator", "--flag"], tmp_path)
        tmp_path.mkdir(exist_ok=True)
        daemon.pid_file.write_text(str(other.pid))  # a recycled pid now running `sleep`
        assert daemons.running_pid(daemon, HERE) is None
        assert daemons.stop(daemon, HERE) is False
        assert other.poll() is None  # still running: never killed by mistake
    finally:
        other.kill()
        other.wait()


def test_a_daemon_that_exits_is_not_running_and_its_last_words_are_kept(tmp_path):
    daemon = Daemon("failing", ["sh", "-c", "echo unrecognized feature gate: X >&2; exit 1"], tmp_path / "d")
    daemons.start(daemon, HERE)
    deadline = time.monotonic() + 5
    while daemons.running_pid(daemon, HERE) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert daemons.running_pid(daemon, HERE) is None
    assert "unrecognized feature gate: X" in daemons.last_lines(daemon, HERE)


def test_a_supervised_program_that_exits_is_started_again_and_stops_with_its_supervisor(tmp_path):
    marker = tmp_path / "runs"
    daemon = Daemon("flaky", ["sh", "-c", f"echo run >> {marker}; sleep 0.2; exit 3"], tmp_path / "d", restart=True)
    daemons.start(daemon, HERE)
    try:
        deadline = time.monotonic() + 10
        while (not marker.exists() or marker.read_text().count("run") < 3) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.read_text().count("run") >= 3  # a kubelet-like restart, again and again
        assert "sh exited with code 3; starting it again" in daemon.log_file.read_text()
        assert daemons.running_pid(daemon, HERE) is not None  # the supervisor itself keeps running
    finally:
        assert daemons.stop(daemon, HERE) is True
    runs = marker.read_text().count("run")
    time.sleep(1.5)
    assert marker.read_text().count("run") == runs  # nothing starts it after stop


def test_a_supervisor_waits_for_its_crds_before_starting_the_program(tmp_path):
    fake_kubectl = tmp_path / "kubectl"
    fake_kubectl.write_text("#!/bin/sh\nexit 1\n")  # `kubectl get crd ...`: not found
    fake_kubectl.chmod(0o755)
    marker = tmp_path / "ran"
    daemon = Daemon("op", ["sh", "-c", f"touch {marker}; sleep 60"], tmp_path / "d", restart=True,
                    needs_crds=("widgets.example.com",), kubectl=str(fake_kubectl))
    daemons.start(daemon, HERE)
    try:
        deadline = time.monotonic() + 5
        while "waiting for CRDs" not in daemon.log_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "waiting for CRDs widgets.example.com before starting sh" in daemon.log_file.read_text()
        assert not marker.exists()
        fake_kubectl.write_text('#!/bin/sh\necho \'{"items": [{"status": {"conditions": '
                                '[{"type": "Established", "status": "True"}]}}]}\'\n')
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists()  # started once the CRD is Established
    finally:
        daemons.stop(daemon, HERE)


@pytest.mark.parametrize("waiting_for_crds", [False, True])
def test_a_supervisor_ends_with_its_program_once_its_clusters_kubeconfig_is_gone(tmp_path, waiting_for_crds):
    # What a cluster deleted by a run that could not find the pid file (another kindlab home) leaves.
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text("clusters: []\n")
    never = tmp_path / "kubectl"
    never.write_text("#!/bin/sh\nexit 1\n")
    never.chmod(0o755)
    crds = {"needs_crds": ("widgets.example.com",), "kubectl": str(never)} if waiting_for_crds else {}
    program = tmp_path / "program.pid"
    daemon = Daemon("op", ["sh", "-c", f"echo $$ > {program}; exec sleep 60"], tmp_path / "d",
                    env={"KUBECONFIG": str(kubeconfig)}, restart=True, **crds)
    pid = daemons.start(daemon, HERE)
    try:
        deadline = time.monotonic() + 30
        while not waiting_for_crds and not program.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert daemons.running_pid(daemon, HERE) == pid
        kubeconfig.unlink()
        while alive(pid) and time.monotonic() < deadline + 30:
            time.sleep(0.1)
        assert not alive(pid), "the supervisor outlived its cluster"
        if not waiting_for_crds:
            assert not alive(int(program.read_text())), "its program outlived the cluster"
    finally:
        daemons.stop(daemon, HERE)


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="threads are read from Linux's /proc")
def test_a_program_whose_first_thread_ended_is_alive_while_another_runs():
    # A killed Go program looks like this for a moment: its first thread is a zombie while the others
    # still hold its files (a listening port a restart would need).
    code = ("import ctypes, threading, time\n"
            "threading.Thread(target=time.sleep, args=(30,)).start()\n"
            "print('ready', flush=True)\n"
            "ctypes.CDLL(None).pthread_exit(None)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while Path(f"/proc/{proc.pid}/stat").read_text().split(") ", 1)[1][0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert alive(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    assert not alive(proc.pid)
