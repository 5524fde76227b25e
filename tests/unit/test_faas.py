"""The faas play's own logic: content hash, stack rendering, and faas-cli command lines (faked)."""
import base64
import contextlib
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
    assert step.check(ctx_for(lab, FakeKube(image="localhost:5001/reverse:old"))).state == "changed"
    assert step.check(ctx_for(lab, FakeKube(image=None))).state == "changed"
    assert calls() == []  # checks run no tool


def test_on_kwok_the_build_is_skipped_with_its_reason(env):
    lab, calls = env
    kwok = Lab(provider="kwok", home=lab.home, bin_dir=lab.bin_dir)
    step = [s for s in faas.deploy_steps(kwok) if s.name.startswith("function")][0]
    result = step.check(ctx_for(kwok, FakeKube(image=None)))
    assert result.state == "skipped" and "no containers" in result.detail


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
    assert step.check(ctx).state == "changed"
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
    ctx = StepContext(lab, LocalShell(lab.tools_dir), reporter=Reporter(Console(file=io.StringIO()), live=False))
    dry = run_play("t", licence, ctx, check_mode=True)
    assert dry[0].status == "changed" and dry[0].detail.startswith("would change: note: OpenFaaS CE")
    assert not (tmp_path / "openfaas-license-noted").exists()  # --check changed nothing
    assert run_play("t", licence, ctx)[0].status == "changed"
    assert (tmp_path / "openfaas-license-noted").exists()
    assert run_play("t", licence, ctx)[0].status == "ok"  # noted once


# --- offline: the function without the platform -------------------------------------------
def test_offline_install_leaves_the_platform_out_saying_why_in_one_line(tmp_path):
    lab = Lab(provider="kind", home=tmp_path, offline=True)
    steps = {s.name: s for s in faas.install_steps(lab)}
    assert "OpenFaaS CE licence" not in steps  # nothing of CE runs offline
    result = steps["openfaas release"].check(None)
    assert result.state == "skipped"
    assert result.detail.startswith("OpenFaaS CE refuses to start without internet") and "\n" not in result.detail
    assert "its own Deployment and NodePort Service" in result.detail


def test_offline_hash_covers_what_the_image_is_built_from_there():
    online, offline = faas.function_hash(), faas.function_hash(offline=True)
    assert online != offline and len(offline) == 12 and offline == faas.function_hash(offline=True)


