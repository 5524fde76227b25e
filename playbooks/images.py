"""Images built from package registries only: Debian packages and Go modules.

For machines that reach Debian's mirrors, the Go module proxy and PyPI but no
container registry (air-gapped classrooms, corporate proxies, registry rate
limits). `invoke images.build` makes every image the offline lab needs:

- `debian`: Debian's minimal base, made with debootstrap (needs root);
- `nginx`: Debian's nginx serving its welcome page;
- `registry`: the local registry of the faas part (distribution v3, a Go module);
- `ray`, `kuberay-operator`: the ray part's Ray (Debian's Python and Ray from
  PyPI, with kindlab's crawler installed) and its KubeRay operator (a Go module);
- `python-docs`: Python's HTML documentation (Debian's python3.11-doc) served by
  Debian's nginx, the site the ray part crawls offline;
- `prometheus-operator`, `prometheus-config-reloader`, `prometheus`,
  `node-exporter`, `alertmanager`: the monitoring part's programs (Go modules);
- `node`: a kind node image for the pinned Kubernetes, its control-plane images
  preloaded, with a small CNI of its own (images/kindlab-cni) that routes pod
  subnets between nodes.

Each catalog entry names its recipe and inputs: a folder under images/, the
project's own folders copied into the build (the crawler, for the Ray image), Go
binaries (built with playbooks/toolchain.py's machinery), the image it is built
FROM and the images preloaded into it. The sha256 of those inputs is the label
`kindlab.dev/inputs` of the built image; an image is rebuilt only when that
label differs from the inputs as they are now. Images a user names carry a
short hash in their tag too, so a changed image rolls a Deployment; the images
kubeadm names (kube-apiserver, etcd, ...) keep plain version tags.

Adding an image: a catalog entry (and a folder under images/ for its files).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import re
import tarfile
import tempfile
import threading
import tomllib
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from . import sources, toolchain
from .core.commands import CommandError
from .core.settings import Lab, SettingsError
from .core.steps import Step, StepFailed, change, ok, skip

ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = ROOT / "images"
REPOSITORY = "kindlab.local"  # never resolvable: these images exist only where they were built
LABEL_INPUTS = "kindlab.dev/inputs"
LABEL_IMAGE = "kindlab.dev/image"
DEBIAN_SUITE = "bookworm"  # Python 3.11, the version the project pins
BUILD_TIMEOUT_S = 1800
KIND_MODULE = f"sigs.k8s.io/kind@{toolchain.KIND_VERSION}"
HOST_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


def _pinned_ray() -> str:
    """The Ray the project pins (pyproject.toml): the Jobs client's and the cluster's must be equal."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [m.group(1) for d in project["dependencies"] if (m := re.fullmatch(r"ray(?:\[[^]]*\])?==(\S+)", d))]
    return pins[0]


RAY_VERSION = _pinned_ray()
# What a kind node needs from Debian (kind v0.29.0's base image, less its storage packages).
NODE_PACKAGES = ("systemd", "conntrack", "iptables", "nftables", "iproute2", "ethtool", "util-linux",
                 "mount", "kmod", "libseccomp2", "pigz", "fuse-overlayfs", "bash", "ca-certificates",
                 "curl", "jq", "procps", "runc")


@dataclass(frozen=True)
class Image:
    """One image kindlab can build, and everything that goes into it."""

    name: str
    recipe: str  # debootstrap | files | dockerfile | pip | node
    version: str  # the version its tag names
    summary: str
    base: str | None = None  # catalog image it is built FROM
    files: str | None = None  # folder under images/ (Dockerfile, files)
    sources: tuple[str, ...] = ()  # the project's own folders, copied into the build context under their names
    binaries: tuple[tuple[str, str], ...] = ()  # (toolchain name, path in the image)
    preload: tuple[str, ...] = ()  # catalog images imported into its containerd (node)
    entrypoint: tuple[str, ...] = ()
    fixed_tag: bool = False  # kubeadm computes the name: the tag is the version alone
    user: str = ""  # uid:gid it runs as (charts that set runAsNonRoot refuse root)
    internal: bool = False  # a part of another image; built when that one needs it


def _component(name: str, version: str, binary: str, path: str, entrypoint: tuple[str, ...] = ()) -> Image:
    return Image(name, "files", version, f"{name} for the node image (the static binary alone)",
                 binaries=((binary, path),), entrypoint=entrypoint, fixed_tag=True, internal=True)


NOBODY = "65534:65534"  # what the upstream images run as; their charts ask for a non-root user


def _program(name: str, version: str, what: str, path: str, args: tuple[str, ...] = (),
             user: str = NOBODY) -> Image:
    """An image of one static Go binary, run as its entrypoint (pods pass the arguments; `args` come
    first, as in the upstream image's ENTRYPOINT)."""
    return Image(name, "files", version, f"{what}, the static binary alone", binaries=((name, path),),
                 entrypoint=(path, *args), user=user)


_CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
CATALOG: dict[str, Image] = {
    "debian": Image("debian", "debootstrap", DEBIAN_SUITE, f"Debian {DEBIAN_SUITE} (minbase, debootstrap)",
                    internal=True),
    "nginx": Image("nginx", "dockerfile", DEBIAN_SUITE, f"Debian {DEBIAN_SUITE}'s nginx, its welcome page on :80",
                   base="debian", files="nginx"),
    "registry": Image("registry", "files", toolchain.REGISTRY_VERSION,
                      "distribution's registry on :5000 (the faas part's local registry)",
                      files="registry", binaries=(("registry", "/usr/local/bin/registry"),),
                      entrypoint=("/usr/local/bin/registry", "serve", "/etc/distribution/config.yml")),
    **{name: _component(name, toolchain.KUBE_VERSION, name, f"/usr/local/bin/{name}") for name in _CONTROL_PLANE},
    "etcd": _component("etcd", toolchain.ETCD_VERSION, "etcd", "/usr/local/bin/etcd"),
    "coredns": _component("coredns", toolchain.COREDNS_VERSION, "coredns", "/coredns", ("/coredns",)),
    "pause": _component("pause", toolchain.KINDLAB_COMPONENT_VERSION, "pause", "/pause", ("/pause",)),
    # The function's base images: its template's `python` and `of-watchdog` images, kindlab's way.
    "python": Image("python", "pip", DEBIAN_SUITE,
                    f"Debian {DEBIAN_SUITE}'s Python 3.11 with pip: the base image of the functions' builds",
                    base="debian", files="python"),
    "of-watchdog": Image("of-watchdog", "files", toolchain.OF_WATCHDOG_VERSION,
                         "OpenFaaS's of-watchdog (/fwatchdog), the functions' HTTP server (MIT source archive)",
                         binaries=(("fwatchdog", "/fwatchdog"),), entrypoint=("/fwatchdog",)),
    # Ray from PyPI changes with the pin; the crawler on it with every edit: two images, so an edit
    # of the crawler rebuilds a layer in seconds rather than Ray's pip install.
    "ray-base": Image("ray-base", "pip", RAY_VERSION,
                      f"Ray {RAY_VERSION} (PyPI) on Debian {DEBIAN_SUITE}'s Python 3.11, with what KubeRay's pods run",
                      base="debian", files="ray-base", internal=True),
    "ray": Image("ray", "dockerfile", RAY_VERSION,
                 f"Ray {RAY_VERSION} (PyPI) on Debian {DEBIAN_SUITE}'s Python 3.11 with kindlab's crawler installed "
                 "(a crawl job ships no working_dir)", base="ray-base", files="ray", sources=("crawler",)),
    "python-docs": Image("python-docs", "dockerfile", DEBIAN_SUITE,
                         "Python 3.11's HTML documentation (Debian's python3.11-doc, some 530 pages) served by "
                         "Debian's nginx on :80: the site the ray part crawls offline",
                         base="debian", files="python-docs"),
    "kuberay-operator": Image("kuberay-operator", "files", toolchain.RAY_OPERATOR_VERSION,
                              "the KubeRay operator (its Go module; the charts run /manager)",
                              binaries=(("ray-operator", "/manager"),), entrypoint=("/manager",), user=NOBODY),
    "prometheus-operator": _program("prometheus-operator", toolchain.PROMETHEUS_OPERATOR_VERSION,
                                    "prometheus-operator", "/bin/operator"),
    "prometheus-config-reloader": _program("prometheus-config-reloader", toolchain.PROMETHEUS_OPERATOR_VERSION,
                                           "prometheus-config-reloader", "/bin/prometheus-config-reloader"),
    "prometheus": _program("prometheus", toolchain.PROMETHEUS_VERSION, "Prometheus (Kubernetes service discovery "
                           "only) with its web UI, built with npm from the module's web/ui", "/bin/prometheus"),
    "node-exporter": _program("node-exporter", toolchain.NODE_EXPORTER_VERSION, "node_exporter",
                              "/bin/node_exporter"),
    "alertmanager": _program("alertmanager", toolchain.ALERTMANAGER_VERSION, "Alertmanager", "/bin/alertmanager"),
    # from source archives (kindlab.sources.monitoring); entrypoints and users as the upstream images'
    "kube-state-metrics": _program("kube-state-metrics", toolchain.KUBE_STATE_METRICS_VERSION,
                                   "kube-state-metrics (its source archive)", "/kube-state-metrics",
                                   ("--port=8080", "--telemetry-port=8081")),
    "kube-webhook-certgen": _program("kube-webhook-certgen", toolchain.KUBE_WEBHOOK_CERTGEN_VERSION,
                                     "kube-webhook-certgen, the admission webhooks' certificate Jobs (its source "
                                     "archive)", "/kube-webhook-certgen", user="65532:65532"),
    "kube-proxy": Image("kube-proxy", "dockerfile", toolchain.KUBE_VERSION,
                        "kube-proxy (nftables mode) with Debian's nft", base="debian", files="kube-proxy",
                        binaries=(("kube-proxy", "kube-proxy"),), fixed_tag=True, internal=True),
    "kindlab-cni": Image("kindlab-cni", "dockerfile", toolchain.KINDLAB_COMPONENT_VERSION,
                         "kindlab's CNI daemon (pod subnets and routes between nodes)", base="debian",
                         files="kindlab-cni", fixed_tag=True, internal=True),
    "node": Image("node", "node", toolchain.KUBE_VERSION,
                  f"kind node, Kubernetes {toolchain.KUBE_VERSION}, control-plane images preloaded",
                  base="debian", files="node",
                  binaries=(("kubeadm", "usr/bin/kubeadm"), ("kubelet", "usr/bin/kubelet"),
                            ("kubectl", "usr/bin/kubectl"),
                            ("containerd", "usr/local/bin/containerd"), ("ctr", "usr/local/bin/ctr"),
                            ("containerd-shim-runc-v2", "usr/local/bin/containerd-shim-runc-v2"),
                            ("crictl", "usr/local/bin/crictl"),
                            ("host-local", "opt/cni/bin/host-local"), ("loopback", "opt/cni/bin/loopback"),
                            ("ptp", "opt/cni/bin/ptp"), ("portmap", "opt/cni/bin/portmap")),
                  preload=(*_CONTROL_PLANE, "etcd", "coredns", "pause", "kube-proxy", "kindlab-cni")),
}

