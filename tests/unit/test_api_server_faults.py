"""An API server that stalls or is down, met by the client and the waits (a local socket plays it)."""
import socket
import threading

import pytest
import yaml

from playbooks.core.kube import ApiServerUnreachable, Kube
from playbooks.core.steps import WaitTimeout, is_transient

FIX = "`invoke cluster.create` restarts it"


def kube_for(tmp_path, port: int) -> Kube:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "",
              "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                     "insecure-skip-tls-verify": True}}],
              "users": [{"name": "u", "user": {"token": "t"}}],
              "contexts": [{"name": "kwok-t", "context": {"cluster": "c", "user": "u"}}]}
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    return Kube(tmp_path / "kubeconfig", "kwok-t", fix=FIX)


@pytest.fixture
def stalled_port():
    """A server that takes connections and never answers, like a SIGSTOPped API server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def dead_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def in_thread(fn, limit_s: float = 120):
    """Run fn; return (finished, its exception) after at most limit_s (a hung wait would never finish)."""
    result: dict = {}

    def run():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["exc"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(limit_s)
    return not worker.is_alive(), result.get("exc")


def test_a_wait_on_a_stalled_api_server_ends_at_its_deadline_and_names_the_stall(tmp_path, stalled_port):
    kube = kube_for(tmp_path, stalled_port)
    said: list[str] = []
    finished, exc = in_thread(lambda: kube.wait_deployment("default", "nginx", timeout=7, say=said.append))
    assert finished, "the wait was still waiting for the stalled API server"
    assert isinstance(exc, WaitTimeout), exc
    assert str(exc).startswith("deployment default/nginx: gave up after 7s: the API server did not answer for ")
    assert FIX in str(exc) and "pods Ready" not in str(exc)
    # while it waited it said so (its calls are cut at 5s to come back and report)
    assert any(m.startswith("the API server does not answer (no answer within 5s)") for m in said), said


def test_a_short_wait_on_a_stalled_api_server_ends_too(tmp_path, stalled_port):
    kube = kube_for(tmp_path, stalled_port)
    finished, exc = in_thread(lambda: kube.wait_deployment("default", "nginx", timeout=2))
    assert finished and isinstance(exc, WaitTimeout), exc
    assert "gave up after 2s: the API server did not answer for 2s (no answer within 2s)" in str(exc)


def test_a_call_to_a_down_api_server_is_one_sentence_with_the_next_step(tmp_path, dead_port):
    kube = kube_for(tmp_path, dead_port)
    with pytest.raises(ApiServerUnreachable) as caught:
        kube.apps.read_namespaced_deployment("nginx", "default")
    message = str(caught.value)
    assert message == (f"the API server of kwok-t (https://127.0.0.1:{dead_port}) is down or stalled: "
                       f"connection refused; {FIX}")
    assert is_transient(caught.value)  # the runner still retries it


def test_a_call_outside_a_wait_has_a_timeout_too(tmp_path, stalled_port):
    kube = kube_for(tmp_path, stalled_port)
    assert kube.request_timeout() == 30.0
    with kube.deadline(float("inf")):
        assert kube.request_timeout() == 5.0
        assert kube.request_timeout(10) == 10.0  # a watch asks for its own
