"""The faas play: OpenFaaS through Helm, and the `reverse` function built, deployed, invoked.

OpenFaaS CE always pulls function images, so on kind the lab runs a local
registry (localhost:5001) that the nodes' containerd knows about, and
function images are pushed there instead of to a public registry. A content
hash of the function's files is its image tag: unchanged code is neither
rebuilt nor redeployed.

Offline the OpenFaaS platform cannot run: OpenFaaS CE refuses to start
without internet (CE_OFFLINE), and kindlab does not change that. The function
still runs for real: faas-cli and the python3-http template come from their
MIT source archives (kindlab.sources.openfaas), the template's base images
are kindlab's (`python`, `of-watchdog`: images.py), faas-cli builds and
pushes the image to the lab's registry, and the function is deployed as the
Deployment and NodePort Service faas-netes would make, without the gateway.
Online, a cluster that cannot reach the internet has faas-netes exit with
CE's refusal: the release's wait reads that in its log and fails at once.
"""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from . import images, probes, providers, sources
from .core import kyaml
from .core.part import NodePort, Part
from .core.helm import LogRefusal, Release, local_release, release_steps, uninstall_steps as helm_uninstall_steps
from .core.deadline import Longer
from .core.resources import absent, applied
from .core.settings import Lab
from .core.steps import Step, StepFailed, action, change, ok, skip

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
VALUES = ROOT / "helm-values" / "openfaas.yaml"
NAMESPACE, FN_NAMESPACE = "openfaas", "openfaas-fn"
FUNCTION = "reverse"
TEMPLATE = "python3-http"  # online: from the template store, as functions/stack.yaml names it
CHART_VERSION = "15.0.0"
# OpenFaaS CE's own decision, said in one line wherever the platform is left out or refuses.
CE_OFFLINE = ("OpenFaaS CE refuses to start without internet: its faas-netes checks connectivity when it starts "
              "and exits (\"OpenFaaS CE cannot be run in an offline environment\"), and its EULA forbids changing that")
CE_REFUSAL = LogRefusal(container="faas-netes", marker="cannot be run in an offline environment",
                        reason=f"{CE_OFFLINE}; this cluster's nodes do not reach the internet: give them internet "
                               "access, or run the function without the platform: invoke faas.install --offline")
RELEASE = Release(name="openfaas", namespace=NAMESPACE, chart="openfaas/openfaas", version=CHART_VERSION,
                  repo_name="openfaas", repo_url="https://openfaas.github.io/faas-netes/",
                  values_files=(VALUES,), refusals=(CE_REFUSAL,))
# Offline: the same template's Debian flavour, from its MIT archive, built FROM kindlab's images of what it
# names (python:3.12-slim-bookworm has no package-registry build; kindlab's `python` is Debian's Python 3.11).
OFFLINE_TEMPLATE = "python3-http-debian"
TEMPLATE_ARCHIVE = "python-flask-template"
TEMPLATE_BASES = {"ghcr.io/openfaas/of-watchdog:0.11.3": "of-watchdog",
                  "python:${PYTHON_VERSION}-${DEBIAN_OS}": "python"}
NO_PLATFORM = (f"{CE_OFFLINE}. Offline the reverse function runs without the platform: its own Deployment and "
               "NodePort Service, as faas-netes would make them, and no gateway")
FUNCTION_PORT = 8080    # of-watchdog's, as on OpenFaaS
# A cold build installs the template's Debian packages and its Python packages from PyPI, then pushes.
BUILD_BUDGET = Longer(2, "a cold function build installs its template's Debian and Python packages")
# the gateway's node port online, offline the function's own; kind maps it to kindlab.ports.gateway
NODE_PORT = NodePort("gateway", 31112, 31112, "OpenFaaS gateway NodePort (offline: the function's)")
LICENSE_NOTE = ("OpenFaaS CE is licensed for personal, non-commercial use (commercial use is limited to "
                "60 days) and needs internet access when it starts.")
NO_CONTAINERS = "a simulated (kwok) cluster runs no containers, so there is no gateway to call"


