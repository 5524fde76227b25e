"""Settings validation, the rendered kind config, kubeconfig merging, kwok config."""
from pathlib import Path

import pytest
import yaml

from playbooks import cluster
from playbooks.core import kubeconfig
from playbooks.core.settings import Lab, SettingsError, lab_from_config, parse_count, remember_lab


def test_defaults_target_an_explicit_kind_context(tmp_path):
    lab = lab_from_config({"home": str(tmp_path)})
    assert lab.provider == "kind" and lab.cluster == "cloud-hw" and lab.context == "kind-cloud-hw"


@pytest.mark.parametrize("name", ["Cloud_HW", "-x", "x-", "a b", "UPPER", ""])
def test_invalid_cluster_names_are_refused(tmp_path, name):
    with pytest.raises(SettingsError, match="invalid cluster name"):
        Lab(cluster=name, home=tmp_path).validate()


def test_unknown_provider_and_existing_without_context_are_refused(tmp_path):
    with pytest.raises(SettingsError, match="unknown provider"):
        lab_from_config({"home": str(tmp_path)}, provider="minikube")
    with pytest.raises(SettingsError, match="--context"):
        lab_from_config({"home": str(tmp_path)}, provider="existing")


@pytest.mark.parametrize("value,error", [("-1", "0 or more"), ("abc", "whole number"), ("1.5", "whole number")])
def test_replica_counts_must_be_whole_non_negative(value, error):
    with pytest.raises(SettingsError, match=error):
        parse_count(value, "--replicas")
    assert parse_count("3", "--replicas") == 3


def test_the_last_created_lab_is_the_default_target(tmp_path):
    remember_lab(Lab(provider="kwok", cluster="t1", home=tmp_path))
    lab = lab_from_config({"home": str(tmp_path)})
    assert (lab.provider, lab.cluster, lab.context) == ("kwok", "t1", "kwok-t1")
    # an explicit flag wins over what was remembered
    assert lab_from_config({"home": str(tmp_path)}, provider="kind").context == "kind-cloud-hw"


def test_kind_config_puts_port_mappings_under_the_control_plane_node():
    config = cluster.render_kind_config(Lab(nginx_port=30080, http_port=8080, workers=2))
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert "extraPortMappings" not in config  # the writeup's mistake: mappings at the top level
    cp, *workers = config["nodes"]
    assert cp["role"] == "control-plane" and [w["role"] for w in workers] == ["worker", "worker"]
    mappings = {(m["containerPort"], m["hostPort"], m["listenAddress"], m["protocol"])
                for m in cp["extraPortMappings"]}
    assert mappings == {(30080, 30080, "127.0.0.1", "TCP"), (80, 8080, "127.0.0.1", "TCP"),
                        (31112, 31112, "127.0.0.1", "TCP")}
    assert 'config_path = "/etc/containerd/certs.d"' in config["containerdConfigPatches"][0]


def test_kind_config_follows_settings():
    config = cluster.render_kind_config(Lab(nginx_port=31000, http_port=9090, listen_address="0.0.0.0"))
    hosts = {m["containerPort"]: (m["hostPort"], m["listenAddress"]) for m in config["nodes"][0]["extraPortMappings"]}
    assert hosts == {30080: (31000, "0.0.0.0"), 80: (9090, "0.0.0.0"), 31112: (31112, "0.0.0.0")}


def test_kwok_config_has_loopback_binding_all_stages_and_the_configured_delay():
    from playbooks.core.settings import KwokSettings
    docs = list(yaml.safe_load_all(cluster.render_kwok_config(Lab(kwok=KwokSettings(ready_delay_ms=2500)))))
    assert docs[0]["kind"] == "KwokctlConfiguration" and docs[0]["options"]["bindAddress"] == "127.0.0.1"
    stages = {d["metadata"]["name"]: d for d in docs[1:]}
    assert {"kindlab-node-ready", "kindlab-pod-create", "kindlab-pod-ready", "kindlab-pod-delete",
            "kindlab-fault-image-pull", "kindlab-fault-crash-loop"} <= set(stages)
    assert stages["kindlab-pod-ready"]["spec"]["delay"]["durationMilliseconds"] == 2500


KIND_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: kind-t1
  cluster: {server: "https://127.0.0.1:40000", certificate-authority-data: QUJD}
users:
- name: kind-t1
  user: {client-certificate-data: REVG, client-key-data: R0hJ}
contexts:
- name: kind-t1
  context: {cluster: kind-t1, user: kind-t1}
current-context: kind-t1
"""


def test_merge_keeps_the_users_current_context_and_other_entries(tmp_path):
    dest = tmp_path / "config"
    dest.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "work",
        "clusters": [{"name": "work", "cluster": {"server": "https://work"}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "work", "context": {"cluster": "work", "user": "me"}}]}))
    entries = kubeconfig.context_entries(KIND_KUBECONFIG, "kind-t1")
    assert not kubeconfig.has_entries(dest, entries)
    kubeconfig.merge(dest, entries)
    data = yaml.safe_load(dest.read_text())
    assert data["current-context"] == "work"
    assert {c["name"] for c in data["contexts"]} == {"work", "kind-t1"}
    assert kubeconfig.has_entries(dest, entries)
    kubeconfig.merge(dest, entries)  # idempotent: no duplicates
    assert len(yaml.safe_load(dest.read_text())["contexts"]) == 2
    assert kubeconfig.remove_context(dest, "kind-t1")
    assert not kubeconfig.remove_context(dest, "kind-t1")
    data = yaml.safe_load(dest.read_text())
    assert [c["name"] for c in data["clusters"]] == ["work"] and data["current-context"] == "work"


@pytest.mark.parametrize("value", ["abc", "-5", "0"])
def test_bad_timeouts_are_refused(tmp_path, value):
    with pytest.raises(SettingsError, match="--timeout"):
        lab_from_config({"home": str(tmp_path)}, timeout=value)
