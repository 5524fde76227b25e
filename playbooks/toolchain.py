"""The command-line tools the lab and its testbed run, pinned and installed.

The lab shells out to kind, kubectl, helm and faas-cli; the kwok testbed runs
kwok, kwokctl, etcd and the Kubernetes control-plane binaries. Each tool is
pinned here to one version and is installed into one bin directory, either by
downloading the project's release binary, checked against the sha256 the
project publishes beside it (as arkade does), or, where the releases cannot be
reached, by building it from Go source through the Go module proxy.

Building from source: tools whose own module builds cleanly are installed with
`go install module/cmd@version`. The rest are built from the small wrapper
modules in the repository's `tools/` folder, which pin the published library
modules a plain `go install` cannot resolve (etcd's and Kubernetes' go.mod files
replace their siblings with local paths). Versions are stamped with -ldflags -X
so that `--version` reports the pin: kwokctl reads the control plane's version
to choose flags, and an unstamped Kubernetes build claims to be v0.0.0.

A build goes to a temporary folder inside the bin directory and is renamed into
place only after the new binary has answered its version command, so an
interrupted or failed install never leaves a broken tool behind.

This module decides and does nothing at import time; the step engine calls
`installed_version` (the read-only check) and `install` (the change).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from .core.settings import default_bin_dir  # the tool cache's place: one definition

LAB_TOOLS = ("kind", "kubectl", "helm", "faas-cli")
TESTBED_TOOLS = (
    "kwok",
    "kwokctl",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    # Operators run as local processes beside the simulated control plane, so
    # RayClusters and Prometheus resources become pods there as on kind.
    "ray-operator",
    "prometheus-operator",
)

# One Kubernetes minor for kubectl and the testbed's control plane: kind v0.29.0
# runs 1.33 nodes, and kubectl is supported within one minor of the server.
KUBE_VERSION = "v1.33.13"
KIND_VERSION = "v0.29.0"
HELM_VERSION = "v3.22.0"
FAAS_CLI_VERSION = "0.18.11"  # faas-cli tags carry no "v"
KWOK_VERSION = "v0.8.0"
ETCD_VERSION = "v3.5.35"
# The operators of the charts kindlab pins (KubeRay 1.7.0, kube-prometheus-stack's
# v0.86.2), at the nearest versions the Go module proxy serves: it refuses
# ray-operator v1.7.0 and prometheus-operator v0.86.x.
RAY_OPERATOR_VERSION = "v1.6.2"
PROMETHEUS_OPERATOR_VERSION = "v0.85.0"

# What kindlab's kind node image runs besides Kubernetes (kind v0.29.0's own node
# image runs containerd 2.1.1 and CNI plugins 1.7.1; crictl 1.33.0 is not served
# by the module proxy, 1.34.0 is and speaks the same CRI API).
CONTAINERD_VERSION = "v2.1.1"
CRICTL_VERSION = "v1.34.0"
CNI_PLUGINS_VERSION = "v1.7.1"
COREDNS_VERSION = "v1.12.0"  # kubeadm 1.33's default, so its image tag needs no patch
REGISTRY_VERSION = "v3.0.0"  # distribution, the local registry of the faas part
# The monitoring part's programs offline (kube-prometheus-stack 79.9.0 runs Prometheus
# v3.7.x, node-exporter 1.10.x, Alertmanager 0.28.x). Prometheus' Go module numbers
# its releases v0.<major*100+minor>.<patch>: v0.307.3 is Prometheus 3.7.3.
PROMETHEUS_VERSION, PROMETHEUS_MODULE_VERSION = "v3.7.3", "v0.307.3"
NODE_EXPORTER_VERSION = "v1.10.2"
ALERTMANAGER_VERSION = "v0.28.1"
OF_WATCHDOG_VERSION = "0.11.3"  # the python3-http template's fwatchdog (its tags carry no "v")
# The chart's two programs whose modules the proxy refuses, built from their source
# archives (playbooks/sources.py): the kube-state-metrics subchart 6.4.2 runs v2.17.0,
# the admission webhooks' certificate Jobs kube-webhook-certgen v1.6.5.
KUBE_STATE_METRICS_VERSION, KUBE_STATE_METRICS_COMMIT = "v2.17.0", "f9f0a178a486"
KUBE_WEBHOOK_CERTGEN_VERSION = "v1.6.5"
KINDLAB_COMPONENT_VERSION = "v0.1.0"  # kindlab's own small programs (tools/pause, tools/capdrop-runc)

GO_MIN_VERSION = "1.26"  # helm, kwok and etcd at these pins declare go 1.26.0
VERSION_TIMEOUT_S = 30
BUILD_TIMEOUT_S = 3600
DOWNLOAD_TIMEOUT_S = 20
OUTPUT_LINES_IN_ERRORS = 12

TOOLS_DIR = Path(__file__).resolve().parent.parent / "tools"


class ToolInstallError(RuntimeError):
    """A tool could not be installed; the message says which, why and what to do."""


@dataclass(frozen=True)
class WebAssets:
    """A web UI whose source is in the Go module, built with npm and embedded into the binary.

    What Prometheus' own `make assets assets-compress` and its `builtinassets`
    build tag do: `npm ci` in `folder` (the npm workspace root), then
    `npm run build -w WORKSPACE` for each of `builds` in order; each (built
    folder, name) of `dist` moves to `folder`/static/name; every file there is
    gzipped, and `embed.go` is written from the module's `template` plus one
    `//go:embed` line naming the .gz files. The Go build then carries the tag.
    The result is kept in the tool cache under the sha256 of the UI's source,
    so a rebuild of the binary reuses it (npm keeps its own download cache).
    """

    folder: str
    builds: tuple[str, ...]
    dist: tuple[tuple[str, str], ...]
    template: str = "embed.go.tmpl"


@dataclass(frozen=True)
class GoBuild:
    """How a tool is built from Go source.

    `module_query` set: `go install package@module_query` (the package's module
    is fetched at that version). `wrapper` set: `go build -o ... package` inside
    tools/<wrapper>, whose go.mod pins every module.

    `archive` set: `go build package` inside that source archive, unpacked
    (playbooks/sources.py: its sha256 checked), for the tools whose modules the
    proxy refuses; `vendor` when the archive carries its dependencies (no
    network: GOPROXY=off), else they come from the module proxy.

    `patches` (wrapper builds only): files of one pinned module replaced by
    files of the wrapper folder, for a build that leaves parts out (Prometheus'
    generated list of service-discovery plugins). Go refuses to overlay files
    in its module cache, so the module's verified source is copied beside a
    copy of the wrapper, patched there, and the copy's go.mod points at it.
    `assets` (with `patches`, in that copy): a web UI built with npm and
    embedded (WebAssets); `tags`: Go build tags.
    """

    package: str
    module_query: str | None = None
    wrapper: str | None = None
    stamps: tuple[tuple[str, str], ...] = ()  # (Go variable, value) for -ldflags -X
    cgo: bool = False
    patches: tuple[str, tuple[tuple[str, str], ...]] | None = None  # (module, ((file in it, wrapper file), ...))
    archive: str | None = None  # sources.ARCHIVES name: built from that archive (after the module, if any)
    vendor: bool = False        # the archive vendors its dependencies
    tags: tuple[str, ...] = ()
    assets: WebAssets | None = None

    def ldflags(self) -> str:
        # -s -w drop the symbol table and DWARF: a third of the size, no runtime cost.
        return " ".join(["-s", "-w", *(f"-X {var}={value}" for var, value in self.stamps)])


@dataclass(frozen=True)
class ReleaseDownload:
    """A prebuilt release binary, and the checksum its project publishes beside it.

    `url`, `checksums` and `member` are templates over {version} (the release
    tag), {os}, {arch}, {exe} (".exe" on Windows), {archive} ("zip" or
    "tar.gz") and {asset} (the downloaded file's name). `checksums` is the URL
    of the checksum file: one hex digest, or `sha256sum` lines (`<hex>  <name>`).
    `github:OWNER/REPO` instead reads the sha256 GitHub publishes for each
    release asset, for projects that publish no checksum file. Nothing is
    installed whose checksum cannot be read or does not match.
    """

    url: str
    checksums: str
    member: str | None = None  # path inside a .tar.gz or .zip; None: the file is the binary
    zip_on: tuple[str, ...] = ("windows",)  # OSes whose archive is a .zip ({archive})
    assets: Mapping[str, str] = field(default_factory=dict)  # os/arch -> file name, where no pattern fits


@dataclass(frozen=True)
class ToolSpec:
    name: str
    version: str  # always "v" + semver, the form installed_version returns
    version_args: tuple[str, ...]  # empty: read the version from the binary's Go build info
    go: GoBuild
    release: ReleaseDownload | None = None
    tag: str | None = None  # release tag spelling when it differs from version

    @property
    def release_tag(self) -> str:
        return self.tag or self.version


def _kube_stamps(version: str) -> tuple[tuple[str, str], ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    stamps = []
    # component-base feeds `--version` and the apiserver's /version;
    # client-go's copy feeds `kubectl version --client`.
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        stamps += [
            (f"{package}.gitVersion", version),
            (f"{package}.gitMajor", major),
            (f"{package}.gitMinor", minor),
            (f"{package}.gitTreeState", "clean"),
        ]
    return tuple(stamps)


def _kube_release(binary: str) -> ReleaseDownload:
    base = "https://dl.k8s.io/release/{version}/bin/{os}/{arch}/" + binary + "{exe}"
    return ReleaseDownload(url=base, checksums=base + ".sha256")


def _control_plane(name: str) -> ToolSpec:
    return ToolSpec(
        name=name,
        version=KUBE_VERSION,
        version_args=("--version",),
        go=GoBuild(
            package=f"k8s.io/kubernetes/cmd/{name}",
            wrapper="kube-control-plane",
            stamps=_kube_stamps(KUBE_VERSION),
        ),
        release=_kube_release(name),
    )


def _kwok_tool(name: str) -> ToolSpec:
    return ToolSpec(
        name=name,
        version=KWOK_VERSION,
        version_args=("--version",),
        go=GoBuild(
            package=f"sigs.k8s.io/kwok/cmd/{name}",
            module_query=KWOK_VERSION,
            # kwokctl's default Kubernetes version (1.36 at v0.8.0) would not
            # match the control plane the testbed gives it.
            stamps=(("sigs.k8s.io/kwok/pkg/consts.KubeVersion", KUBE_VERSION.lstrip("v")),),
        ),
        release=ReleaseDownload(
            url="https://github.com/kubernetes-sigs/kwok/releases/download/{version}/" + name + "-{os}-{arch}{exe}",
            checksums="github:kubernetes-sigs/kwok",  # kwok publishes no checksum file
        ),
    )


_HELM_INTERNAL = "helm.sh/helm/v3/internal/version"
_KUBE_MINOR = KUBE_VERSION.lstrip("v").split(".")[1]

TOOLS: dict[str, ToolSpec] = {
    "kind": ToolSpec(
        name="kind",
        version=KIND_VERSION,
        version_args=("version",),
        go=GoBuild(package="sigs.k8s.io/kind", module_query=KIND_VERSION),
        release=ReleaseDownload(
            url="https://github.com/kubernetes-sigs/kind/releases/download/{version}/kind-{os}-{arch}{exe}",
            checksums="https://github.com/kubernetes-sigs/kind/releases/download/{version}/{asset}.sha256sum",
        ),
    ),
    "kubectl": ToolSpec(
        name="kubectl",
        version=KUBE_VERSION,
        version_args=("version", "--client"),
        go=GoBuild(package=".", wrapper="kubectl", stamps=_kube_stamps(KUBE_VERSION)),
        release=_kube_release("kubectl"),
    ),
    "helm": ToolSpec(
        name="helm",
        version=HELM_VERSION,
        version_args=("version", "--short"),
        go=GoBuild(
            package="helm.sh/helm/v3/cmd/helm",
            module_query=HELM_VERSION,
            stamps=(
                (f"{_HELM_INTERNAL}.version", HELM_VERSION),
                (f"{_HELM_INTERNAL}.gitTreeState", "clean"),
                # Without these, templates see Kubernetes 1.20 under `helm template`
                # and lint checks deprecations against 1.20.
                ("helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor", "1"),
                ("helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor", _KUBE_MINOR),
                ("helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor", "1"),
                ("helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor", _KUBE_MINOR),
            ),
        ),
        release=ReleaseDownload(
            url="https://get.helm.sh/helm-{version}-{os}-{arch}.{archive}",
            checksums="https://get.helm.sh/{asset}.sha256sum",
            member="{os}-{arch}/helm{exe}",
        ),
    ),
    "faas-cli": ToolSpec(
        name="faas-cli",
        version="v" + FAAS_CLI_VERSION,
        tag=FAAS_CLI_VERSION,
        # Plain `faas-cli version` also asks a gateway for its version.
        version_args=("version", "--short-version"),
        go=GoBuild(
            package="github.com/openfaas/faas-cli",
            module_query=FAAS_CLI_VERSION,
            stamps=(("github.com/openfaas/faas-cli/version.Version", FAAS_CLI_VERSION),),
            # where the module proxy refuses github.com/openfaas/*: the MIT source archive, vendored
            archive="faas-cli", vendor=True,
        ),
        release=ReleaseDownload(
            url="https://github.com/openfaas/faas-cli/releases/download/{version}/{asset}",
            checksums="github:openfaas/faas-cli",
            # named per platform without one pattern
            assets={"linux/amd64": "faas-cli", "linux/arm64": "faas-cli-arm64", "darwin/amd64": "faas-cli-darwin",
                    "darwin/arm64": "faas-cli-darwin-arm64", "windows/amd64": "faas-cli.exe"},
        ),
    ),
    "kwok": _kwok_tool("kwok"),
    "kwokctl": _kwok_tool("kwokctl"),
    "etcd": ToolSpec(
        name="etcd",
        version=ETCD_VERSION,
        version_args=("--version",),
        go=GoBuild(package=".", wrapper="etcd"),
        release=ReleaseDownload(
            url="https://github.com/etcd-io/etcd/releases/download/{version}/"
            "etcd-{version}-{os}-{arch}.{archive}",
            checksums="https://github.com/etcd-io/etcd/releases/download/{version}/SHA256SUMS",
            member="etcd-{version}-{os}-{arch}/etcd{exe}",
            zip_on=("windows", "darwin"),
        ),
    ),
    "ray-operator": ToolSpec(
        name="ray-operator",
        version=RAY_OPERATOR_VERSION,
        version_args=(),  # it has no version flag; `go install` records the module version
        go=GoBuild(package="github.com/ray-project/kuberay/ray-operator", module_query=RAY_OPERATOR_VERSION),
    ),
    "prometheus-operator": ToolSpec(
        name="prometheus-operator",
        version=PROMETHEUS_OPERATOR_VERSION,
        version_args=("--version",),
        go=GoBuild(
            package="github.com/prometheus-operator/prometheus-operator/cmd/operator",
            wrapper="prometheus-operator",
            stamps=(("github.com/prometheus/common/version.Version", PROMETHEUS_OPERATOR_VERSION.lstrip("v")),),
        ),
    ),
    "kube-apiserver": _control_plane("kube-apiserver"),
    "kube-controller-manager": _control_plane("kube-controller-manager"),
    "kube-scheduler": _control_plane("kube-scheduler"),
}



def _containerd(name: str, version_args: tuple[str, ...] = ("--version",)) -> ToolSpec:
    return ToolSpec(name=name, version=CONTAINERD_VERSION, version_args=version_args,
                    go=GoBuild(package=f"github.com/containerd/containerd/v2/cmd/{name}", wrapper="containerd",
                               stamps=(("github.com/containerd/containerd/v2/version.Version",
                                        CONTAINERD_VERSION),)))


def _cni_plugin(name: str, path: str) -> ToolSpec:
    # A plugin run without CNI_COMMAND prints "CNI <name> plugin <version>".
    return ToolSpec(name=name, version=CNI_PLUGINS_VERSION, version_args=(),
                    go=GoBuild(package=f"github.com/containernetworking/plugins/plugins/{path}",
                               module_query=CNI_PLUGINS_VERSION,
                               stamps=(("github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion",
                                        CNI_PLUGINS_VERSION),)))


def _prometheus_stamps(version: str) -> tuple[tuple[str, str], ...]:
    """The Prometheus projects print the version prometheus/common/version holds (empty unless stamped)."""
    return (("github.com/prometheus/common/version.Version", version.lstrip("v")),)


def _kube_node(name: str, version_args: tuple[str, ...] = ("--version",)) -> ToolSpec:
    return ToolSpec(name=name, version=KUBE_VERSION, version_args=version_args,
                    go=GoBuild(package=f"k8s.io/kubernetes/cmd/{name}", wrapper="kube-node",
                               stamps=_kube_stamps(KUBE_VERSION)))


# Programs kindlab builds for its own use rather than for the user's PATH: the
# Docker runtime wrapper (playbooks/engine.py) and what goes into its images
# (playbooks/images.py). Same machinery as TOOLS; installed into component_dir().
COMPONENTS: dict[str, ToolSpec] = {
    "capdrop-runc": ToolSpec(
        name="capdrop-runc", version=KINDLAB_COMPONENT_VERSION, version_args=("--kindlab-version",),
        go=GoBuild(package=".", wrapper="capdrop-runc", stamps=(("main.version", KINDLAB_COMPONENT_VERSION),))),
    "pause": ToolSpec(
        name="pause", version=KINDLAB_COMPONENT_VERSION, version_args=("--version",),
        go=GoBuild(package=".", wrapper="pause", stamps=(("main.version", KINDLAB_COMPONENT_VERSION),))),
    "kubeadm": _kube_node("kubeadm", ("version", "-o", "short")),
    "kubelet": _kube_node("kubelet"),
    "kube-proxy": _kube_node("kube-proxy"),
    "containerd": _containerd("containerd"),
    "ctr": _containerd("ctr"),
    "containerd-shim-runc-v2": _containerd("containerd-shim-runc-v2", ("-v",)),
    "crictl": ToolSpec(
        name="crictl", version=CRICTL_VERSION, version_args=("--version",),
        go=GoBuild(package="sigs.k8s.io/cri-tools/cmd/crictl", module_query=CRICTL_VERSION,
                   stamps=(("sigs.k8s.io/cri-tools/pkg/version.Version", CRICTL_VERSION),))),
    "host-local": _cni_plugin("host-local", "ipam/host-local"),
    "loopback": _cni_plugin("loopback", "main/loopback"),
    "ptp": _cni_plugin("ptp", "main/ptp"),
    "portmap": _cni_plugin("portmap", "meta/portmap"),
    "coredns": ToolSpec(
        name="coredns", version=COREDNS_VERSION, version_args=("-version",),
        go=GoBuild(package=".", wrapper="coredns")),  # its version is a constant in its source
    "registry": ToolSpec(
        name="registry", version=REGISTRY_VERSION, version_args=("--version",),
        go=GoBuild(package="github.com/distribution/distribution/v3/cmd/registry", module_query=REGISTRY_VERSION,
                   stamps=(("github.com/distribution/distribution/v3/version.version", REGISTRY_VERSION),))),
    # The function images' HTTP server, from OpenFaaS's MIT source archive (vendored: no network).
    "fwatchdog": ToolSpec(
        name="fwatchdog", version="v" + OF_WATCHDOG_VERSION, version_args=("-version",),
        go=GoBuild(package=".", archive="of-watchdog", vendor=True,
                   stamps=(("main.Version", OF_WATCHDOG_VERSION), ("main.GitCommit", "01c65eda2f88")))),
    # The monitoring part's images. prometheus-operator itself is the testbed's tool.
    "prometheus-config-reloader": ToolSpec(
        name="prometheus-config-reloader", version=PROMETHEUS_OPERATOR_VERSION, version_args=("--version",),
        go=GoBuild(package="github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader",
                   wrapper="prometheus-operator",  # the operator's wrapper: one build cache serves both
                   stamps=_prometheus_stamps(PROMETHEUS_OPERATOR_VERSION))),
    "prometheus": ToolSpec(
        name="prometheus", version=PROMETHEUS_VERSION, version_args=("--version",),
        go=GoBuild(package="github.com/prometheus/prometheus/cmd/prometheus", wrapper="prometheus",
                   stamps=_prometheus_stamps(PROMETHEUS_VERSION),
                   # only Kubernetes service discovery: half the build time and binary
                   patches=("github.com/prometheus/prometheus",
                            (("plugins/plugins.go", "_overlay/plugins.go"),)),
                   # its web UI embedded, built as upstream's Makefile builds it (.promu.yml's tags).
                   # The default UI only: the old one (web/ui/react-app) does not build from the
                   # module, whose zip leaves out every vendor/ folder (react-app/src/vendor/flot).
                   tags=("netgo", "builtinassets"),
                   assets=WebAssets("web/ui", ("@prometheus-io/lezer-promql", "@prometheus-io/codemirror-promql",
                                               "@prometheus-io/mantine-ui"),
                                    (("mantine-ui/dist", "mantine-ui"),)))),
    "node-exporter": ToolSpec(
        name="node-exporter", version=NODE_EXPORTER_VERSION, version_args=("--version",),
        go=GoBuild(package="github.com/prometheus/node_exporter", module_query=NODE_EXPORTER_VERSION,
                   stamps=_prometheus_stamps(NODE_EXPORTER_VERSION))),
    "alertmanager": ToolSpec(
        name="alertmanager", version=ALERTMANAGER_VERSION, version_args=("--version",),
        go=GoBuild(package="github.com/prometheus/alertmanager/cmd/alertmanager", module_query=ALERTMANAGER_VERSION,
                   stamps=_prometheus_stamps(ALERTMANAGER_VERSION))),
    # From their source archives only (kindlab.sources.monitoring); their dependencies come from the
    # module proxy. kube-state-metrics stamps what its Makefile's build-local does (the tag keeps its v).
    "kube-state-metrics": ToolSpec(
        name="kube-state-metrics", version=KUBE_STATE_METRICS_VERSION, version_args=("version",),
        go=GoBuild(package=".", archive="kube-state-metrics",
                   stamps=(("github.com/prometheus/common/version.Version", KUBE_STATE_METRICS_VERSION),
                           ("github.com/prometheus/common/version.Revision", KUBE_STATE_METRICS_COMMIT)))),
    # Its image's Dockerfile stamps nothing (the binary says 0.0.1-dev); kindlab stamps the version
    # so that what it built can be checked.
    "kube-webhook-certgen": ToolSpec(
        name="kube-webhook-certgen", version=KUBE_WEBHOOK_CERTGEN_VERSION, version_args=("version",),
        go=GoBuild(package=".", archive="kube-webhook-certgen",
                   stamps=(("github.com/jet/kube-webhook-certgen/core.Version", KUBE_WEBHOOK_CERTGEN_VERSION),))),
}

Log = Callable[[str], None]


# ---------------------------------------------------------------- locations


def _on_windows() -> bool:
    return os.name == "nt"


def exe_name(name: str) -> str:
    """The file name of tool `name` on this OS (`kubectl.exe` on Windows)."""
    return name + ".exe" if _on_windows() else name


def component_dir(bin_dir: Path) -> Path:
    """Where COMPONENTS go: beside the tools, but not on the PATH kindlab gives them."""
    return Path(bin_dir) / "components"


def tool_path(name: str, bin_dir: Path) -> Path:
    return Path(bin_dir) / exe_name(_spec(name).name)


def current_platform() -> str:
    """This machine as Go names it, e.g. "linux/amd64", "darwin/arm64", "windows/amd64"."""
    system = platform.system().lower()
    goos = {"linux": "linux", "darwin": "darwin", "windows": "windows"}.get(system, system)
    machine = platform.machine().lower()
    goarch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"{goos}/{goarch}"


# ---------------------------------------------------------------- checking

# A version that stands alone: not the tail of "go1.26.8" or of a longer number.
_VERSION_RE = re.compile(r"(?<![\w.])v?(\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)(?![\w.])")


def parse_version(output: str) -> str | None:
    """The first standalone semantic version in a tool's version output, as "vX.Y.Z"."""
    match = _VERSION_RE.search(output)
    return "v" + match.group(1) if match else None


def _run_version(path: Path, spec: ToolSpec) -> str | None:
    if not spec.version_args:
        return buildinfo_version(path)
    try:
        completed = subprocess.run(
            [str(path), *spec.version_args],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if completed.returncode != 0:
        return None
    return parse_version(completed.stdout + "\n" + completed.stderr)


_BUILDINFO_MAGIC = b"\xff Go buildinf:"


def buildinfo_version(path: Path) -> str | None:
    """The main module's version that the Go linker recorded in a binary, or None.

    Go 1.18+ writes a 32-byte header after the magic and, with flag bit 2, the
    Go version and the module information as length-prefixed strings; the
    module information has a "mod<TAB>path<TAB>version" line.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    start = data.find(_BUILDINFO_MAGIC)
    if start < 0 or not data[start + 15] & 2:
        return None
    pos = start + 32
    strings = []
    for _ in range(2):
        length, shift = 0, 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        strings.append(data[pos:pos + length].decode("utf-8", "replace"))
        pos += length
    for line in strings[1].splitlines():
        fields = line.split("\t")
        if fields[0] == "mod" and len(fields) >= 3:
            return parse_version(fields[2])
    return None


def installed_version(name: str, bin_dir: Path) -> str | None:
    """The version tool `name` in `bin_dir` reports ("v1.33.13"), or None if it is
    missing, does not run, or prints no version."""
    spec = _spec(name)
    path = tool_path(name, bin_dir)
    if not path.is_file():
        return None
    return _run_version(path, spec)


def is_current(name: str, bin_dir: Path) -> bool:
    """True when tool `name` in `bin_dir` reports exactly the pinned version."""
    return installed_version(name, bin_dir) == _spec(name).version


# ---------------------------------------------------------------- installing


def install(name: str, bin_dir: Path, source: str = "auto", log: Log = print,
            sources: Mapping[str, str] | None = None) -> str:
    """Install the pinned version of tool `name` into `bin_dir`, replacing any other; says how.

    source "release" downloads the project's release binary and checks it
    against the checksum the project publishes beside it; "go" builds it from
    Go source (its module; where the module proxy refuses it and the tool has
    a source archive, from that archive, found in the `sources` folders);
    "archive" builds it from the archive alone; "auto" downloads, and builds
    from source only when the release cannot be reached (a wrong or missing
    checksum is an error, never a reason to fall back quietly).
    """
    spec = _spec(name)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    bin_dir = Path(bin_dir)
    bin_dir.mkdir(parents=True, exist_ok=True)
    if source == "archive":
        return _install_from_archive(spec, bin_dir, log, sources, why="")

    if source in ("auto", "release"):
        if spec.release is None or _asset(spec) is None:
            reason = f"{spec.name} {spec.version} publishes no release binary for {current_platform()}"
            if source == "release":
                raise ToolInstallError(f"{reason}; install it from source with source='go'")
            log(f"{reason}: building it from Go source")
        else:
            try:
                return _install_release(spec, bin_dir, log)
            except _NetworkError as error:
                if source == "release":
                    raise ToolInstallError(
                        f"{spec.name}: could not download {error.url}: {error.reason}; "
                        "check the network or install from source with source='go'"
                    ) from None
                log(f"{spec.name}: release unreachable ({error.reason}); building from Go source instead")
                return _install_from_source(spec, bin_dir, log, sources,
                                            why=f"release unreachable: {error.reason}")
    return _install_from_source(spec, bin_dir, log, sources, why="")


SOURCES = ("auto", "go", "release", "archive")  # how a tool may come (tools.install --source)
# What `go` prints when the module proxy will not serve a module version.
_REFUSED = re.compile(r"403 Forbidden|404 Not Found|410 Gone|(?<!toolchain )not available|unknown revision|invalid version")


def _install_from_source(spec: ToolSpec, bin_dir: Path, log: Log, sources: Mapping[str, str] | None,
                         why: str) -> str:
    """Its Go module; where the proxy refuses that and the tool has a source archive, the archive."""
    if spec.go.module_query or spec.go.wrapper:
        try:
            _install_from_go(spec, bin_dir, log)
            return "built from Go source" + (f" ({why})" if why else "")
        except ToolInstallError as error:
            if not (spec.go.archive and _REFUSED.search(str(error))):
                raise
            refusal = error
        refused = f"the Go module proxy refuses {spec.go.package}@{spec.go.module_query}"
        log(f"{spec.name}: {refused}; building it from its source archive")
        try:
            return _install_from_archive(spec, bin_dir, log, sources, "; ".join(filter(None, [why, refused])))
        except ArchiveMissing as missing:
            raise ToolInstallError(f"{refusal}\nNor from its source archive: {missing}") from None
    return _install_from_archive(spec, bin_dir, log, sources, why)


class ArchiveMissing(ToolInstallError):
    """The tool's source archive is not where kindlab.sources says, or is not the pinned one."""


def _install_from_archive(spec: ToolSpec, bin_dir: Path, log: Log, sources: Mapping[str, str] | None,
                          why: str) -> str:
    from . import sources as sources_  # noqa: PLC0415 (only tools with an archive need it)

    if not spec.go.archive:
        raise ToolInstallError(f"{spec.name} has no source archive; install it with source='go' or 'release'")
    try:
        folder = sources_.unpacked(spec.go.archive, sources or {}, sources_.cache_dir(bin_dir))
    except sources_.SourceMissing as error:
        raise ArchiveMissing(f"{spec.name}: " + "; ".join(filter(None, [why, str(error)]))) from None
    _install_from_go(spec, bin_dir, log, archive_dir=folder)
    archive = sources_.ARCHIVES[spec.go.archive]
    return f"built from the source archive {archive.file} (sha256 checked)" + (f"; {why}" if why else "")


def ensure(name: str, bin_dir: Path, source: str = "auto", log: Log = print) -> bool:
    """Install tool `name` unless the pinned version is already there; True if it changed."""
    if is_current(name, bin_dir):
        return False
    install(name, bin_dir, source=source, log=log)
    return True


def spec(name: str) -> ToolSpec:
    """The pinned spec of a tool or a component."""
    return _spec(name)


def _spec(name: str) -> ToolSpec:
    try:
        return TOOLS[name] if name in TOOLS else COMPONENTS[name]
    except KeyError:
        known = ", ".join(TOOLS)
        raise ValueError(f"unknown tool {name!r}; kindlab installs: {known}") from None


# ------------------------------------------------------------ from Go source


def _install_from_go(spec: ToolSpec, bin_dir: Path, log: Log, archive_dir: Path | None = None) -> None:
    go = shutil.which("go")
    if go is None:
        raise ToolInstallError(
            f"{spec.name}: building it needs the Go toolchain, and `go` is not on PATH; "
            f"install Go {GO_MIN_VERSION} or newer and run again"
        )
    build = spec.go
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=bin_dir))
    try:
        built = staging / exe_name(spec.name)
        argv, cwd, env = _go_command(go, spec, staging, archive_dir, log)
        where = f" in {cwd}" if cwd else ""
        log(f"{spec.name}: building {spec.version} from Go source{where} (a few minutes on a cold cache)")
        _run_build(spec, argv, cwd, env)
        if not built.is_file():
            # `go install` names the binary after the package's last element.
            produced = staging / exe_name(build.package.rstrip("/").rsplit("/", 1)[-1])
            if produced.is_file():
                produced.rename(built)
            else:
                raise ToolInstallError(
                    f"{spec.name}: `{_show(argv)}` succeeded but left no {built.name}; "
                    "this is a bug in kindlab's tool table"
                )
        record = _build_record(spec.name, bin_dir)
        if spec.name in COMPONENTS:  # gone first: a record never vouches for a binary it did not see built
            record.unlink(missing_ok=True)
        _check_and_place(spec, built, bin_dir)
        if spec.name in COMPONENTS:
            record.write_text(build_fingerprint(spec.name) + "\n")
        log(f"{spec.name}: installed {spec.version} in {bin_dir}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _go_command(go: str, spec: ToolSpec, staging: Path, archive_dir: Path | None = None,
                log: Log = lambda _: None) -> tuple[list[str], Path | None, dict[str, str]]:
    build = spec.go
    env = dict(os.environ)
    env["CGO_ENABLED"] = "1" if build.cgo else "0"
    flags = ["-trimpath", "-buildvcs=false", "-ldflags", build.ldflags()]
    if build.tags:
        flags += ["-tags", ",".join(build.tags)]
    if archive_dir is not None:  # the unpacked source archive is the main module
        env.pop("GOFLAGS", None)
        if build.vendor:  # everything it imports is in vendor/: no network at all
            env.update(GOPROXY="off", GOTOOLCHAIN="local")
        mode = "-mod=vendor" if build.vendor else "-mod=readonly"
        return [go, "build", *flags, mode, "-o", str(staging / exe_name(spec.name)), build.package], archive_dir, env
    if build.wrapper:
        cwd = TOOLS_DIR / build.wrapper
        if not (cwd / "go.mod").is_file():
            raise ToolInstallError(
                f"{spec.name}: the wrapper module {cwd} is missing; restore the repository's tools/ folder"
            )
        env.pop("GOFLAGS", None)
        if build.patches:
            cwd = _patched_wrapper(go, spec, cwd, staging, env, log)
        # -mod=readonly: the committed go.mod/go.sum are the pin; never rewrite them.
        argv = [go, "build", *flags, "-mod=readonly", "-o", str(staging / exe_name(spec.name)), build.package]
        return argv, cwd, env
    if not build.module_query:
        raise ToolInstallError(f"{spec.name}: kindlab's tool table gives no module version; this is a bug")
    env["GOBIN"] = str(staging)
    # A cross-compiling GOOS/GOARCH in the environment would make go install refuse GOBIN.
    for variable in ("GOOS", "GOARCH", "GOFLAGS"):
        env.pop(variable, None)
    argv = [go, "install", *flags, f"{build.package}@{build.module_query}"]
    return argv, None, env