def gateway_url(lab: Lab) -> str:
    """The gateway on this machine (offline, the function itself): kind maps its node port here."""
    return f"http://{lab.listen_address}:{lab.host_port(NODE_PORT.name, NODE_PORT.host_port)}"


def function_hash(directory: Path | None = None, offline: bool = False) -> str:
    """12 hex digits over the function's files (names and bytes; by default the folder the build copies)
    and its template; offline also over what its image is built from there (the template's archive and
    kindlab's base images)."""
    directory = directory or FUNCTIONS / FUNCTION
    digest = hashlib.sha256(TEMPLATE.encode())
    if offline:
        digest.update(json.dumps([OFFLINE_TEMPLATE, sources.ARCHIVES[TEMPLATE_ARCHIVE].sha256,
                                  *(images.reference(name) for name in TEMPLATE_BASES.values())]).encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def function_image(lab: Lab, code_hash: str) -> str:
    return f"{providers.LOCAL_REGISTRY}/{FUNCTION}:{code_hash}"


def deployed_image(kube) -> str | None:
    """The image the function's Deployment runs now (faas-netes creates it), or None."""
    from kubernetes.client.exceptions import ApiException
    try:
        dep = kube.apps.read_namespaced_deployment(FUNCTION, FN_NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dep.spec.template.spec.containers[0].image


def function_status(kube) -> list[tuple[str, str]]:
    """The reverse function's row for `invoke status`, when it is deployed."""
    image = deployed_image(kube)
    if image is None:
        return []
    dep = kube.apps.read_namespaced_deployment(FUNCTION, FN_NAMESPACE)
    return [(f"function {FUNCTION}", f"{dep.status.ready_replicas or 0}/{dep.spec.replicas} Ready, {image}")]


def basic_auth(kube) -> tuple[str, str]:
    """The gateway's admin user and password from the chart's `basic-auth` Secret (decoded here)."""
    from kubernetes.client.exceptions import ApiException
    try:
        secret = kube.core.read_namespaced_secret("basic-auth", NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            raise StepFailed("secret openfaas/basic-auth not found: run `invoke faas.install` first") from None
        raise
    data = secret.data or {}
    return (base64.b64decode(data.get("basic-auth-user", "")).decode(),
            base64.b64decode(data.get("basic-auth-password", "")).decode())


# --- install ---------------------------------------------------------------------
def _fn_namespace() -> list[dict]:
    """The functions' namespace: the chart no longer creates it (the release step makes `openfaas`)."""
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": FN_NAMESPACE}}]


def openfaas_release(lab: Lab) -> Release:
    """The OpenFaaS release, from a local chart when kindlab.charts.faas names one."""
    return local_release(RELEASE, lab.local_chart("faas"))


def install_steps(lab: Lab, release: Release | None = None) -> list[Step]:
    """Namespaces, the local registry (kind), the OpenFaaS release, the gateway Ready.

    Offline the release is left out, saying why (CE_OFFLINE): the function runs without it.
    """
    release = release or openfaas_release(lab)
    marker = lab.home / "openfaas-license-noted"

    def licence_noted(ctx):
        return ok("licence noted before") if marker.exists() else change(f"note: {LICENSE_NOTE}")

    def note_licence(ctx):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(LICENSE_NOTE)
        return f"note: {LICENSE_NOTE}"

    namespace = applied(f"namespace {FN_NAMESPACE}", lab, _fn_namespace)
    registry = providers.of(lab).registry_steps()
    if lab.offline:
        return [namespace, *registry, Step(f"{release.name} release", lambda ctx: skip(NO_PLATFORM))]
    return [Step("OpenFaaS CE licence", licence_noted, note_licence), namespace, *registry,
            *release_steps(lab, release)]


def uninstall_steps(lab: Lab) -> list[Step]:
    return [*remove_steps(lab), *helm_uninstall_steps(lab, openfaas_release(lab), delete_namespace=True),
            absent(f"namespace {FN_NAMESPACE} absent", lab, _fn_namespace)]


# --- the function ------------------------------------------------------------------
def login_steps(lab: Lab) -> list[Step]:
    config = Path.home() / ".openfaas" / "config.yml"

    def token(ctx) -> str:
        user, password = basic_auth(ctx.kube)
        return base64.b64encode(f"{user}:{password}".encode()).decode()

    def check(ctx):
        if not lab.can.runs_containers:
            return skip(NO_CONTAINERS)
        if lab.offline:
            return skip(f"no gateway to log in to: {CE_OFFLINE}")
        auths = (kyaml.load(config.read_text()) or {}).get("auths", []) if config.exists() else []
        if any(a.get("gateway") == gateway_url(lab) and a.get("token") == token(ctx) for a in auths):
            return ok(f"logged in to {gateway_url(lab)}")
        return change(f"log in to {gateway_url(lab)}")

    def login(ctx):
        user, password = basic_auth(ctx.kube)
        ctx.sh.run(["faas-cli", "login", "--username", user, "--password-stdin", "--gateway", gateway_url(lab)],
                   input=password, secrets=[password])

    return [Step(f"faas-cli logged in to {gateway_url(lab)}", check, login)]


def _build_dir(lab: Lab, code_hash: str) -> Path:
    """A stack file whose image tag is the code hash, beside a copy of the handler.

    Offline the stack names the template's Debian flavour, copied from its archive into
    ./template (so faas-cli asks no template store) with its base images made kindlab's.
    """
    build = lab.home / "faas-build"
    stack = kyaml.load((FUNCTIONS / "stack.yaml").read_text())
    stack["provider"]["gateway"] = gateway_url(lab)
    stack["functions"][FUNCTION]["image"] = function_image(lab, code_hash)
    target = build / FUNCTION
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(FUNCTIONS / FUNCTION, target, ignore=shutil.ignore_patterns("__pycache__"))
    if lab.offline:
        stack["functions"][FUNCTION]["lang"] = OFFLINE_TEMPLATE
        stack.pop("configuration", None)  # its template list points at the store
        template = build / "template" / OFFLINE_TEMPLATE
        if template.exists():
            shutil.rmtree(template)
        archive = sources.unpacked(TEMPLATE_ARCHIVE, lab.source_folders, sources.cache_dir(lab.tools_dir))
        shutil.copytree(archive / "template" / OFFLINE_TEMPLATE, template)
        dockerfile = template / "Dockerfile"
        dockerfile.write_text(images.rebased(dockerfile.read_text(), TEMPLATE_BASES))
    (build / "stack.yaml").write_text(yaml.safe_dump(stack, sort_keys=False))
    return build


def offline_missing(lab: Lab, sh) -> str | None:
    """Why the function cannot be built here offline (faas-cli, the template's archive), or None."""
    if sh.which("faas-cli") is None:
        return "faas-cli is not installed: run `invoke tools.install --only faas-cli`"
    return sources.reason_missing(TEMPLATE_ARCHIVE, lab.source_folders)


def deploy_steps(lab: Lab) -> list[Step]:
    if lab.offline:
        return offline_deploy_steps(lab)
    code_hash = function_hash()
    image = function_image(lab, code_hash)

    def check(ctx):
        current = deployed_image(ctx.kube)
        if current == image:
            return ok(f"{FUNCTION} runs {image} (code unchanged)")
        if not lab.can.runs_containers:
            return skip(f"building and running the function needs Docker and a real cluster; {NO_CONTAINERS}")
        return change(f"build, push and deploy {image}" + (f" (was {current})" if current else ""))

    def deploy(ctx):
        build = ctx.sh.put(_build_dir(lab, code_hash))  # the build context, where faas-cli runs
        if not ctx.sh.exists(f"{build}/template/{TEMPLATE}"):
            ctx.sh.run(["faas-cli", "template", "store", "pull", TEMPLATE], cwd=build)
        for verb in ("build", "push"):
            ctx.say(f"faas-cli {verb} {image}")
            ctx.sh.run(["faas-cli", verb, "-f", "stack.yaml"], cwd=build)
        ctx.sh.run(["faas-cli", "deploy", "-f", "stack.yaml", "--gateway", gateway_url(lab)], cwd=build)
        return f"deployed {image}"

    def wait(ctx):
        return ctx.kube.wait_deployment(FN_NAMESPACE, FUNCTION, say=ctx.say, drained=True)

    return [*login_steps(lab), Step(f"function {FUNCTION} deployed", check, deploy, wait=wait, budget=BUILD_BUDGET)]


# --- offline: the function without the platform ----------------------------------------
def function_documents(image: str) -> list[dict]:
    """What faas-netes makes for a function (Deployment and Service, images always pulled), the Service
    a NodePort here: there is no gateway in front of it to hold calls until the function serves.

    So the pod is Ready only once the function's own process answers: of-watchdog's /_/health says 200
    as soon as the watchdog listens, while the template's Flask server may still be starting (a call then
    gets HTTP 500 from the watchdog); with `ready_path`, its /_/ready asks the function itself (a GET of
    /, the handler's answer to an empty body). Liveness stays on /_/health."""
    labels = {"faas_function": FUNCTION}
    timing = {"initialDelaySeconds": 0, "timeoutSeconds": 1, "periodSeconds": 2}
    ready = {"httpGet": {"path": "/_/ready", "port": FUNCTION_PORT}, **timing}
    alive = {"httpGet": {"path": "/_/health", "port": FUNCTION_PORT}, **timing}
    meta = {"name": FUNCTION, "namespace": FN_NAMESPACE, "labels": {**labels, "app.kubernetes.io/managed-by": "kindlab"},
            "annotations": {"kindlab.dev/no-gateway": CE_OFFLINE}}
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                      "name": FUNCTION, "image": image, "imagePullPolicy": "Always",
                      "ports": [{"name": "http", "containerPort": FUNCTION_PORT, "protocol": "TCP"}],
                      "env": [{"name": "ready_path", "value": "/"}],
                      "readinessProbe": ready, "livenessProbe": alive}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"type": "NodePort", "selector": labels,
                  "ports": [{"name": "http", "port": FUNCTION_PORT, "targetPort": FUNCTION_PORT,
                             "nodePort": NODE_PORT.node_port, "protocol": "TCP"}]}},
    ]


