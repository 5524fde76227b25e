"""The faas play: OpenFaaS through Helm, and the `reverse` function built, deployed, invoked.

OpenFaaS CE always pulls function images, so on kind the lab runs a local
registry (localhost:5001) that the nodes' containerd knows about, and
function images are pushed there instead of to a public registry. A content
hash of the function's files is its image tag: unchanged code is neither
rebuilt nor redeployed.
"""
from __future__ import annotations

import base64
import hashlib
import shutil
from pathlib import Path

import yaml

from . import images
from .core import kyaml
from .core.part import Part
from .core.helm import Release, local_release, release_steps, uninstall_steps as helm_uninstall_steps
from .core.resources import applied
from .core.settings import Lab
from .core.steps import Step, StepFailed, action, change, ok, skip

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
VALUES = ROOT / "helm-values" / "openfaas.yaml"
NAMESPACE, FN_NAMESPACE = "openfaas", "openfaas-fn"
FUNCTION = "reverse"
TEMPLATE = "python3-http"
REGISTRY = {"name": "kind-registry", "image": "registry:2.8.3", "host_port": 5001}
CHART_VERSION = "15.0.0"
RELEASE = Release(name="openfaas", namespace=NAMESPACE, chart="openfaas/openfaas", version=CHART_VERSION,
                  repo_name="openfaas", repo_url="https://openfaas.github.io/faas-netes/",
                  values_files=(VALUES,))
LICENSE_NOTE = ("OpenFaaS CE is licensed for personal, non-commercial use (commercial use is limited to "
                "60 days) and needs internet access when it starts.")
NO_CONTAINERS = "a simulated (kwok) cluster runs no containers, so there is no gateway to call"


def gateway_url(lab: Lab) -> str:
    return f"http://{lab.listen_address}:{lab.gateway_port}"


def function_hash(directory: Path = FUNCTIONS / FUNCTION) -> str:
    """12 hex digits over the function's files (names and bytes) and its template."""
    digest = hashlib.sha256(TEMPLATE.encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def function_image(lab: Lab, code_hash: str) -> str:
    return f"localhost:{REGISTRY['host_port']}/{FUNCTION}:{code_hash}"


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


def registry_image(lab: Lab) -> str:
    """kindlab.images.registry, else offline the registry image kindlab built, else the pinned one."""
    return images.for_part(lab, "registry") or REGISTRY["image"]


def registry_steps(lab: Lab) -> list[Step]:
    """kind's documented local registry: a container on 127.0.0.1:5001, known to every node."""
    name, port = REGISTRY["name"], REGISTRY["host_port"]
    hosts_dir = f"/etc/containerd/certs.d/localhost:{port}"
    hosts_toml = f'[host."http://{name}:5000"]\n'

    def applicable(ctx):
        return lab.can.docker_nodes

    def check_running(ctx):
        if not applicable(ctx):
            return skip(f"the local registry is for kind clusters, whose nodes are Docker containers "
                        f"(provider {lab.provider})")
        out = ctx.sh.run(["docker", "inspect", "-f", "{{.State.Running}}", name], check=False)
        return ok(f"registry {name} running") if out.stdout.strip() == "true" else \
            change(f"run registry {name} on 127.0.0.1:{port}")

    def run_registry(ctx):
        exists = ctx.sh.run(["docker", "inspect", name], check=False).returncode == 0
        if exists:
            ctx.sh.run(["docker", "start", name])
        else:
            image = registry_image(lab)
            if lab.offline and images.present_inputs(ctx.sh, image) is None:
                raise StepFailed(f"registry image {image} is not in the local Docker engine: "
                                 "run `invoke images.build --only registry`")
            ctx.sh.run(["docker", "run", "-d", "--restart=always", "-p", f"127.0.0.1:{port}:5000",
                        "--label", "kindlab.dev/part=faas", "--network", "bridge", "--name", name, image],
                       timeout=lab.timeout)

    def check_network(ctx):
        if not applicable(ctx):
            return skip("kind only")
        out = ctx.sh.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", name]).stdout
        return ok("on the kind network") if '"kind"' in out else change(f"connect {name} to the kind network")

    def nodes(ctx) -> list[str]:
        out = ctx.sh.run(["kind", "get", "nodes", "--name", lab.cluster]).stdout
        return [n.strip() for n in out.splitlines() if n.strip()]

    def check_nodes(ctx):
        if not applicable(ctx):
            return skip("kind only")
        missing = [n for n in nodes(ctx) if ctx.sh.run(["docker", "exec", n, "cat", f"{hosts_dir}/hosts.toml"],
                                                        check=False).stdout != hosts_toml]
        return change(f"point containerd on {', '.join(missing)} at the registry") if missing else \
            ok("every node knows localhost:5001")

    def configure_nodes(ctx):
        for node in nodes(ctx):
            ctx.sh.run(["docker", "exec", node, "mkdir", "-p", hosts_dir])
            ctx.sh.run(["docker", "exec", "-i", node, "cp", "/dev/stdin", f"{hosts_dir}/hosts.toml"], input=hosts_toml)

    hosting = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "local-registry-hosting", "namespace": "kube-public"},
               "data": {"localRegistryHosting.v1": f'host: "localhost:{port}"\n'
                                                   'help: "https://kind.sigs.k8s.io/docs/user/local-registry/"\n'}}
    hosting_step = applied("local registry advertised (kube-public)", lab, lambda: [hosting])
    if not lab.can.docker_nodes:
        hosting_step = Step(hosting_step.name, lambda ctx: skip("kind only"))
    return [
        Step(f"registry {name} running", check_running, run_registry),
        Step(f"registry {name} on the kind network", check_network,
             lambda ctx: ctx.sh.run(["docker", "network", "connect", "kind", name]) and None),
        Step("kind nodes use the local registry", check_nodes, configure_nodes),
        hosting_step,
    ]