def _patched_wrapper(go: str, spec: ToolSpec, wrapper: Path, staging: Path, env: dict[str, str],
                     log: Log) -> Path:
    """A copy of the wrapper whose go.mod points at a patched copy of one module's source (GoBuild.patches),
    its web UI built into it where the build has one (GoBuild.assets)."""
    module, files = spec.go.patches
    copy, source = staging / "wrapper", staging / "module"
    shutil.copytree(wrapper, copy)
    _run_build(spec, [go, "mod", "download", module], copy, env)  # verified against go.sum
    listed = subprocess.run([go, "list", "-mod=readonly", "-m", "-f", "{{.Dir}}", module], cwd=copy, env=env,
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=VERSION_TIMEOUT_S)
    if listed.returncode != 0 or not listed.stdout.strip():
        raise ToolInstallError(f"{spec.name}: `go list -m {module}` in {wrapper} failed: "
                               f"{(listed.stderr or listed.stdout).strip()[-300:]}")
    shutil.copytree(listed.stdout.strip(), source)
    for path in [source, *source.rglob("*")]:  # the module cache's copies are read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    for target, replacement in files:
        if not (source / target).is_file():
            raise ToolInstallError(f"{spec.name}: {module} has no {target} to replace; kindlab's patch for it "
                                   f"(tools/{spec.go.wrapper}) needs updating for this version")
        shutil.copyfile(copy / replacement, source / target)
    if spec.go.assets:
        _embed_assets(spec, source / spec.go.assets.folder, assets_dir(staging.parent), log)
    with open(copy / "go.mod", "a", encoding="utf-8") as go_mod:
        go_mod.write(f"\nreplace {module} => {source.as_posix()}\n")
    return copy


