"""Offline mode: settings, which images each part runs, kind's config for kindlab's node image, gating."""
from pathlib import Path

import pytest
import yaml

from playbooks import parts
from playbooks import cluster, faas, images, lab as lab_play, nginx
from playbooks.core.commands import Result
from playbooks.core.settings import Lab, lab_from_config, remember_lab
from playbooks.core.steps import StepFailed
from playbooks.providers import KindProvider
from playbooks.parts import REGISTRY


def test_offline_node_image_and_image_overrides_come_from_config_and_flags(tmp_path):
    cfg = {"home": str(tmp_path), "kind": {"node_image": "example/node:1"},
           "images": {"nginx": "example/nginx:2", "registry": ""}}
    lab = lab_from_config(cfg)
    assert not lab.offline and lab.node_image == "example/node:1"
    assert lab.image_override("nginx") == "example/nginx:2" and lab.image_override("registry") is None
    assert lab_from_config({"home": str(tmp_path)}, offline=True).offline
    assert lab_from_config({"home": str(tmp_path), "offline": True}).offline


def test_a_cluster_created_offline_keeps_later_tasks_offline(tmp_path):
    remember_lab(Lab(provider="kind", cluster="lab1", home=tmp_path, offline=True))
    later = lab_from_config({"home": str(tmp_path)})
    assert later.cluster == "lab1" and later.offline
    # another cluster named explicitly is not the remembered one
    assert not lab_from_config({"home": str(tmp_path)}, provider="kind", name="other").offline
    # the same cluster named by the configuration (as `invoke -f lab.yaml faas.deploy` after `invoke -f
    # lab.yaml all` found no registry): offline too, or its parts would look for the OpenFaaS gateway
    assert lab_from_config({"home": str(tmp_path), "provider": "kind", "cluster": "lab1"}).offline
    assert lab_from_config({"home": str(tmp_path)}, provider="kind", name="lab1").offline


def test_online_parts_run_their_pinned_images_and_offline_ones_kindlabs():
    online, offline = Lab(), Lab(offline=True)
    assert nginx.image(online) == nginx.SETTINGS["image"].default
    assert nginx.image(offline) == images.reference("nginx")
    assert KindProvider(online).registry_image() == "registry:2.8.3"
    assert KindProvider(offline).registry_image() == images.reference("registry")
    override = Lab(offline=True, images=(("nginx", "example/nginx:2"),))
    assert nginx.image(override) == "example/nginx:2"
    deploy = nginx.documents(offline)[0]
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == images.reference("nginx")


def test_offline_nginx_loads_its_image_into_the_kind_nodes_first():
    names = [s.name for s in nginx.deploy_steps(Lab(offline=True))]
    assert names == ["nginx image(s) in the kind nodes", "nginx deployment and service"]
    assert [s.name for s in nginx.deploy_steps(Lab())] == ["nginx deployment and service"]
    assert [s.name for s in nginx.deploy_steps(Lab(provider="kwok", offline=True))] == \
        ["nginx deployment and service"]


def test_kindlabs_node_image_gets_the_kubeadm_settings_it_needs():
    assert KindProvider(Lab()).node_image() == ""
    assert KindProvider(Lab(offline=True)).node_image() == images.reference("node")
    assert KindProvider(Lab(node_image="example/node:1", offline=True)).node_image() == "example/node:1"
    config = KindProvider(Lab(offline=True)).render_config(REGISTRY.values())
    assert config["networking"]["kubeProxyMode"] == "nftables"
    patch = yaml.safe_load(config["kubeadmConfigPatches"][0])
    assert patch["kind"] == "ClusterConfiguration" and patch["imageRepository"] == images.REPOSITORY
    etcd, dns = images.reference("etcd"), images.reference("coredns")
    assert f"{images.REPOSITORY}/etcd:{patch['etcd']['local']['imageTag']}" == etcd
    assert f"{images.REPOSITORY}/coredns:{patch['dns']['imageTag']}" == dns
    # kind's own node image gets kind's own settings
    assert "kubeadmConfigPatches" not in KindProvider(Lab()).render_config(REGISTRY.values())
    assert "kubeadmConfigPatches" not in KindProvider(Lab(node_image="kindest/node:v1.33.1")).render_config(REGISTRY.values())