# What each part of the lab runs, by catalog name; and why a part cannot run offline.
# --- names and inputs ---------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def inputs_hash(name: str) -> str:
    """sha256 over everything that decides what image `name` holds (never its build's output)."""
    image = CATALOG[name]
    digest = hashlib.sha256()
    facts = {
        "name": image.name, "recipe": image.recipe, "version": image.version, "entrypoint": image.entrypoint,
        "base": inputs_hash(image.base) if image.base else None,
        "binaries": [(b, path, toolchain.build_fingerprint(b)) for b, path in image.binaries],
        "preload": [(p, inputs_hash(p)) for p in image.preload],
    }
    if image.user:
        facts["user"] = image.user
    if image.recipe == "debootstrap":
        facts["debootstrap"] = [DEBIAN_SUITE, "minbase"]
    if image.recipe == "node":
        facts["node"] = [KIND_MODULE, NODE_PACKAGES, reference("pause"), reference("kindlab-cni")]
    if image.sources:  # only where there are any: the other images keep their inputs
        facts["sources"] = list(image.sources)
    digest.update(json.dumps(facts, sort_keys=True).encode())
    if image.files:
        toolchain.hash_folder(digest, IMAGES_DIR / image.files)
    for source in image.sources:
        toolchain.hash_folder(digest, ROOT / source, keep=_is_input)
    return digest.hexdigest()


def _is_input(path: Path) -> bool:
    """Whether a file of the project's own folders goes into an image: Python's byte-code caches (running the
    tests writes them) and a README (an edit of the docs rebuilds nothing) do not."""
    return "__pycache__" not in path.parts and path.suffix != ".pyc" and path.name != "README.md"


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and _is_input(p))


def reference(name: str) -> str:
    """The image's name and tag, e.g. kindlab.local/nginx:bookworm-0123456789ab."""
    image = CATALOG[name]
    tag = image.version if image.fixed_tag else f"{image.version}-{inputs_hash(name)[:12]}"
    return f"{REPOSITORY}/{name}:{tag}"


def for_part(lab: Lab, name: str) -> str | None:
    """The image a part runs for catalog image `name`: kindlab.images.<name>, else offline kindlab's own,
    else None (the chart's or manifest's own)."""
    return lab.image_override(name) or (reference(name) if lab.offline else None)


def rebased(dockerfile: str, bases: dict[str, str]) -> str:
    """A Dockerfile whose FROM lines name kindlab's images instead of the ones `bases` maps
    (image as the FROM line spells it -> catalog name); every other line as it was."""
    lines = []
    for line in dockerfile.splitlines(keepends=True):
        words = line.split()
        if words[:1] == ["FROM"]:
            at = next(i for i, w in enumerate(words) if i and not w.startswith("--"))
            if words[at] in bases:
                line = line.replace(words[at], reference(bases[words[at]]), 1)
        lines.append(line)
    words = {w for line in dockerfile.splitlines() for w in line.split()}
    left = {w for line in lines for w in line.split()} & set(bases)
    if left or not set(bases) <= words:
        raise StepFailed("the template's Dockerfile does not build FROM the images kindlab replaces ("
                         f"{', '.join(sorted(set(bases)))}): it changed; kindlab's list of its base images "
                         "needs updating")
    return "".join(lines)