def assets_dir(bin_dir: Path) -> Path:
    """Where built web UIs are kept (GoBuild.assets), beside the binaries they go into."""
    return Path(bin_dir) / "assets"


def _embed_assets(spec: ToolSpec, ui: Path, cache: Path, log: Log) -> None:
    """The web UI in `ui` built (or found built for this very source) and made ready to embed."""
    assets = spec.go.assets
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(assets)).encode())
    hash_folder(digest, ui)
    built = cache / f"{spec.name}-{digest.hexdigest()[:16]}"
    if (built / "embed.go").is_file():
        log(f"{spec.name}: its web UI is built already ({built})")
    else:
        _build_assets(spec, ui, built, log)
    shutil.copytree(built / "static", ui / "static", dirs_exist_ok=True)
    shutil.copyfile(built / "embed.go", ui / "embed.go")


def _build_assets(spec: ToolSpec, ui: Path, target: Path, log: Log) -> None:
    """npm ci and the workspaces' builds in `ui`; the results gzipped, with embed.go, into `target` whole."""
    assets = spec.go.assets
    npm = shutil.which("npm")
    if npm is None:
        raise ToolInstallError(f"{spec.name}: its web UI is built with npm, and `npm` is not on PATH; "
                               "install Node.js 20 or newer (with npm) and run again")
    env = dict(os.environ)
    env.pop("NODE_ENV", None)  # "production" would leave out the devDependencies the build runs
    log(f"{spec.name}: building its web UI with npm in {ui} (a minute or two; npm's cache keeps the downloads)")
    started = time.monotonic()
    _run_build(spec, [npm, "ci", "--no-audit", "--no-fund"], ui, env, advice=_npm_advice)
    for workspace in assets.builds:
        _run_build(spec, [npm, "run", "build", "-w", workspace], ui, env, advice=_npm_advice)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for folder, name in assets.dist:
            if not (ui / folder).is_dir():
                raise ToolInstallError(f"{spec.name}: the UI's build left no {folder} in {ui}; kindlab's "
                                       "WebAssets for it need updating for this version")
            for path in sorted(p for p in (ui / folder).rglob("*") if p.is_file()):
                packed = staging / "static" / name / (path.relative_to(ui / folder).as_posix() + ".gz")
                packed.parent.mkdir(parents=True, exist_ok=True)
                packed.write_bytes(gzip.compress(path.read_bytes(), mtime=0))  # no name, no time: reproducible
        embedded = sorted(p.relative_to(staging).as_posix() for p in (staging / "static").rglob("*.gz"))
        template = (ui / assets.template).read_text(encoding="utf-8").rstrip("\n")
        (staging / "embed.go").write_text(f"{template}\n//go:embed {' '.join(embedded)}\nvar EmbedFS embed.FS\n",
                                          encoding="utf-8")
        try:
            os.replace(staging, target)
        except OSError:  # built meanwhile by another run
            if not (target / "embed.go").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{spec.name}: web UI built in {time.monotonic() - started:.0f}s, {len(embedded)} files kept in {target}")


