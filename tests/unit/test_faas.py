"""The faas play's own logic: content hash, stack rendering, and faas-cli command lines (faked)."""
import base64
import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from playbooks import faas
from playbooks.core.commands import LocalShell
from playbooks.core.runner import StepContext
from playbooks.core.settings import Lab

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses a shell-script stand-in for faas-cli")

FAKE_FAAS_CLI = """#!/usr/bin/env python3
import json, os, sys
stdin = sys.stdin.read() if not sys.stdin.isatty() else ""
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "stdin": stdin, "cwd": os.getcwd()}) + "\\n")
if sys.argv[1:2] == ["invoke"]:
    print(stdin[::-1])
if sys.argv[1:3] == ["template", "store"]:
    os.makedirs("template/python3-http", exist_ok=True)
"""


class FakeKube:
    def __init__(self, image=None, password="s3cret-pw"):
        self.image = image
        secret = SimpleNamespace(data={"basic-auth-user": base64.b64encode(b"admin").decode(),
                                       "basic-auth-password": base64.b64encode(password.encode()).decode()})
        self.core = SimpleNamespace(read_namespaced_secret=lambda name, ns: secret)
        self.apps = SimpleNamespace(read_namespaced_deployment=self._read)

    def _read(self, name, namespace):
        from kubernetes.client.exceptions import ApiException
        if self.image is None:
            raise ApiException(status=404)
        container = SimpleNamespace(image=self.image)
        return SimpleNamespace(spec=SimpleNamespace(template=SimpleNamespace(spec=SimpleNamespace(containers=[container]))))

    def wait_deployment(self, namespace, name, timeout, say):
        return f"{name}: 1/1 pods Ready"


@pytest.fixture
def env(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "faas-cli"
    script.write_text(FAKE_FAAS_CLI)
    script.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    lab = Lab(provider="kind", home=tmp_path / "kindlab", bin_dir=bin_dir)

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return lab, calls


def ctx_for(lab, kube):
    return StepContext(lab, LocalShell(lab.tools_dir), lambda: kube)


def test_hash_is_stable_and_changes_with_the_code(tmp_path):
    copy = tmp_path / "reverse"
    shutil.copytree(faas.FUNCTIONS / "reverse", copy, ignore=shutil.ignore_patterns("__pycache__"))
    first = faas.function_hash(copy)
    assert first == faas.function_hash(copy) and len(first) == 12
    (copy / "handler.py").write_text((copy / "handler.py").read_text() + "\n# changed\n")
    assert faas.function_hash(copy) != first


def test_unchanged_code_means_no_rebuild(env):
    lab, calls = env
    step = [s for s in faas.deploy_steps(lab) if s.name.startswith("function")][0]
    image = faas.function_image(lab, faas.function_hash())
    assert step.check(ctx_for(lab, FakeKube(image=image))).state == "ok"
    assert step.check(ctx_for(lab, FakeKube(image="localhost:5001/reverse:old"))).state == "change"
    assert step.check(ctx_for(lab, FakeKube(image=None))).state == "change"
    assert calls() == []  # checks run no tool


def test_on_kwok_the_build_is_skipped_with_its_reason(env):
    lab, calls = env
    kwok = Lab(provider="kwok", home=lab.home, bin_dir=lab.bin_dir)
    step = [s for s in faas.deploy_steps(kwok) if s.name.startswith("function")][0]
    result = step.check(ctx_for(kwok, FakeKube(image=None)))
    assert result.state == "skip" and "no containers" in result.detail


def test_deploy_pulls_template_builds_pushes_deploys_with_the_hash_tag(env):
    lab, calls = env
    step = [s for s in faas.deploy_steps(lab) if s.name.startswith("function")][0]
    step.apply(ctx_for(lab, FakeKube()))
    argvs = [c["argv"] for c in calls()]
    assert argvs == [["template", "store", "pull", "python3-http"], ["build", "-f", "stack.yaml"],
                     ["push", "-f", "stack.yaml"],
                     ["deploy", "-f", "stack.yaml", "--gateway", "http://127.0.0.1:31112"]]
    stack = yaml.safe_load((lab.home / "faas-build" / "stack.yaml").read_text())
    assert stack["functions"]["reverse"]["image"] == f"localhost:5001/reverse:{faas.function_hash()}"
    assert (lab.home / "faas-build" / "reverse" / "handler.py").exists()


def test_login_sends_the_password_on_stdin_never_argv(env):
    lab, calls = env
    step = faas.login_steps(lab)[0]
    ctx = ctx_for(lab, FakeKube(password="s3cret-pw"))
    assert step.check(ctx).state == "change"
    step.apply(ctx)
    (call,) = calls()
    assert call["argv"] == ["login", "--username", "admin", "--password-stdin", "--gateway", "http://127.0.0.1:31112"]
    assert call["stdin"] == "s3cret-pw" and "s3cret-pw" not in " ".join(call["argv"])


def test_invoke_prints_the_functions_answer(env):
    lab, calls = env
    step = faas.invoke_steps(lab, "Hello World")[0]
    detail = step.apply(ctx_for(lab, FakeKube()))
    assert "'dlroW olleH'" in detail
    assert calls()[0]["argv"] == ["invoke", "reverse", "--gateway", "http://127.0.0.1:31112"]


def test_the_licence_note_is_a_step_that_check_mode_leaves_unwritten(tmp_path):
    import io
    from rich.console import Console
    from playbooks.core.runner import Reporter, StepContext, run_play

    lab = Lab(provider="kwok", home=tmp_path)
    licence = [s for s in faas.install_steps(lab) if s.name == "OpenFaaS CE licence"]
    ctx = StepContext(lab, None, reporter=Reporter(Console(file=io.StringIO()), live=False))
    dry = run_play("t", licence, ctx, check_mode=True)
    assert dry[0].status == "changed" and dry[0].detail.startswith("would change: note: OpenFaaS CE")
    assert not (tmp_path / "openfaas-license-noted").exists()  # --check changed nothing
    assert run_play("t", licence, ctx)[0].status == "changed"
    assert (tmp_path / "openfaas-license-noted").exists()
    assert run_play("t", licence, ctx)[0].status == "ok"  # noted once
