"""The programs kindlab builds for itself (toolchain.COMPONENTS): pinned once, wrapper modules agree."""
import re
from pathlib import Path

from playbooks import toolchain


def _required(go_mod: Path, module: str) -> str:
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (\S+)", go_mod.read_text(), re.MULTILINE)
    assert match, f"{go_mod} does not require {module}"
    return match.group(1)


def test_components_are_pinned_and_never_shadow_a_tool():
    assert not set(toolchain.COMPONENTS) & set(toolchain.TOOLS)
    for name, spec in toolchain.COMPONENTS.items():
        assert spec.name == name
        assert re.fullmatch(r"v\d+\.\d+\.\d+", spec.version), name
        if spec.go.wrapper:
            assert (toolchain.TOOLS_DIR / spec.go.wrapper / "go.mod").is_file(), name


def test_node_binaries_share_the_testbeds_kubernetes_and_its_module_versions():
    tools = toolchain.TOOLS_DIR
    for name in ("kubeadm", "kubelet", "kube-proxy"):
        assert toolchain.COMPONENTS[name].version == toolchain.KUBE_VERSION
    assert _required(tools / "kube-node" / "go.mod", "k8s.io/kubernetes") == toolchain.KUBE_VERSION
    # Same versions of the modules both wrappers use: one Go build cache serves both.
    node, control_plane = (tools / "kube-node" / "go.mod").read_text(), (tools / "kube-control-plane" / "go.mod").read_text()
    pins = re.compile(r"^\s+(\S+) (v\S+)", re.MULTILINE)
    shared = dict(pins.findall(node)).keys() & dict(pins.findall(control_plane)).keys()
    assert shared and all(dict(pins.findall(node))[m] == dict(pins.findall(control_plane))[m] for m in shared)


def test_wrapper_modules_pin_what_the_table_stamps():
    tools = toolchain.TOOLS_DIR
    assert _required(tools / "containerd" / "go.mod", "github.com/containerd/containerd/v2") == \
        toolchain.CONTAINERD_VERSION
    assert _required(tools / "coredns" / "go.mod", "github.com/coredns/coredns") == toolchain.COREDNS_VERSION