def _npm_advice(output: str) -> str:
    if re.search(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|network", output):
        return "The npm registry could not be reached; check the network or `npm config get registry` and run again."
    if re.search(r"E404|ETARGET|EINTEGRITY", output):
        return ("The npm registry did not serve a package the UI's package-lock.json pins (or served a different "
                "one); check `npm config get registry`.")
    return "Check the output above; the UI build needs Node.js 20 or newer, npm and the npm registry."


# ------------------------------------------------------------ what a build is


def hash_folder(digest, folder: Path, keep: Callable[[Path], bool] = lambda path: True) -> None:
    """Feed every file under `folder` that `keep` keeps (its path, whether executable, its bytes) into `digest`."""
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and keep(p)):
        executable = b"x" if os.access(path, os.X_OK) else b"-"
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + executable + path.read_bytes())


def build_fingerprint(name: str) -> str:
    """sha256 of how `name` is built from Go source: its pin, package and flags, and, where it has them,
    its wrapper module's files, patches, build tags, web UI and source archive."""
    spec = _spec(name)
    build = spec.go
    facts = [spec.version, build.package, build.module_query, build.wrapper, build.ldflags(), build.cgo]
    # each only where there is one, so that adding a kind of fact leaves the other builds' fingerprints
    if build.patches:
        facts.append(build.patches)
    if build.tags:
        facts.append(["tags", list(build.tags)])
    if build.assets:
        facts.append(["assets", dataclasses.asdict(build.assets)])
    if build.archive:  # built from a source archive: its pinned sha256 is its source
        from . import sources as sources_  # noqa: PLC0415 (as in _install_from_archive)
        facts.append(sources_.ARCHIVES[build.archive].sha256)
    digest = hashlib.sha256(json.dumps(facts).encode())
    if build.wrapper:
        hash_folder(digest, TOOLS_DIR / build.wrapper)
    return digest.hexdigest()