def registry_has(image: str, timeout: float = 5, reach=lambda url: url) -> bool:
    """Whether the lab's local registry holds `image` (localhost:5001/NAME:TAG); `reach`: how this machine
    reaches the registry's URL (on a host: forwarded over SSH)."""
    host, _, rest = image.partition("/")
    path, _, tag = rest.rpartition(":")
    port = host.rpartition(":")[2]
    request = urllib.request.Request(
        reach(f"http://127.0.0.1:{port}/v2/{path}/manifests/{tag}"), method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                           "application/vnd.oci.image.manifest.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise StepFailed(f"the lab's registry answered HTTP {exc.code} for {image}: "
                         "run `invoke faas.install` to repair it") from None
    except OSError as exc:
        raise StepFailed(f"the lab's registry at 127.0.0.1:{port} does not answer ({exc}): "
                         "run `invoke faas.install`") from None


def offline_deploy_steps(lab: Lab) -> list[Step]:
    """The image built by faas-cli from the archived template and pushed to the lab's registry (only when
    its content hash is new), then deployed as faas-netes would, without the platform."""
    code_hash = function_hash(offline=True)
    image = function_image(lab, code_hash)

    def check_image(ctx):
        if not lab.can.docker_nodes:
            return skip(f"building the function needs Docker and a kind cluster; {NO_CONTAINERS}")
        if registry_has(image, reach=ctx.sh.reach):
            return ok(f"{image} in the lab's registry (code unchanged)")
        missing = offline_missing(lab, ctx.sh)
        if missing:
            raise StepFailed(f"the function cannot be built offline: {missing}")
        return change(f"build and push {image} ({OFFLINE_TEMPLATE} template, kindlab's base images)")

    def build_and_push(ctx):
        bases = [images.reference(name) for name in TEMPLATE_BASES.values()]
        stale = [ref for ref, name in zip(bases, TEMPLATE_BASES.values()) if not images.current(ctx.sh, name)]
        if stale:
            raise StepFailed(f"the function's base image(s) {', '.join(stale)} are not built: "
                             f"run `invoke images.build --only {','.join(TEMPLATE_BASES.values())}`")
        build = ctx.sh.put(_build_dir(lab, code_hash))  # the build context, where faas-cli runs
        if images.present_inputs(ctx.sh, image) is None:
            ctx.say(f"faas-cli build {image}")
            # the Docker engine's own builder: it needs no buildx, and finds kindlab's base images locally
            ctx.sh.run(["faas-cli", "build", "-f", "stack.yaml"], cwd=build, env={"DOCKER_BUILDKIT": "0"})
        ctx.say(f"faas-cli push {image}")
        ctx.sh.run(["faas-cli", "push", "-f", "stack.yaml"], cwd=build)
        return f"built and pushed {image}"

    def wait(ctx):
        rolled = ctx.kube.wait_deployment(FN_NAMESPACE, FUNCTION, say=ctx.say, drained=True)
        return f"{rolled}; {answers_at(ctx, ctx.sh.reach(function_url(lab)))}"

    deployed = applied(f"function {FUNCTION} deployed", lab, lambda: function_documents(image), wait=wait)

    def check_deployed(ctx):
        if not lab.can.docker_nodes:
            return skip(NO_CONTAINERS)
        return deployed.check(ctx)

    return [Step(f"function {FUNCTION} image", check_image, build_and_push, budget=BUILD_BUDGET),
            Step(deployed.name, check_deployed, deployed.apply, wait=wait)]