def openfaas_release(lab: Lab) -> Release:
    """The OpenFaaS release, from a local chart when kindlab.charts.faas names one."""
    return local_release(RELEASE, lab.local_chart("faas"))


def install_steps(lab: Lab, release: Release | None = None) -> list[Step]:
    """Namespaces, the local registry (kind), the OpenFaaS release, the gateway Ready."""
    release = release or openfaas_release(lab)
    marker = lab.home / "openfaas-license-noted"

    def licence_noted(ctx):
        return ok("licence noted before") if marker.exists() else change(f"note: {LICENSE_NOTE}")

    def note_licence(ctx):
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(LICENSE_NOTE)
        return f"note: {LICENSE_NOTE}"

    namespace = applied(f"namespace {FN_NAMESPACE}", lab, _fn_namespace)
    return [Step("OpenFaaS CE licence", licence_noted, note_licence), namespace, *registry_steps(lab),
            *release_steps(lab, release)]


def uninstall_steps(lab: Lab) -> list[Step]:
    from .core.resources import absent
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
    """A stack file whose image tag is the code hash, beside a copy of the handler."""
    build = lab.home / "faas-build"
    stack = kyaml.load((FUNCTIONS / "stack.yaml").read_text())
    stack["provider"]["gateway"] = gateway_url(lab)
    stack["functions"][FUNCTION]["image"] = function_image(lab, code_hash)
    target = build / FUNCTION
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(FUNCTIONS / FUNCTION, target, ignore=shutil.ignore_patterns("__pycache__"))
    (build / "stack.yaml").write_text(yaml.safe_dump(stack, sort_keys=False))
    return build


def deploy_steps(lab: Lab) -> list[Step]:
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
        build = _build_dir(lab, code_hash)
        if not (build / "template" / TEMPLATE).exists():
            ctx.sh.run(["faas-cli", "template", "store", "pull", TEMPLATE], cwd=build, timeout=lab.timeout)
        for verb in ("build", "push"):
            ctx.say(f"faas-cli {verb} {image}")
            ctx.sh.run(["faas-cli", verb, "-f", "stack.yaml"], cwd=build, timeout=lab.timeout * 2)
        ctx.sh.run(["faas-cli", "deploy", "-f", "stack.yaml", "--gateway", gateway_url(lab)], cwd=build,
                   timeout=lab.timeout)
        return f"deployed {image}"

    def wait(ctx):
        return ctx.kube.wait_deployment(FN_NAMESPACE, FUNCTION, timeout=lab.timeout, say=ctx.say)

    return [*login_steps(lab), Step(f"function {FUNCTION} deployed", check, deploy, wait=wait)]


def invoke_steps(lab: Lab, data: str) -> list[Step]:
    def check(ctx):
        return ok() if lab.can.runs_containers else skip(NO_CONTAINERS)

    def call(ctx):
        out = ctx.sh.run(["faas-cli", "invoke", FUNCTION, "--gateway", gateway_url(lab)], input=data,
                         timeout=60).stdout
        return f"{FUNCTION}({data!r}) -> {out.rstrip(chr(10))!r}"

    return [action(f"invoke {FUNCTION}", call, check=check)]


def remove_steps(lab: Lab) -> list[Step]:
    def check(ctx):
        if deployed_image(ctx.kube) is None:
            return ok(f"function {FUNCTION} absent")
        if not lab.can.runs_containers:
            return skip(f"{NO_CONTAINERS}; deleting namespace {FN_NAMESPACE} removes the function's objects")
        return change(f"remove function {FUNCTION}")

    def remove(ctx):
        ctx.sh.run(["faas-cli", "remove", FUNCTION, "--gateway", gateway_url(lab)])

    return [Step(f"function {FUNCTION} absent", check, remove)]


PART = Part(
    name="faas", namespaces=(NAMESPACE, FN_NAMESPACE), install=install_steps, uninstall=uninstall_steps,
    help=("Install OpenFaaS with Helm (and, on kind, the local registry) and wait for the gateway.",
          "Remove the function, uninstall OpenFaaS and delete its namespaces."),
    use=lambda lab: deploy_steps(lab) + invoke_steps(lab, "Hello World"),
    addresses=lambda lab: [("OpenFaaS gateway", gateway_url(lab), "user admin; invoke faas.login")],
    status=lambda lab, kube: function_status(kube),
    memory_mib=768, cpus=0.5, requests=(450, 800), tools=("kubectl", "helm", "faas-cli"), images=("registry",),
    releases=lambda lab: {"faas": openfaas_release(lab)},
    offline_blocker="OpenFaaS's images cannot be built from package registries (the Go module proxy refuses "
                    "github.com/openfaas/*)")


__all__ = ["install_steps", "uninstall_steps", "login_steps", "deploy_steps", "invoke_steps", "remove_steps",
           "function_hash", "basic_auth", "gateway_url"]