def _build_record(name: str, bin_dir: Path) -> Path:
    return Path(bin_dir) / (exe_name(name) + ".build")


def is_built(name: str, bin_dir: Path) -> bool:
    """The pinned version is in `bin_dir`; for a component, built from Go source as kindlab builds it now
    (its build record, written beside it, holds build_fingerprint): a changed patch, UI or archive
    rebuilds it even though its version stays."""
    if not is_current(name, bin_dir):
        return False
    if name not in COMPONENTS:
        return True  # a tool may be a release download: its version is all there is
    try:
        return _build_record(name, bin_dir).read_text().strip() == build_fingerprint(name)
    except OSError:
        return False


def _run_build(spec: ToolSpec, argv: list[str], cwd: Path | None, env: dict[str, str],
               advice: Callable[[str], str] | None = None) -> None:
    try:
        completed = subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            timeout=BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise ToolInstallError(
            f"{spec.name}: `{_show(argv)}` did not finish in {BUILD_TIMEOUT_S}s; "
            "run it again (the caches keep what was done) or check the network"
        ) from None
    except OSError as error:
        raise ToolInstallError(
            f"{spec.name}: could not start `{_show(argv)}`: {error}; check your {Path(argv[0]).stem} installation"
        ) from None
    if completed.returncode != 0:
        raise ToolInstallError(
            f"{spec.name}: `{_show(argv)}` failed with exit code {completed.returncode}:\n"
            f"{_tail(completed.stdout)}\n{(advice or _go_advice)(completed.stdout)}"
        )