# One 200 proves little while kube-proxy still has the old pod's address beside the new one's: each new
# connection picks one at random (CI: a GET answered 200, the POST just after went to the old address and out
# of the lab). Eight answers in a row leave that half-and-half state 1 time in 256, in a few tens of ms.
ANSWERS_IN_A_ROW = 8


def answers_at(ctx, url: str) -> str:
    """Until the function answers at its node port (a GET: the handler's answer to an empty body), ANSWERS_IN_A_ROW
    times in a row, with the old pod gone. Only the new pod can answer then, so a call right after the deploy gets the new code's
    answer. Measured on kind: for a few seconds after the rollout, kube-proxy can still send the node port
    to the old pod's address: its answer (old code, while of-watchdog drains), a closed connection, or,
    with the pod gone, whatever the node's default route reaches (an HTTP 403 from outside the lab)."""
    started, seen, in_a_row = time.monotonic(), "", 0
    while True:
        try:
            status, _ = probes.http_get(url, timeout=min(5.0, max(1.0, ctx.deadline.left())), attempts=1)
            if status == 200:
                in_a_row += 1
                if in_a_row >= ANSWERS_IN_A_ROW:
                    return f"answers at {url} ({time.monotonic() - started:.1f} s after the rollout)"
                continue
            seen = f"HTTP {status}"
        except probes.HttpGetError as exc:
            seen = str(exc)
        in_a_row = 0
        if ctx.cancelled.is_set():
            raise StepFailed(f"{url}: interrupted (Ctrl-C) while waiting for the function to answer there")
        if ctx.deadline.left() <= 0.5:
            raise StepFailed(f"the function's pod is Ready, but {url} does not answer it ({seen}): the node's "
                             f"kube-proxy may not route its node port yet; `invoke status` shows the lab")
        ctx.say(f"{url}: {seen}; kube-proxy may still route to the old pod")
        ctx.cancelled.wait(0.5)