class Engine:
    """`docker image inspect` answering from a dict of ref -> inputs label."""

    def __init__(self, present):
        self.present = present

    def run(self, argv, check=True, **kw):
        ref = argv[-1]
        if argv[:3] == ["docker", "image", "inspect"] and ref in self.present:
            return Result(tuple(argv), 0, '{"kindlab.dev/inputs": "%s"}' % self.present[ref], "")
        return Result(tuple(argv), 1, "", f"Error: No such image: {ref}")


class Ctx:
    def __init__(self, sh, lab=None):
        self.sh = sh
        self.lab = lab or Lab(offline=True)


def run_checks(steps, sh, lab=None):
    """Each step's check, and what it decides handed on, as the runner does."""
    results = {}
    for s in steps:
        results[s.name] = s.check(Ctx(sh, lab))
        if s.decides is not None:
            s.decides.set(results[s.name].value)
    return results


STUBS = Path(__file__).resolve().parents[1] / "fixtures" / "charts"
LOCAL_CHARTS = (("kuberay-operator", str(STUBS / "kuberay-operator-stub")), ("monitoring", str(STUBS / "kps-stub")),
                ("ray-cluster", str(STUBS / "ray-cluster-stub")))


def built(*names):
    return Engine({images.reference(n): images.inputs_hash(n) for n in names})


def fake_archive(tmp_path, monkeypatch, name: str) -> Path:
    """A folder holding a stand-in for source archive `name`, pinned as kindlab would pin it."""
    import dataclasses
    import hashlib
    import io
    import tarfile

    from playbooks import sources

    archive = sources.ARCHIVES[name]
    folder = tmp_path / archive.group
    folder.mkdir(exist_ok=True)
    with tarfile.open(folder / archive.file, "w:gz") as tar:
        info = tarfile.TarInfo(f"{archive.folder}/README")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    digest = hashlib.sha256((folder / archive.file).read_bytes()).hexdigest()
    monkeypatch.setitem(sources.ARCHIVES, name, dataclasses.replace(archive, sha256=digest))
    return folder


def test_all_offline_runs_parts_whose_images_and_charts_are_here_and_skips_the_others_with_the_reason(
        tmp_path, monkeypatch):
    everything = built(*images.CATALOG)
    lab = Lab(offline=True, charts=LOCAL_CHARTS)
    steps = lab_play.all_steps(lab, parts.choose())
    gates = {s.name: s for s in steps if s.name.endswith("images (offline)")}
    results = run_checks(gates.values(), everything, lab)
    assert {name: r.state for name, r in results.items()} == {
        "nginx images (offline)": "ok", "monitoring images (offline)": "ok", "ray images (offline)": "ok",
        "faas images (offline)": "skipped"}
    # faas builds its function from the template's source archive, which no setting names here
    assert "kindlab.sources.openfaas names no folder" in results["faas images (offline)"].detail
    # every later step of a skipped part is skipped too, not just its first
    faas_steps = [s for s in steps if s.name in ("namespace openfaas-fn", "function reverse deployed")]
    assert all(s.check(Ctx(everything, lab)).state == "skipped" for s in faas_steps)

    # with the archive where kindlab.sources says, faas runs offline, saying why without its platform
    folder = fake_archive(tmp_path, monkeypatch, "python-flask-template")
    lab = Lab(offline=True, charts=LOCAL_CHARTS, sources=(("openfaas", str(folder)),))
    gate = next(s for s in lab_play.all_steps(lab, parts.choose()) if s.name == "faas images (offline)")
    result = gate.check(Ctx(everything, lab))
    assert result.state == "ok" and "OpenFaaS CE refuses to start without internet" in result.detail