def _go_advice(output: str) -> str:
    if re.search(r"requires go >= |go: downloading go1\.|toolchain not available", output):
        return f"Install Go {GO_MIN_VERSION} or newer and run again."
    if _REFUSED.search(output):
        return "The Go module proxy did not serve that module version; check GOPROXY and the network."
    if re.search(r"dial tcp|i/o timeout|no such host|connection refused|TLS handshake", output):
        return "The Go module proxy could not be reached; check the network or GOPROXY and run again."
    return f"Check the output above; building needs Go {GO_MIN_VERSION} or newer and the Go module proxy."


# ------------------------------------------------------------ release binary


class _NetworkError(Exception):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


GITHUB_API = "https://api.github.com"
_UNREACHABLE: dict[str, str] = {}  # host -> why, so one unreachable host costs one timeout a run


def _asset(spec: ToolSpec) -> str | None:
    """The release file's name for this platform, or None when the project publishes none."""
    release = spec.release
    if release.assets:
        return release.assets.get(current_platform())
    return release.url.format(**_release_fields(spec, asset="")).rsplit("/", 1)[-1]


def _release_fields(spec: ToolSpec, asset: str | None = None) -> dict[str, str]:
    goos, goarch = current_platform().split("/")
    assert spec.release is not None
    fields = {
        "version": spec.release_tag,
        "os": goos,
        "arch": goarch,
        "exe": ".exe" if goos == "windows" else "",
        "archive": "zip" if goos in spec.release.zip_on else "tar.gz",
    }
    fields["asset"] = _asset(spec) if asset is None else asset
    return fields