def function_url(lab: Lab) -> str:
    """Where the function answers from this machine: through the gateway, or offline its own port."""
    return f"{gateway_url(lab)}/" if lab.offline else f"{gateway_url(lab)}/function/{FUNCTION}"


def call(url: str, data: bytes, timeout: float = 30, attempts: int = 5) -> tuple[int, bytes]:
    """One POST to the function: (HTTP status, body). A refused or reset connection (a pod just Ready,
    kube-proxy not yet routing its node port) is tried again, a few times over seconds."""
    return probes.http_get(url, timeout=timeout, attempts=attempts, backoff=0.5, data=data)


def invoke_steps(lab: Lab, data: str) -> list[Step]:
    def check(ctx):
        return ok() if lab.can.runs_containers else skip(NO_CONTAINERS)

    def invoke(ctx):
        if lab.offline:  # no gateway for faas-cli to call: the function's own port
            url = ctx.sh.reach(function_url(lab))
            try:
                status, body = call(url, data.encode("utf-8"), timeout=60)
            except probes.HttpGetError as exc:
                raise StepFailed(f"the reverse function did not answer at {url} ({exc}): "
                                 "run `invoke faas.deploy`, then `invoke status`") from None
            if status != 200:
                raise StepFailed(f"the reverse function answered HTTP {status} at {url}: "
                                 f"{body.decode('utf-8', 'replace')[:200]}")
            out = body.decode("utf-8")
            return f"{FUNCTION}({data!r}) -> {out!r} (POST {url}{ctx.sh.note(url)}, no gateway offline)"
        out = ctx.sh.run(["faas-cli", "invoke", FUNCTION, "--gateway", gateway_url(lab)], input=data,
                         timeout=60).stdout
        return f"{FUNCTION}({data!r}) -> {out.rstrip(chr(10))!r}"

    return [action(f"invoke {FUNCTION}", invoke, check=check)]