def test_offline_a_source_archive_that_differs_from_the_pinned_one_is_refused(tmp_path):
    from playbooks import sources

    folder = tmp_path / "openfaas"
    folder.mkdir()
    (folder / sources.ARCHIVES["python-flask-template"].file).write_bytes(b"not the archive")
    reason = sources.reason_missing("python-flask-template", {"openfaas": str(folder)})
    assert "not the " + sources.ARCHIVES["python-flask-template"].sha256 in reason and "get the archive again" in reason


def test_offline_a_part_whose_chart_only_a_repository_has_is_skipped_naming_the_setting():
    results = run_checks([s for s in lab_play.all_steps(Lab(offline=True), parts.choose())
                          if s.name in ("monitoring images (offline)", "ray images (offline)")],
                         built(*images.CATALOG))
    monitoring_, ray_ = results["monitoring images (offline)"], results["ray images (offline)"]
    assert monitoring_.state == ray_.state == "skipped"
    assert "prometheus-community/kube-prometheus-stack 79.9.0: set kindlab.charts.monitoring" in monitoring_.detail
    assert "kindlab.charts.kuberay-operator" in ray_.detail and "kindlab.charts.ray-cluster" in ray_.detail


def test_offline_a_part_whose_images_are_not_built_is_skipped_with_the_build_command():
    lab = Lab(offline=True, charts=LOCAL_CHARTS)
    result = run_checks([s for s in lab_play.all_steps(lab, parts.choose(only="ray"))
                         if s.name == "ray images (offline)"], built("nginx", "kuberay-operator"), lab)
    assert result["ray images (offline)"].state == "skipped"
    assert "invoke images.build --only ray" in result["ray images (offline)"].detail


def test_offline_nginx_not_built_is_skipped_with_the_build_command():
    reason = parts.offline_reason(Engine({}), parts.REGISTRY["nginx"], Lab(offline=True))
    assert "invoke images.build --only nginx" in reason
    stale = Engine({images.reference("nginx"): "an older hash"})
    assert parts.offline_reason(stale, parts.REGISTRY["nginx"], Lab(offline=True)) is not None


def test_online_all_has_no_offline_gates():
    names = [s.name for s in lab_play.all_steps(Lab(), parts.choose())]
    assert not [n for n in names if "(offline)" in n]


def test_the_addresses_list_only_the_parts_that_ran():
    from playbooks.core.runner import Outcome
    outcomes = [Outcome("nginx images (offline)", "ok", 0.0), Outcome("faas images (offline)", "skipped", 0.0)]
    chosen = [parts.REGISTRY[name] for name in ("nginx", "faas", "ray")]
    assert [p.name for p in lab_play.parts_that_ran(chosen, outcomes)] == ["nginx", "ray"]


# --- no flag: offline where no container registry answers -------------------------------------
class DockerInfo:
    """`docker info` answering with the index the engine pulls from."""

    def __init__(self, index: str):
        self.index = index

    def which(self, tool):
        return f"/usr/bin/{tool}"

    def run(self, argv, check=True, **kw):
        import json
        if argv[:2] == ["docker", "info"]:
            return Result(tuple(argv), 0, json.dumps({"ServerVersion": "20.10", "IndexServerAddress": self.index}), "")
        return Engine({images.reference("node"): images.inputs_hash("node")}).run(argv, check, **kw)


def test_the_engines_registry_is_asked_once_quickly_and_any_answer_means_online():
    import http.server
    import threading

    class Unauthorized(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)  # what a registry's index says to a stranger: it answers
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        answering = KindProvider(Lab()).no_registry(DockerInfo(f"http://127.0.0.1:{server.server_port}/v1/"))
    finally:
        server.shutdown()
        server.server_close()
    assert answering is None
    gone = KindProvider(Lab()).no_registry(DockerInfo(f"http://127.0.0.1:{server.server_port}/v1/"))
    assert gone.startswith(f"http://127.0.0.1:{server.server_port}/v1/ does not answer (")


