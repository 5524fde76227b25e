"""Settings validation, the rendered kind config, kubeconfig merging, kwok config."""
from pathlib import Path

import pytest
import yaml

from playbooks import cluster
from playbooks.core import kubeconfig
from playbooks.core.settings import Lab, SettingsError, lab_from_config, parse_count, remember_lab
from playbooks import parts
from playbooks.providers import KindProvider
from playbooks.parts import REGISTRY
from playbooks.providers.kwok import render_kwok_config


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


@pytest.mark.parametrize("value,error", [("-1", "at least 0"), ("abc", "whole number"), ("1.5", "whole number")])
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
    config = KindProvider(Lab(ports=(("nginx", 30080), ("http", 8080)), workers=2)).render_config(REGISTRY.values())
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
    config = KindProvider(Lab(ports=(("nginx", 31000), ("http", 9090)), listen_address="0.0.0.0")).render_config(REGISTRY.values())
    hosts = {m["containerPort"]: (m["hostPort"], m["listenAddress"]) for m in config["nodes"][0]["extraPortMappings"]}
    assert hosts == {30080: (31000, "0.0.0.0"), 80: (9090, "0.0.0.0"), 31112: (31112, "0.0.0.0")}


def test_kwok_config_has_loopback_binding_all_stages_and_the_configured_delay():
    from playbooks.core.settings import KwokSettings
    docs = list(yaml.safe_load_all(render_kwok_config(Lab(kwok=KwokSettings(ready_delay_ms=2500)))))
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


@pytest.mark.parametrize("value", ["abc", "-5", "0", "nan", "inf", "1e400", "86401"])
def test_bad_timeouts_are_refused(tmp_path, value):
    with pytest.raises(SettingsError, match="--timeout"):
        lab_from_config({"home": str(tmp_path)}, timeout=value)


# --- the `kindlab:` configuration: validated when loaded, defaults in one place ---------------
@pytest.mark.parametrize("config,message", [
    ({"workers": "two"}, "kindlab.workers must be a whole number, got 'two'"),
    ({"nginx": {"replica": 5}}, "kindlab.nginx.replica is not a setting: did you mean kindlab.nginx.replicas?"),
    ({"timout": 30}, "kindlab.timout is not a setting: did you mean kindlab.timeout?"),
    ({"ports": {"nginx": 70000}}, "kindlab.ports.nginx must be at most 65535, got 70000"),
    ({"nginx": {"replicas": 100000}}, "kindlab.nginx.replicas must be at most 100"),
    ({"timeout": float("nan")}, "kindlab.timeout must be a finite number"),
    ({"offline": "yes please"}, "kindlab.offline must be true or false"),
    ({"provider": "minikube"}, "kindlab.provider must be one of kind, kwok, existing"),
    ({"charts": ["a"]}, "kindlab.charts must map names to strings"),
    ({"kwok": 3}, "kindlab.kwok must be a mapping of settings"),
])
def test_a_bad_setting_is_refused_with_one_sentence(tmp_path, config, message):
    with pytest.raises(SettingsError) as err:  # kindlab's settings and what its parts declare
        lab_from_config({"home": str(tmp_path), **config}, parts.SCHEMA)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_every_problem_is_named_at_once(tmp_path):
    with pytest.raises(SettingsError) as err:
        lab_from_config({"home": str(tmp_path), "workers": -1, "nginx": {"imag": "x"}}, parts.SCHEMA)
    assert "kindlab.workers must be at least 0" in str(err.value)
    assert "did you mean kindlab.nginx.image?" in str(err.value)


def test_defaults_are_written_once_and_reach_invoke_and_the_lab():
    from playbooks import nginx
    from playbooks.core.settings import DEFAULTS, SCHEMA, Lab, KwokSettings, defaults
    assert DEFAULTS["timeout"] == SCHEMA["timeout"].default == Lab().timeout == 300
    # a part's own: declared on the part, in the schema Invoke gets (tasks.py), the default the part reads
    assert defaults(parts.SCHEMA)["nginx"]["replicas"] == nginx.replicas(Lab()) == 3
    assert DEFAULTS["kwok"]["ready_delay_ms"] == KwokSettings().ready_delay_ms
    # invoke.yaml sets nothing: Invoke gets every default from SCHEMA (tasks.py configures the collection)
    project = yaml.safe_load((Path(__file__).resolve().parents[2] / "invoke.yaml").read_text())
    assert project == {"kindlab": {}}


def _invoke(args, tmp_path, **env):
    import os
    import subprocess
    import sys
    repo = Path(__file__).resolve().parents[2]
    full_env = {**os.environ, "KINDLAB_HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none"), **env}
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=repo, capture_output=True, text=True,
                          env=full_env, timeout=120)


def test_the_cli_refuses_a_malformed_or_misspelt_config_file_in_one_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("kindlab:\n  workers: [\n")
    proc = _invoke(["-f", str(broken), "nginx.deploy", "--check"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "broken.yaml" in proc.stderr and "not valid YAML" in proc.stderr and "Traceback" not in proc.stderr
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text("kindlab:\n  nginx: {replica: 5}\n")
    proc = _invoke(["-f", str(misspelt), "nginx.deploy", "--check"], tmp_path)
    assert proc.returncode == 2 and "did you mean" in proc.stderr and "nginx.replicas" in proc.stderr


def test_an_environment_variable_overrides_a_default(tmp_path):
    proc = _invoke(["nginx.scale", "--check", "--provider", "kwok", "--name", "never-made"], tmp_path,
                   INVOKE_KINDLAB_NGINX_REPLICAS="7")
    assert "nginx scaled to 7" in proc.stdout, proc.stdout + proc.stderr