def published_sha256(spec: ToolSpec) -> tuple[str, str]:
    """(sha256, where it was read) of the release file, as its project publishes it."""
    release, fields = spec.release, _release_fields(spec)
    asset = fields["asset"]
    github = release.checksums.startswith("github:")
    where = (f"{GITHUB_API}/repos/{release.checksums.removeprefix('github:')}/releases/tags/{fields['version']}"
             if github else release.checksums.format(**fields))
    try:
        published = _download(where)
    except ToolInstallError as error:
        raise ToolInstallError(f"{spec.name}: no published checksum ({error}), so the download was refused; "
                               "install from source with source='go'") from None
    if github:
        found = [a.get("digest") or "" for a in json.loads(published).get("assets") or [] if a.get("name") == asset]
        digest = found[0].removeprefix("sha256:") if found and found[0].startswith("sha256:") else ""
    else:
        lines = [line.split() for line in published.decode("utf-8", "replace").splitlines() if line.strip()]
        # one digest alone, or `sha256sum` lines: `<hex>  <name>` (`*<name>` in binary mode)
        named = [f[0] for f in lines if len(f) >= 2 and f[-1].lstrip("*").rsplit("/", 1)[-1] == asset]
        digest = named[0] if named else (lines[0][0] if len(lines) == 1 and len(lines[0]) == 1 else "")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise ToolInstallError(
            f"{spec.name}: {where} publishes no sha256 for {asset}, so the download was refused; "
            "install from source with source='go'")
    return digest.lower(), where