def test_without_a_registry_a_new_cluster_is_made_offline_saying_why_in_one_line(monkeypatch):
    said = []
    monkeypatch.setattr(KindProvider, "no_registry", lambda self, sh: "the index does not answer (no such host)")
    lab = cluster.offline_without_registry(Lab(), DockerInfo("x"), said.append)
    assert lab.offline and len(said) == 1 and "\n" not in said[0]
    assert said[0].startswith("offline: no container registry answers (the index does not answer (no such host))")
    # the node image not built either: it stops, naming the one command that builds it
    with pytest.raises(StepFailed, match=r"image\(s\) node are not built: run `invoke setup`"):
        cluster.offline_without_registry(Lab(), Engine({}), said.append)


def test_with_a_registry_or_when_told_nothing_changes_and_nothing_is_asked(monkeypatch):
    asked = []
    monkeypatch.setattr(KindProvider, "no_registry", lambda self, sh: asked.append(1))
    assert cluster.offline_without_registry(Lab(), Engine({}), print) == Lab()  # it answered
    for told in (Lab(offline=True), Lab(node_image="example/node:1")):
        assert cluster.offline_without_registry(told, Engine({}), print) is told
    assert len(asked) == 1
    assert cluster.offline_without_registry(Lab(provider="kwok"), Engine({}), print) == Lab(provider="kwok")


# -- images in the kind nodes: one `docker image inspect` and one `crictl images` per node ----------------


class NodeImages:
    """docker and crictl as the images step asks them: the local engine's images and each node's."""

    def __init__(self, local: dict, nodes: dict):
        self.local, self.node_images, self.calls = local, nodes, []

    def run(self, argv, check=True, **kwargs):
        import json
        self.calls.append(tuple(argv))
        if argv[:2] == ["docker", "ps"]:
            return Result(tuple(argv), 0, "".join(f"{n}\trunning\n" for n in self.node_images), "")
        if argv[:3] == ["docker", "image", "inspect"]:
            refs = [a for a in argv[3:] if not a.startswith("--") and a != "{{.Id}}"]
            found = [self.local[r] for r in refs if r in self.local]
            code = 0 if len(found) == len(refs) else 1
            return Result(tuple(argv), code, "".join(f"{i}\n" for i in found), "" if code == 0 else "No such image")
        if argv[:2] == ["docker", "exec"] and argv[3:5] == ["crictl", "images"]:
            images = [{"id": i, "repoTags": [tag]} for tag, i in self.node_images[argv[2]].items()]
            return Result(tuple(argv), 0, json.dumps({"images": images}), "")
        raise AssertionError(f"unexpected command {argv}")


def test_images_in_the_kind_nodes_are_checked_with_one_call_per_node_and_a_short_name_is_docker_hubs(tmp_path):
    from types import SimpleNamespace

    lab = Lab(provider="kind", cluster="lab", home=tmp_path, kubeconfig=tmp_path / "kubeconfig", offline=True)
    ours, hubs = f"{images.REPOSITORY}/nginx:abc", "busybox:1.36"
    sh = NodeImages({ours: "sha256:1", hubs: "sha256:2"},
                    {"lab-control-plane": {ours: "sha256:1", "docker.io/library/busybox:1.36": "sha256:2"},
                     "lab-worker": {ours: "sha256:old", "docker.io/library/busybox:1.36": "sha256:2"}})
    step = KindProvider(lab).images_steps("nginx", [ours, hubs])[0]
    result = step.check(SimpleNamespace(sh=sh, lab=lab, shared={}))
    assert result.needs_change and result.detail == f"load {ours} into lab-worker"
    assert sum(1 for c in sh.calls if c[:2] == ("docker", "exec")) == 2  # one per node, not per node and image
    assert sum(1 for c in sh.calls if c[:3] == ("docker", "image", "inspect")) == 1
    sh.node_images["lab-worker"][ours] = "sha256:1"
    assert not step.check(SimpleNamespace(sh=sh, lab=lab, shared={})).needs_change
    del sh.local[hubs]
    with pytest.raises(StepFailed, match="image busybox:1.36 is not in the local Docker engine"):
        step.check(SimpleNamespace(sh=sh, lab=lab, shared={}))
