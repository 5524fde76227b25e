"""Bad input and a missing tool are refused before anything changes."""
import socket
import subprocess
import sys

import pytest
from invoke.exceptions import Exit

from playbooks import cluster, doctor
from playbooks.core.commands import Result
from playbooks.core.runner import StepContext
from playbooks.core.settings import Lab
from playbooks.core.steps import StepFailed


class RecordingShell:
    def __init__(self):
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
        lab = Lab(provider="kind", home=tmp_path, nginx_port=port)
        shell = RecordingShell()
        create = cluster.kind_create_steps(lab)[0]
        with pytest.raises(StepFailed, match=f"127.0.0.1:{port} already in use"):
            create.apply(StepContext(lab, shell))
    assert not any(call[:3] == ["kind", "create", "cluster"] for call in shell.calls)


def test_doctor_names_a_missing_tool_and_the_command_that_installs_it(tmp_path, capsys):
    lab = Lab(provider="kwok", home=tmp_path, bin_dir=tmp_path / "empty-bin")
    with pytest.raises(Exit) as err:
        doctor.run(lab, "nginx")
    assert err.value.code == 1
    assert "tool kubectl: invoke tools.install" in err.value.message
    assert "tool kube-apiserver: invoke tools.install --testbed" in err.value.message


def test_doctor_refuses_unknown_parts(tmp_path):
    with pytest.raises(Exit, match="unknown part"):
        doctor.run(Lab(home=tmp_path), "nginx,grafana")


def test_invoke_rejects_bad_replicas_before_touching_a_cluster(tmp_path):
    env = {"KINDLAB_HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none"), "PATH": "/usr/bin:/bin"}
    for value, message in (("-1", "0 or more"), ("abc", "whole number")):
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
    step = cluster.kind_create_steps(lab)[1]
    shell = CannedShell({"cloud-hw-control-plane": "exited"}, BINDINGS)
    ctx = StepContext(lab, shell)
    result = step.check(ctx)
    assert result.state == "change" and "start stopped node containers cloud-hw-control-plane" in result.detail
    step.apply(ctx)
    assert ["docker", "start", "cloud-hw-control-plane"] in shell.calls
    assert not any(call[:2] == ["kind", "create"] or call[:2] == ["kind", "delete"] for call in shell.calls)


def test_port_mappings_that_differ_are_a_warning_with_the_way_out(tmp_path):
    lab = Lab(provider="kind", home=tmp_path, nginx_port=30081)
    step = cluster.kind_create_steps(lab)[1]
    result = step.check(StepContext(lab, CannedShell({"cloud-hw-control-plane": "running"}, BINDINGS)))
    assert result.state == "ok" and result.detail.startswith("warning:")
    assert "fixed when a kind cluster is created" in result.detail and "cluster.delete" in result.detail
    same = Lab(provider="kind", home=tmp_path)
    assert cluster.kind_create_steps(same)[1].check(
        StepContext(same, CannedShell({"cloud-hw-control-plane": "running"}, BINDINGS))).detail == "node containers running"