def is_kindlab_node(ref: str) -> bool:
    return ref.startswith(f"{REPOSITORY}/node:")


def kubeadm_patches() -> list[str]:
    """kubeadm settings a cluster made from kindlab's node image needs (kind's kubeadmConfigPatches).

    The node's images are named kindlab.local/<component>:<version>: kubeadm is
    told so, rather than the images being labelled with upstream's names. etcd
    is the testbed's 3.5.x patch release, not kubeadm's default tag; the
    node's kube-proxy image carries nft, not iptables, so kind runs it in
    nftables mode (networking.kubeProxyMode, set by the cluster play).
    """
    etcd_tag = reference("etcd").rsplit(":", 1)[1]
    dns_tag = reference("coredns").rsplit(":", 1)[1]
    return [f"kind: ClusterConfiguration\nimageRepository: {REPOSITORY}\n"
            f"etcd:\n  local:\n    imageTag: {etcd_tag}\ndns:\n  imageTag: {dns_tag}\n"]


def closure(names: list[str]) -> list[str]:
    """The images and everything they are built from, dependencies first."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        image = CATALOG[name]
        for dep in ([image.base] if image.base else []) + list(image.preload):
            visit(dep)
        order.append(name)

    for name in names:
        visit(name)
    return order


def user_images() -> list[str]:
    return [name for name, image in CATALOG.items() if not image.internal]


def chosen(only: str) -> list[str]:
    """The images --only names (comma-separated), or the ones users build; an unknown name is refused."""
    names = [n.strip() for n in only.split(",") if n.strip()] or user_images()
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise SettingsError(f"unknown image(s) {', '.join(unknown)}; kindlab builds {', '.join(CATALOG)}")
    return names


# --- reading the engine -------------------------------------------------------------
def present_inputs(sh, ref: str) -> str | None:
    """The inputs label of a local image, "" when it has none, None when the image is absent."""
    result = sh.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", ref], check=False)
    if result.returncode != 0:
        if "no such image" in (result.stderr + result.stdout).lower():
            return None
        raise CommandError(result.argv, result.returncode, result.stderr or result.stdout)
    return (json.loads(result.stdout or "null") or {}).get(LABEL_INPUTS, "")


def present_inputs_of(sh, refs: list[str]) -> dict[str, str | None]:
    """present_inputs of several images, with one `docker image inspect` when all of them are there."""
    if not refs:
        return {}
    result = sh.run(["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", *refs], check=False)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != len(refs):  # one is absent: ask each
        return {ref: present_inputs(sh, ref) for ref in refs}
    return {ref: (json.loads(line or "null") or {}).get(LABEL_INPUTS, "") for ref, line in zip(refs, lines)}


def current(sh, name: str) -> bool:
    return present_inputs(sh, reference(name)) == inputs_hash(name)


# --- the build play -----------------------------------------------------------------
class _Plan:
    """Which images and binaries this run must build: decided once, from the labels."""

    def __init__(self, targets: list[str]):
        self.targets = targets
        self.images = closure(targets)
        self.consumers: dict[str, list[str]] = {name: [] for name in self.images}
        for name in self.images:
            image = CATALOG[name]
            for dep in ([image.base] if image.base else []) + list(image.preload):
                self.consumers[dep].append(name)
        self._current: dict[str, bool] = {}
        self._lock = threading.Lock()

    def is_current(self, sh, name: str) -> bool:
        with self._lock:
            if name not in self._current:
                self._current[name] = current(sh, name)
            return self._current[name]

    def built(self, name: str) -> None:
        """`name` was just built from its inputs as they are: the images made from it need it no more."""
        with self._lock:
            self._current[name] = True

    def must_build(self, sh, name: str) -> bool:
        return not self.is_current(sh, name) and self.required(sh, name)

    def required(self, sh, name: str) -> bool:
        return name in self.targets or any(self.must_build(sh, c) for c in self.consumers[name])

    def binary_users(self, sh, binary: str) -> list[str]:
        return [name for name in self.images
                if binary in dict(CATALOG[name].binaries) and self.must_build(sh, name)]


def _binary_dir(lab: Lab, name: str) -> Path:
    return lab.tools_dir if name in toolchain.TOOLS else toolchain.component_dir(lab.tools_dir)


def build_steps(lab: Lab, targets: list[str], after: str | None = None, go_after: str | None = None,
                optional: bool = False) -> list[Step]:
    """Steps that build `targets` (and what they need) where their inputs changed.

    Go builds run one after another (each uses every core) while debootstrap and
    the Docker builds that need only Debian run beside them. `after`: a step the
    engine check waits for; `go_after`: one the first Go build waits for too.
    optional (for `invoke setup`): without an engine, or without root for
    debootstrap, the builds are skipped with the reason instead of failing.
    """
    plan = _Plan(targets)
    engine = "images: Docker engine answers"

    def check_engine(ctx):
        from .engine import engine_info
        info = engine_info(ctx.sh)
        if not info:
            reason = "no Docker engine answers: run `invoke docker.start` (or start Docker), then run this again"
            if optional:
                return skip(f"images not built: {reason}")
            raise StepFailed(reason)
        if optional and not _is_root() and not plan.is_current(ctx.sh, "debian") and \
                any(plan.must_build(ctx.sh, name) for name in plan.images):
            return skip("images not built: the Debian base is made with debootstrap, which needs root: "
                        "run `sudo invoke images.build`")
        return ok(f"Docker {info.get('ServerVersion')}")

    steps = [Step(engine, check_engine, needs=(after,) if after else None)]
    # binaries only a source archive gives, where it is missing: their images are skipped with the reason
    missing = {b: r for name in plan.images for b, _ in CATALOG[name].binaries if (r := archive_missing(lab, b))}
    binaries = []
    for name in plan.images:
        for binary, _ in CATALOG[name].binaries:
            if binary not in binaries and binary not in missing:
                binaries.append(binary)
    previous_go = None
    for binary in binaries:
        first = (engine, go_after) if go_after else (engine,)
        steps.append(_binary_step(lab, plan, binary, needs=(previous_go,) if previous_go else first))
        previous_go = steps[-1].name
    for name in plan.images:
        image = CATALOG[name]
        needs = [engine] + [_image_step_name(dep) for dep in ([image.base] if image.base else []) + list(image.preload)]
        needs += [_binary_step_name(b) for b, _ in image.binaries if b not in missing]
        steps.append(_image_step(lab, plan, name, tuple(needs),
                                 unavailable="; ".join(missing[b] for b, _ in image.binaries if b in missing)))
    return steps


def archive_missing(lab: Lab, binary: str) -> str | None:
    """Why `binary`, which only its source archive gives, cannot be built here (None: it can)."""
    go = toolchain.spec(binary).go
    if not go.archive or go.module_query or go.wrapper:
        return None
    return sources.reason_missing(go.archive, lab.source_folders)


def _binary_step_name(binary: str) -> str:
    return f"binary {binary} {toolchain.spec(binary).version}"


def _image_step_name(name: str) -> str:
    return f"image {name}"


def _binary_step(lab: Lab, plan: _Plan, binary: str, needs: tuple[str, ...]) -> Step:
    pinned = toolchain.spec(binary).version
    where = _binary_dir(lab, binary)

    def check(ctx):
        users = plan.binary_users(ctx.sh, binary)
        if not users:
            return ok("not needed: the images that use it are up to date")
        if toolchain.is_built(binary, where):
            return ok(f"{binary} {pinned}")
        have = toolchain.installed_version(binary, where)
        found = f" (found {have}{', built differently' if have == pinned else ''})" if have else ""
        return change(f"build {binary} {pinned} for image(s) {', '.join(users)}{found}")

    def build(ctx):
        try:
            toolchain.install(binary, where, source="go", log=ctx.say, sources=lab.source_folders)
        except toolchain.ToolInstallError as exc:
            raise StepFailed(str(exc)) from None
        return f"built {binary} {pinned}"

    return Step(_binary_step_name(binary), check, build, needs=needs)


def _image_step(lab: Lab, plan: _Plan, name: str, needs: tuple[str, ...], unavailable: str = "") -> Step:
    ref = reference(name)

    def check(ctx):
        if not plan.must_build(ctx.sh, name):
            if plan.is_current(ctx.sh, name):
                return ok(f"{ref} up to date")
            return ok("not needed: the images built from it are up to date")
        if unavailable:
            return skip(f"{name} not built: {unavailable}")
        found = present_inputs(ctx.sh, ref)
        return change(f"build {ref}" + (" (inputs changed)" if found is not None else ""))

    def build(ctx):
        workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=_build_root(lab)))
        try:
            RECIPES[CATALOG[name].recipe](ctx, lab, name, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        _remove_older(ctx, name)
        plan.built(name)
        return f"built {ref}"

    return Step(_image_step_name(name), check, build, needs=needs)


def host_steps(lab: Lab, names: list[str], needs: tuple[str, ...] = ()) -> list[Step]:
    """Each image in the host's Docker engine as built here: sent (`docker save | docker load`) only where
    the host's copy lacks this image's inputs label; one not built here is to be built first."""
    def step(name: str) -> Step:
        ref = reference(name)

        def check(ctx):
            if present_inputs(ctx.sh, ref) == inputs_hash(name):
                return ok(f"{ref} on {lab.host} (its inputs label as here)")
            from .core.commands import LocalShell
            if not current(LocalShell(lab.tools_dir), name):
                raise StepFailed(f"{ref} is not built on this machine, so it cannot be sent to {lab.host}: run "
                                 f"`invoke images.build --only {name}` here first (or `invoke setup` on {lab.host})")
            return change(f"send {ref} to {lab.host} (docker save | docker load)")

        def send(ctx):
            import subprocess
            save = subprocess.Popen(["docker", "image", "save", ref], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            try:
                ctx.sh.run(["docker", "image", "load"], input=save.stdout, timeout=BUILD_TIMEOUT_S)
            finally:
                save.stdout.close()
                save.wait()
            return f"sent {ref} to {lab.host} (docker save | docker load)"

        return Step(f"image {name} on {lab.host}", check, send, needs=needs)

    return [step(name) for name in names]


def _build_root(lab: Lab) -> Path:
    path = lab.home / "image-build"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _labels(name: str) -> list[str]:
    return [f"{LABEL_INPUTS}={inputs_hash(name)}", f"{LABEL_IMAGE}={name}"]


def _remove_older(ctx, name: str) -> None:
    """Remove earlier builds of the same image (one a container still uses stays)."""
    out = ctx.sh.run(["docker", "image", "ls", "--filter", f"label={LABEL_IMAGE}={name}",
                      "--format", "{{.Repository}}:{{.Tag}}"], check=False).stdout
    for old in {line.strip() for line in out.splitlines()} - {reference(name), "<none>:<none>", ""}:
        ctx.sh.run(["docker", "image", "rm", old], check=False)
    # a rebuild under a fixed tag leaves the earlier image untagged
    ctx.sh.run(["docker", "image", "prune", "--force", "--filter", f"label={LABEL_IMAGE}={name}"], check=False)


# --- recipes -------------------------------------------------------------------------
def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _debootstrap(ctx, lab: Lab, name: str, workdir: Path) -> None:
    """Debian's minimal system, made by debootstrap from the Debian mirror, imported as an image."""
    if not sys.platform.startswith("linux"):
        raise StepFailed("the Debian base image is made with debootstrap, which runs on Linux only: build the "
                         "images on a Linux machine, then move them here with `docker save` and `docker load`")
    if not _is_root():
        raise StepFailed("building the Debian base image runs debootstrap, which needs root: "
                         "run `sudo invoke images.build` (or `sudo invoke setup`)")
    if ctx.sh.which("debootstrap") is None:
        if ctx.sh.which("apt-get") is None:
            raise StepFailed("debootstrap is not installed: install it with your package manager and run again")
        ctx.say("apt-get install debootstrap")
        ctx.sh.run(["apt-get", "install", "-y", "-q", "debootstrap"], env={"DEBIAN_FRONTEND": "noninteractive"},
                   timeout=600)
    rootfs = workdir / "rootfs"
    ctx.say(f"debootstrap {DEBIAN_SUITE} from {lab.debian_mirror}")
    ctx.sh.run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(rootfs), lab.debian_mirror],
               timeout=BUILD_TIMEOUT_S)
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file() or path.is_symlink():
                path.unlink()
            elif path.is_dir() and path.name != "partial":
                shutil.rmtree(path)
    (rootfs / "etc/apt/sources.list").write_text(_sources_list(lab.debian_mirror))
    (rootfs / "etc/apt/apt.conf.d/90kindlab").write_text(
        'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n')
    tarball = workdir / "rootfs.tar"
    ctx.say("packing the root file system")
    ctx.sh.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."], timeout=600)
    shutil.rmtree(rootfs, ignore_errors=True)
    _import(ctx, name, tarball, ["CMD [\"/bin/bash\"]", "ENV DEBIAN_FRONTEND=noninteractive"])