def _install_release(spec: ToolSpec, bin_dir: Path, log: Log) -> str:
    release = spec.release
    fields = _release_fields(spec)
    url = release.url.format(**fields)
    expected, where = published_sha256(spec)
    log(f"{spec.name}: downloading {spec.version} ({url})")
    try:
        payload = _download(url)
    except ToolInstallError as error:
        raise ToolInstallError(f"{spec.name}: {error}: kindlab's release table for it may be out of date; "
                               "install from source with source='go'") from None
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise ToolInstallError(
            f"{spec.name}: the download from {url} has sha256 {actual}, but {where} publishes {expected}; "
            "it was discarded. Retry later, or install from source with source='go'"
        )
    binary = _extract(spec, payload, release.member.format(**fields) if release.member else None, url)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=bin_dir))
    try:
        built = staging / exe_name(spec.name)
        built.write_bytes(binary)
        built.chmod(0o755)
        _check_and_place(spec, built, bin_dir)
        log(f"{spec.name}: installed {spec.version} in {bin_dir}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return f"release download, sha256 checked against {where}"


def _download(url: str) -> bytes:
    host = urllib.parse.urlsplit(url).netloc
    if host in _UNREACHABLE:
        raise _NetworkError(url, _UNREACHABLE[host])
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (fixed URLs)
            return response.read()
    except urllib.error.HTTPError as error:
        if error.code >= 500:
            raise _NetworkError(url, f"HTTP {error.code}") from None
        raise ToolInstallError(f"{url} answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = str(getattr(error, "reason", error))
        _UNREACHABLE[host] = reason
        raise _NetworkError(url, reason) from None


def _extract(spec: ToolSpec, payload: bytes, member: str | None, url: str) -> bytes:
    if member is None:
        return payload
    try:
        if url.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                return archive.read(member)
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as archive:
            extracted = archive.extractfile(member)
            if extracted is None:
                raise KeyError(member)
            return extracted.read()
    except (KeyError, tarfile.TarError, zipfile.BadZipFile) as error:
        raise ToolInstallError(
            f"{spec.name}: the archive from {url} has no {member} ({error}); "
            "kindlab's tool table is out of date, install from source with source='go'"
        ) from None


# ------------------------------------------------------------ both ways


def _check_and_place(spec: ToolSpec, built: Path, bin_dir: Path) -> None:
    """Run the new binary's version command, then rename it over the old one."""
    reported = _run_version(built, spec)
    if reported != spec.version:
        shown = reported or "no version"
        raise ToolInstallError(
            f"{spec.name}: the new binary reports {shown}, not {spec.version} "
            f"(`{spec.name} {' '.join(spec.version_args)}`), so it was not installed; "
            "kindlab's tool table (version stamp or release URL) for it needs fixing"
        )
    # Same folder, so the rename is atomic: readers see the old binary or the new one.
    os.replace(built, tool_path(spec.name, bin_dir))


def _tail(output: str, lines: int = OUTPUT_LINES_IN_ERRORS) -> str:
    kept = [line for line in output.splitlines() if line.strip()][-lines:]
    return "\n".join("  " + line for line in kept) if kept else "  (no output)"


def _show(argv: list[str]) -> str:
    """A command for a message: the program's path shortened to its name (`go`, `npm`), arguments quoted."""
    shown = [Path(arg).stem if i == 0 else arg for i, arg in enumerate(argv)]
    if _on_windows():
        return subprocess.list2cmdline(shown)
    return shlex.join(shown)


def main(argv: list[str] | None = None) -> int:
    """`python -m playbooks.toolchain [--source go|release|auto] [TOOL ...]`: install
    missing tools (all by default) and print each one's version."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("tools", nargs="*", default=list(TOOLS), metavar="TOOL")
    parser.add_argument("--source", choices=("auto", "go", "release"), default="auto")
    parser.add_argument("--bin-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    bin_dir = args.bin_dir or default_bin_dir()
    failed = 0
    for name in args.tools:
        started = time.monotonic()
        try:
            changed = ensure(name, bin_dir, source=args.source)
        except (ToolInstallError, ValueError) as error:
            print(f"failed  {error}", file=sys.stderr)
            failed += 1
            continue
        state = "changed" if changed else "ok"
        print(f"{state:<7} {name} {TOOLS[name].version} ({time.monotonic() - started:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
