"""Offline mode: settings, which images each part runs, kind's config for kindlab's node image, gating."""
import pytest
import yaml

from playbooks import parts
from playbooks import cluster, faas, images, lab as lab_play, nginx
from playbooks.core.commands import Result
from playbooks.core.settings import Lab, lab_from_config, remember_lab


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


def test_online_parts_run_their_pinned_images_and_offline_ones_kindlabs():
    online, offline = Lab(), Lab(offline=True)
    assert nginx.image(online) == online.nginx_image
    assert nginx.image(offline) == images.reference("nginx")
    assert faas.registry_image(online) == faas.REGISTRY["image"]
    assert faas.registry_image(offline) == images.reference("registry")
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
    assert cluster.node_image(Lab()) == ""
    assert cluster.node_image(Lab(offline=True)) == images.reference("node")
    assert cluster.node_image(Lab(node_image="example/node:1", offline=True)) == "example/node:1"
    config = cluster.render_kind_config(Lab(offline=True))
    assert config["networking"]["kubeProxyMode"] == "nftables"
    patch = yaml.safe_load(config["kubeadmConfigPatches"][0])
    assert patch["kind"] == "ClusterConfiguration" and patch["imageRepository"] == images.REPOSITORY
    etcd, dns = images.reference("etcd"), images.reference("coredns")
    assert f"{images.REPOSITORY}/etcd:{patch['etcd']['local']['imageTag']}" == etcd
    assert f"{images.REPOSITORY}/coredns:{patch['dns']['imageTag']}" == dns
    # kind's own node image gets kind's own settings
    assert "kubeadmConfigPatches" not in cluster.render_kind_config(Lab())
    assert "kubeadmConfigPatches" not in cluster.render_kind_config(Lab(node_image="kindest/node:v1.33.1"))


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
    def __init__(self, sh):
        self.sh = sh


def run_checks(steps, sh):
    return {s.name: s.check(Ctx(sh)) for s in steps}


def test_all_offline_runs_parts_whose_images_exist_and_skips_the_others_with_the_reason():
    built = Engine({images.reference("nginx"): images.inputs_hash("nginx")})
    steps = lab_play.all_steps(Lab(offline=True), parts.choose())
    gates = {s.name: s for s in steps if s.name.endswith("images (offline)")}
    results = run_checks(gates.values(), built)
    assert results["nginx images (offline)"].state == "ok"
    assert results["monitoring images (offline)"].state == "skip"
    assert "Grafana" in results["monitoring images (offline)"].detail
    assert "OpenFaaS" in results["faas images (offline)"].detail
    assert results["ray images (offline)"].state == "skip"
    # every later step of a skipped part is skipped too, not just its first
    faas_steps = [s for s in steps if s.name in ("namespace openfaas-fn", "function reverse deployed")]
    assert all(s.check(Ctx(built)).state == "skip" for s in faas_steps)


def test_offline_nginx_not_built_is_skipped_with_the_build_command():
    reason = lab_play.offline_blocker(Engine({}), parts.REGISTRY["nginx"])
    assert "invoke images.build --only nginx" in reason
    stale = Engine({images.reference("nginx"): "an older hash"})
    assert lab_play.offline_blocker(stale, parts.REGISTRY["nginx"]) is not None


def test_online_all_has_no_offline_gates():
    names = [s.name for s in lab_play.all_steps(Lab(), parts.choose())]
    assert not [n for n in names if "(offline)" in n]


def test_the_addresses_list_only_the_parts_that_ran():
    from playbooks.core.runner import Outcome
    outcomes = [Outcome("nginx images (offline)", "ok", 0.0), Outcome("faas images (offline)", "skipped", 0.0)]
    chosen = [parts.REGISTRY[name] for name in ("nginx", "faas", "ray")]
    assert [p.name for p in lab_play.parts_that_ran(chosen, outcomes)] == ["nginx", "ray"]