def _sources_list(mirror: str) -> str:
    lines = [f"deb {mirror} {DEBIAN_SUITE} main", f"deb {mirror} {DEBIAN_SUITE}-updates main"]
    if mirror.rstrip("/").endswith("/debian"):  # Debian's own layout: security updates beside it
        lines.append(f"deb {mirror.rstrip('/')}-security {DEBIAN_SUITE}-security main")
    return "\n".join(lines) + "\n"


def _files(ctx, lab: Lab, name: str, workdir: Path) -> None:
    """An image from nothing: its binaries and its folder's files, as one layer."""
    image = CATALOG[name]
    tarball = workdir / "layer.tar"
    with tarfile.open(tarball, "w") as layer:
        _add_dir(layer, "tmp", 0o1777)
        for binary, path in image.binaries:
            layer.add(str(_binary_path(lab, binary)), arcname=path.lstrip("/"), filter=_root_owned(0o755))
        if image.files:
            folder = IMAGES_DIR / image.files
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "README.md"):
                layer.add(str(path), arcname=path.relative_to(folder).as_posix(), filter=_root_owned(0o644))
    changes = ["ENV PATH=/usr/local/bin:/usr/bin:/bin"]
    if image.user:
        changes.append(f"USER {image.user}")
    if image.entrypoint:
        changes.append(f"ENTRYPOINT {json.dumps(list(image.entrypoint))}")
    _import(ctx, name, tarball, changes)


