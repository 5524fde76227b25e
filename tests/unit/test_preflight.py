"""Bad input and a missing tool are refused before anything changes."""
import socket
import subprocess
import sys

import pytest

from playbooks import cluster, doctor, parts
from playbooks.core.commands import LocalShell, Result
from playbooks.core.runner import StepContext
from playbooks.core.settings import Lab, SettingsError
from playbooks.core.steps import StepFailed
from playbooks.providers import KindProvider
from playbooks.parts import REGISTRY


class RecordingShell(LocalShell):
    """Records commands instead of running them; this machine's ports and files as they are."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def run(self, argv, **kwargs):
        self.calls.append(list(argv))
        return Result(tuple(argv), 0, "", "")

    def close(self):
        pass


def test_kind_create_refuses_a_busy_host_port_before_calling_kind(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        from playbooks.core.portforward import free_port
        # the other two mapped ports free ones: a lab cluster on this machine may hold 8080 and 31112
        lab = Lab(provider="kind", home=tmp_path,
                  ports=(("nginx", port), ("http", free_port()), ("gateway", free_port())))
        shell = RecordingShell()
        create = KindProvider(lab).create_steps(list(REGISTRY.values()))[0]
        with pytest.raises(StepFailed, match=f"host port 127.0.0.1:{port} already in use"):
            create.apply(StepContext(lab, shell))
    assert not any(call[:3] == ["kind", "create", "cluster"] for call in shell.calls)


def _fixes(results):
    return {f.check: f.fix for f in results if f.status == "fail"}


def test_doctor_names_a_missing_tool_and_the_command_that_installs_it(tmp_path):
    lab = Lab(provider="kwok", home=tmp_path, bin_dir=tmp_path / "empty-bin")
    fixes = _fixes(doctor.findings(lab, parts.choose("nginx")))
    assert fixes["tool kubectl"] == "invoke tools.install"
    assert fixes["tool kube-apiserver"] == "invoke tools.install --testbed"


def test_doctor_asks_only_for_the_tools_of_the_chosen_parts(tmp_path):
    lab = Lab(provider="kind", home=tmp_path, bin_dir=tmp_path / "empty-bin")
    nginx_only = _fixes(doctor.findings(lab, parts.choose("nginx")))
    assert "tool faas-cli" not in nginx_only and "tool helm" not in nginx_only
    assert "tool kind" in nginx_only and "tool kubectl" in nginx_only
    assert "tool faas-cli" in _fixes(doctor.findings(lab, parts.choose("faas")))


def test_doctor_counts_the_clusters_memory_whatever_parts_are_chosen(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "_memory_mib", lambda sh: 2100)  # room for the cluster and nginx, nothing more
    lab = Lab(provider="kwok", home=tmp_path)
    memory = {f.check: f for f in doctor.findings(lab, parts.choose("nginx"))}["memory"]
    assert memory.status == "fail" and "need about 2176 MiB" in memory.detail  # 2048 cluster + 128 nginx
    memory = {f.check: f for f in doctor.findings(lab, [])}["memory"]
    assert memory.status == "ok" and "2048 MiB" in memory.detail


def test_doctor_refuses_unknown_parts(tmp_path):
    with pytest.raises(SettingsError, match="unknown part"):
        parts.choose("nginx,grafana")


def test_invoke_rejects_bad_replicas_before_touching_a_cluster(tmp_path):
    env = {"KINDLAB_HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"}
    for value, message in (("-1", "must be at least 0"), ("abc", "whole number"),
                           ("100000", "--replicas must be at most 100")):
        proc = subprocess.run([sys.executable, "-m", "invoke", "nginx.scale", "--replicas", value],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "invoke", "cluster.create", "--name", "Bad_Name"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "invalid cluster name 'Bad_Name'" in proc.stderr


class CannedShell(RecordingShell):
    """Answers `docker ps` / `docker inspect` like a machine after a reboot."""

    def __init__(self, states, bindings):
        super().__init__()
        self.states, self.bindings = states, bindings

    def run(self, argv, **kwargs):
        self.calls.append(list(argv))
        if argv[:2] == ["docker", "ps"]:
            out = "".join(f"{name}\t{state}\n" for name, state in self.states.items())
        elif argv[:2] == ["docker", "inspect"]:
            import json
            out = json.dumps(self.bindings)
        elif argv[:3] == ["kind", "get", "clusters"]:
            out = "cloud-hw\n"  # the cluster exists: only its nodes are stopped
        else:
            out = ""
        return Result(tuple(argv), 0, out, "")


BINDINGS = {"6443/tcp": [{"HostIp": "127.0.0.1", "HostPort": "41234"}],
            "30080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "30080"}],
            "80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
            "31112/tcp": [{"HostIp": "127.0.0.1", "HostPort": "31112"}]}


def test_stopped_kind_nodes_are_started_not_recreated(tmp_path):
    lab = Lab(provider="kind", home=tmp_path)
    step = KindProvider(lab).create_steps(list(REGISTRY.values()))[1]
    shell = CannedShell({"cloud-hw-control-plane": "exited"}, BINDINGS)
    ctx = StepContext(lab, shell)
    result = step.check(ctx)
    assert result.state == "changed" and "start stopped node containers cloud-hw-control-plane" in result.detail
    step.apply(ctx)
    assert ["docker", "start", "cloud-hw-control-plane"] in shell.calls
    assert not any(call[:2] == ["kind", "create"] or call[:2] == ["kind", "delete"] for call in shell.calls)


def test_port_mappings_that_differ_are_a_warning_with_the_way_out(tmp_path):
    lab = Lab(provider="kind", home=tmp_path, ports=(("nginx", 30081),))
    step = KindProvider(lab).create_steps(list(REGISTRY.values()))[1]
    result = step.check(StepContext(lab, CannedShell({"cloud-hw-control-plane": "running"}, BINDINGS)))
    assert result.state == "ok" and result.detail.startswith("warning:")
    assert "fixed when a kind cluster is created" in result.detail and "cluster.delete" in result.detail
    same = Lab(provider="kind", home=tmp_path)
    assert KindProvider(same).create_steps(list(REGISTRY.values()))[1].check(
        StepContext(same, CannedShell({"cloud-hw-control-plane": "running"}, BINDINGS))).detail == "node containers running"


def test_compare_refuses_zero_calls_instead_of_crashing(tmp_path):
    env = {"KINDLAB_HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "invoke", "compare", "--calls", "0", "--provider", "kind"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "--calls must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr and "IndexError" not in proc.stderr