def test_offline_the_function_is_what_faas_netes_would_make_minus_the_gateway():
    deployment, service = faas.function_documents("localhost:5001/reverse:0123456789ab")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert deployment["metadata"]["namespace"] == service["metadata"]["namespace"] == "openfaas-fn"
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"] == {"faas_function": "reverse"}
    assert container["imagePullPolicy"] == "Always"  # as OpenFaaS CE pulls: the image comes from the registry
    # Ready once the function's own process answers (of-watchdog's /_/ready with ready_path; its /_/health
    # is 200 before that: tests/integration/test_watchdog_ready.py), alive while the watchdog is
    assert container["readinessProbe"]["httpGet"] == {"path": "/_/ready", "port": 8080}
    assert {"name": "ready_path", "value": "/"} in container["env"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/_/health", "port": 8080}
    assert service["spec"]["type"] == "NodePort" and service["spec"]["ports"][0]["nodePort"] == 31112
    assert "OpenFaaS CE refuses" in deployment["metadata"]["annotations"]["kindlab.dev/no-gateway"]


def test_offline_invoke_posts_to_the_functions_own_port_and_prints_its_answer(tmp_path):
    import http.server
    import threading

    class Reverse(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            answer = body[::-1].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Reverse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lab = Lab(provider="kind", home=tmp_path, offline=True, ports=(("gateway", server.server_address[1]),))
        detail = faas.invoke_steps(lab, "Hello World")[0].apply(SimpleNamespace(sh=LocalShell()))
        assert "'dlroW olleH'" in detail and "no gateway offline" in detail
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(faas.StepFailed, match="did not answer at http://127.0.0.1:"):
        faas.invoke_steps(lab, "Hello World")[0].apply(SimpleNamespace(sh=LocalShell()))  # nothing listens there now


def test_offline_without_faas_cli_or_the_template_archive_the_build_says_what_to_do(tmp_path):
    lab = Lab(provider="kind", home=tmp_path, offline=True, bin_dir=tmp_path / "empty")
    sh = LocalShell(tmp_path / "empty")
    if sh.which("faas-cli") is None:
        assert "invoke tools.install --only faas-cli" in faas.offline_missing(lab, sh)
    with_cli = Lab(provider="kind", home=tmp_path, offline=True)
    missing = faas.offline_missing(with_cli, FakeShell())
    assert "kindlab.sources.openfaas names no folder" in missing


class FakeShell:
    def which(self, tool):
        return f"/usr/bin/{tool}"


def real_faas_cli():
    """The faas-cli `invoke setup` built (from its source archive here); CI must have it."""
    from playbooks import toolchain

    from ..conftest import source_folders, unavailable

    bin_dir = toolchain.default_bin_dir()
    folders = source_folders()
    if not toolchain.is_current("faas-cli", bin_dir) or "openfaas" not in folders:
        message = "the real faas-cli or the OpenFaaS source archives are missing: run `invoke setup`"
        unavailable(message, bool(os.environ.get("CI")))
    return bin_dir, folders


def test_offline_the_real_faas_cli_builds_the_archived_template_with_kindlabs_base_images(tmp_path):
    from playbooks import images

    bin_dir, folders = real_faas_cli()
    lab = Lab(provider="kind", home=tmp_path, offline=True, bin_dir=bin_dir,
              sources=tuple(sorted(folders.items())))
    build = faas._build_dir(lab, faas.function_hash(offline=True))
    stack = yaml.safe_load((build / "stack.yaml").read_text())
    assert stack["functions"]["reverse"]["lang"] == "python3-http-debian" and "configuration" not in stack
    # what faas-cli makes of it, for real (--shrinkwrap: the build context without the Docker build)
    LocalShell(bin_dir).run(["faas-cli", "build", "--shrinkwrap", "-f", "stack.yaml"], cwd=build)
    context = build / "build" / "reverse"
    froms = [line.split()[2] for line in (context / "Dockerfile").read_text().splitlines()
             if line.startswith("FROM") and " AS " in line and "--platform" in line]
    assert froms == [images.reference("of-watchdog"), images.reference("python")]
    assert (context / "function" / "handler.py").read_text() == (faas.FUNCTIONS / "reverse" / "handler.py").read_text()
    assert (context / "index.py").is_file()  # the template's own server, unchanged


@contextlib.contextmanager
def function_answering(answers: list[int]):
    """A stand-in for the function at its node port on 127.0.0.1: each GET gets the next of `answers`, the
    last one from then on. Yields its URL, the statuses served so far, and a step context with a 30 s
    deadline whose messages are kept in ctx.said."""
    import http.server
    import threading

    from playbooks.core.deadline import Deadline

    served = []

    class Function(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status = answers.pop(0) if len(answers) > 1 else answers[0]
            served.append(status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Function)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    said = []
    ctx = SimpleNamespace(deadline=Deadline.after(30), cancelled=threading.Event(), say=said.append, said=said)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", served, ctx
    finally:
        server.shutdown()
        server.server_close()


def test_after_a_redeploy_the_wait_ends_once_the_node_port_answers_not_before(tmp_path):
    """What kind showed after a redeploy: the node port still led to the old pod's address for a moment
    (an HTTP 403 from outside the lab once that pod was gone). The wait goes on until the function itself
    answers 200 there, and past its deadline it names what it got."""
    from playbooks.core.deadline import Deadline

    answers = [403, 403, 200]
    with function_answering(answers) as (url, served, ctx):
        assert faas.answers_at(ctx, url).startswith(f"answers at {url} (")
        assert [m for m in ctx.said if "HTTP 403" in m] and len(ctx.said) == 2
        answers[:] = [403]
        ctx.deadline = Deadline.after(1.5)
        with pytest.raises(faas.StepFailed, match=r"pod is Ready, but .* does not answer it \(HTTP 403\)"):
            faas.answers_at(ctx, url)


def test_one_answer_from_the_node_port_is_not_enough_while_it_may_still_lead_to_the_old_pod():
    """CI: kube-proxy still had the old pod's address beside the new one's; a GET reached the new pod (200)
    and the POST right after went to the old address (HTTP 403 from outside the lab). The wait needs its
    answers in a row: a 200 followed by a 403 starts the count again."""
    with function_answering([200, 403, 200]) as (url, served, ctx):
        assert faas.answers_at(ctx, url).startswith(f"answers at {url} (")
        assert len(ctx.said) == 1 and "HTTP 403" in ctx.said[0]  # the first 200 did not end the wait
        assert served[-faas.ANSWERS_IN_A_ROW:] == [200] * faas.ANSWERS_IN_A_ROW and served[:2] == [200, 403]