def _add_dir(layer: tarfile.TarFile, path: str, mode: int) -> None:
    info = tarfile.TarInfo(path)
    info.type, info.mode = tarfile.DIRTYPE, mode
    layer.addfile(info)


def _root_owned(mode: int):
    def fix(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = mode
        return info
    return fix


def _import(ctx, name: str, tarball: Path, changes: list[str]) -> None:
    argv = ["docker", "image", "import"]
    for item in changes + [f"LABEL {label}" for label in _labels(name)]:
        argv += ["--change", item]
    ctx.sh.run(argv + [str(tarball), reference(name)], timeout=BUILD_TIMEOUT_S)


def _binary_path(lab: Lab, binary: str) -> Path:
    path = toolchain.tool_path(binary, _binary_dir(lab, binary))
    if not path.is_file():
        raise StepFailed(f"{binary} is missing from {path.parent}: run `invoke images.build` again")
    return path


def _dockerfile(ctx, lab: Lab, name: str, workdir: Path, tag: str | None = None,
                extra_args: dict[str, str] | None = None, extra_context: dict[str, Path] | None = None) -> None:
    """`docker build` of the image's folder, its binaries under bin/ in the context."""
    image = CATALOG[name]
    context = workdir / "context"
    shutil.copytree(IMAGES_DIR / image.files, context, symlinks=True)
    for folder, source in (extra_context or {}).items():
        shutil.copytree(source, context / folder, symlinks=True)
        _fix_modes(context / folder)
    for source in image.sources:
        for path in _folder_files(ROOT / source):
            target = context / source / path.relative_to(ROOT / source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    for binary, path in image.binaries:
        target = context / "bin" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_binary_path(lab, binary), target)
        target.chmod(0o755)
    args = {"BASE": reference(image.base)} if image.base else {}
    args.update(extra_args or {})
    argv = ["docker", "build", "--force-rm", "--tag", tag or reference(name)]
    for key, value in args.items():
        argv += ["--build-arg", f"{key}={value}"]
    if tag is None:
        for label in _labels(name):
            argv += ["--label", label]
    ctx.say(f"docker build {name}")
    ctx.sh.run(argv + [str(context)], timeout=BUILD_TIMEOUT_S, env={"DOCKER_BUILDKIT": "0"})


def _fix_modes(folder: Path) -> None:
    """Files from the Go module cache are read-only and lose their exec bits: scripts get 0755."""
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
        elif path.is_file():
            script = path.parent.name == "bin" or path.read_bytes()[:2] == b"#!"
            path.chmod(0o755 if script else 0o644)


def _node(ctx, lab: Lab, name: str, workdir: Path) -> None:
    """The node's file system (docker build), then its images preloaded into its containerd.

    A build container runs the node's own containerd to import the images (as
    kind's node-image builder does, which needs a registry and so cannot run
    here) and is committed as the final image.
    """
    image = CATALOG[name]
    stage = f"{REPOSITORY}/node-stage:{inputs_hash(name)[:12]}"
    _dockerfile(ctx, lab, name, workdir, tag=stage,
                extra_args={"PAUSE_IMAGE": reference("pause"), "CNI_IMAGE": reference("kindlab-cni"),
                            "KUBE_VERSION": toolchain.KUBE_VERSION,
                            "NODE_PACKAGES": " ".join(NODE_PACKAGES)},
                extra_context={"kind-base": _kind_base_files(ctx)})
    archive = workdir / "images.tar"
    refs = [reference(p) for p in image.preload]
    ctx.say(f"saving {len(refs)} images to preload")
    ctx.sh.run(["docker", "image", "save", "--output", str(archive), *refs], timeout=BUILD_TIMEOUT_S)
    builder = f"kindlab-node-build-{inputs_hash(name)[:12]}"
    ctx.sh.run(["docker", "rm", "--force", builder], check=False)
    ctx.sh.run(["docker", "run", "--detach", "--name", builder, "--network", "none",
                "--entrypoint", "sleep", stage, "infinity"])
    try:
        ctx.sh.run(["docker", "cp", str(archive), f"{builder}:/kindlab-images.tar"], timeout=BUILD_TIMEOUT_S)
        archive.unlink()
        ctx.sh.run(["docker", "exec", "--detach", builder, "containerd"])
        _wait_containerd(ctx, builder)
        ctx.say("importing the control-plane images into the node's containerd")
        ctx.sh.run(["docker", "exec", builder, "ctr", "--namespace", "k8s.io", "images", "import",
                    "--no-unpack", "/kindlab-images.tar"], timeout=BUILD_TIMEOUT_S)
        for ref in refs:  # kubelet's image garbage collection leaves pinned images alone
            ctx.sh.run(["docker", "exec", builder, "ctr", "--namespace", "k8s.io", "images", "label", ref,
                        "io.cri-containerd.pinned=pinned"])
        ctx.sh.run(["docker", "exec", builder, "pkill", "--signal", "TERM", "--exact", "containerd"])
        _wait_gone(ctx, builder, "containerd")
        ctx.sh.run(["docker", "exec", builder, "rm", "-rf", "/kindlab-images.tar", "/run/containerd", "/tmp",
                    "/var/log/journal"])
        ctx.sh.run(["docker", "exec", builder, "mkdir", "-m", "1777", "/tmp"])
        # The build container's `sleep infinity` must not become the node's command; its
        # environment and stop signal (SIGRTMIN+3, what systemd stops on) come from the stage.
        argv = ["docker", "container", "commit",
                "--change", 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]', "--change", "CMD []"]
        for label in _labels(name):
            argv += ["--change", f"LABEL {label}"]
        ctx.sh.run(argv + [builder, reference(name)], timeout=BUILD_TIMEOUT_S)
    finally:
        ctx.sh.run(["docker", "rm", "--force", builder], check=False)
        ctx.sh.run(["docker", "image", "rm", stage], check=False)


def _wait_containerd(ctx, container: str, attempts: int = 60) -> None:
    for _ in range(attempts):
        if ctx.sh.run(["docker", "exec", container, "ctr", "version"], check=False).returncode == 0:
            return
        if ctx.cancelled.wait(0.5):
            raise StepFailed("interrupted (Ctrl-C) while waiting for the build container's containerd")
    raise StepFailed(f"containerd in build container {container} did not answer within {attempts // 2}s")


def _wait_gone(ctx, container: str, process: str, attempts: int = 60) -> None:
    for _ in range(attempts):
        if ctx.sh.run(["docker", "exec", container, "pgrep", "--exact", process], check=False).returncode != 0:
            return
        ctx.cancelled.wait(0.5)
    raise StepFailed(f"{process} in build container {container} did not stop")


def _kind_base_files(ctx) -> Path:
    """kind's node base files (entrypoint, systemd units, scripts) from the kind Go module."""
    go = ctx.sh.which("go")
    if go is None:
        raise StepFailed("the node image takes kind's base files from its Go module, and `go` is not on PATH: "
                         f"install Go {toolchain.GO_MIN_VERSION} or newer")
    out = ctx.sh.run([go, "mod", "download", "-json", KIND_MODULE], timeout=600,
                     env={"GOFLAGS": "-mod=mod"}).stdout
    folder = Path(json.loads(out)["Dir"]) / "images" / "base" / "files"
    if not (folder / "usr/local/bin/entrypoint").is_file():
        raise StepFailed(f"{KIND_MODULE} has no images/base/files/usr/local/bin/entrypoint; "
                         "kindlab's node recipe needs updating for this kind version")
    return folder


def _pip(ctx, lab: Lab, name: str, workdir: Path) -> None:
    """A Dockerfile whose pip reaches PyPI: it gets the host's CA bundle (a proxy may re-sign TLS) as
    host-ca/ca-certificates.crt, the pinned Ray's version and the host pip's index, if it has its own."""
    ca = workdir / "host-ca"
    ca.mkdir()
    bundle = next((Path(p) for p in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), *HOST_CA_BUNDLES)
                   if p and Path(p).is_file()), None)
    (ca / "ca-certificates.crt").write_bytes(bundle.read_bytes() if bundle else b"")
    args = {"RAY_VERSION": RAY_VERSION, "STAGE_LABEL_KEY": LABEL_IMAGE, "STAGE_LABEL_VALUE": name}
    if os.environ.get("PIP_INDEX_URL"):  # a mirror the host's pip uses
        args["PIP_INDEX_URL"] = os.environ["PIP_INDEX_URL"]
    _dockerfile(ctx, lab, name, workdir, extra_args=args, extra_context={"host-ca": ca})


RECIPES = {"debootstrap": _debootstrap, "files": _files, "dockerfile": _dockerfile, "node": _node, "pip": _pip}


# --- listing ---------------------------------------------------------------------------
def rows(sh, everything: bool = False) -> list[tuple[str, str, str, str]]:
    """(image, reference, state, what it is) for `images.list`."""
    found = []
    for name, image in CATALOG.items():
        if image.internal and not everything:
            continue
        ref = reference(name)
        have = present_inputs(sh, ref)
        state = "built" if have == inputs_hash(name) else "missing" if have is None else "outdated"
        found.append((name, ref, state, image.summary))
    return found


def table(sh, everything: bool = False) -> Table:
    out = Table("image", "reference", "state", "what", title="kindlab images", title_justify="left")
    styles = {"built": "green", "missing": "red", "outdated": "yellow"}
    for name, ref, state, summary in rows(sh, everything):
        out.add_row(name, ref, f"[{styles[state]}]{state}[/{styles[state]}]", summary)
    return out


__all__ = ["CATALOG", "Image", "build_steps", "reference", "inputs_hash", "current",
           "kubeadm_patches", "is_kindlab_node", "user_images", "table"]