def remove_steps(lab: Lab) -> list[Step]:
    if lab.offline:
        return [absent(f"function {FUNCTION} absent", lab, lambda: function_documents(""))]

    def check(ctx):
        if deployed_image(ctx.kube) is None:
            return ok(f"function {FUNCTION} absent")
        if not lab.can.runs_containers:
            return skip(f"{NO_CONTAINERS}; deleting namespace {FN_NAMESPACE} removes the function's objects")
        return change(f"remove function {FUNCTION}")

    def remove(ctx):
        ctx.sh.run(["faas-cli", "remove", FUNCTION, "--gateway", gateway_url(lab)])

    return [Step(f"function {FUNCTION} absent", check, remove)]


def addresses(lab: Lab) -> list[tuple[str, str, str]]:
    if lab.offline:
        return [("reverse function", function_url(lab), "POST text; no OpenFaaS gateway offline (invoke faas.invoke)")]
    return [("OpenFaaS gateway", gateway_url(lab), "user admin; invoke faas.login")]


PART = Part(
    name="faas", namespaces=(NAMESPACE, FN_NAMESPACE), install=lambda lab, parts: install_steps(lab),
    uninstall=lambda lab, parts: uninstall_steps(lab),
    help=("Install OpenFaaS with Helm (and, on kind, the local registry) and wait for the gateway.",
          "Remove the function, uninstall OpenFaaS and delete its namespaces."),
    use=lambda lab, parts: deploy_steps(lab) + invoke_steps(lab, "Hello World"),
    addresses=addresses,
    status=lambda lab, kube: function_status(kube),
    # offline only the function runs, and faas-netes sets it no requests
    memory_mib=768, cpus=0.5, requests=(450, 800), offline_requests=(0, 0), tools=("kubectl", "helm", "faas-cli"),
    images=("registry", *TEMPLATE_BASES.values()), node_ports=(NODE_PORT,),
    releases=lambda lab: {} if lab.offline else {"faas": openfaas_release(lab)},
    offline_note=NO_PLATFORM, sources=(TEMPLATE_ARCHIVE,))


__all__ = ["install_steps", "uninstall_steps", "login_steps", "deploy_steps", "invoke_steps", "remove_steps",
           "function_hash", "basic_auth", "gateway_url", "function_url", "CE_OFFLINE"]
