"""The nginx play: a Deployment and a NodePort Service, scaled, verified at localhost."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from . import images, probes, providers
from .core import kyaml
from .core.part import NodePort, Part
from .core.quantities import node_free
from .core.resources import absent, applied
from .core.settings import Lab, Setting
from .core.steps import Step, StepFailed, action, change, ok

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
NAMESPACE = "default"
MAX_REPLICAS = 100  # nginx pods: a lab on one machine
SETTINGS = {"image": Setting("nginx:1.27.5", str),  # pinned, never latest
            "replicas": Setting(3, int, 0, MAX_REPLICAS)}
NODE_PORT = NodePort("nginx", 30080, 30080, "nginx NodePort")
POD_CPU_M = 50  # what each nginx pod requests (manifests/nginx-deploy.yaml)
ENDPOINTS_SETTLE_S = 5.0  # how long the endpoints may lag the Ready pods before a count is wrong


def image(lab: Lab) -> str:
    """kindlab.images.nginx, else offline the image kindlab built, else kindlab.nginx.image."""
    return images.for_part(lab, "nginx") or lab.part_setting("nginx", "image", SETTINGS["image"].default)


def replicas(lab: Lab) -> int:
    """kindlab.nginx.replicas: how many pods `invoke all` and `nginx.scale` make."""
    return lab.part_setting("nginx", "replicas", SETTINGS["replicas"].default)


def url(lab: Lab) -> str:
    return f"http://{lab.listen_address}:{lab.host_port(NODE_PORT.name, NODE_PORT.host_port)}/"


def documents(lab: Lab) -> list[dict]:
    deploy = kyaml.load((MANIFESTS / "nginx-deploy.yaml").read_text())
    deploy["spec"]["template"]["spec"]["containers"][0]["image"] = image(lab)
    service = kyaml.load((MANIFESTS / "nginx-svc.yaml").read_text())
    service["spec"]["ports"][0]["nodePort"] = NODE_PORT.node_port  # the node side of the kind port mapping
    return [deploy, service]


def _wait_rollout(lab: Lab):
    return lambda ctx: ctx.kube.wait_deployment(NAMESPACE, "nginx", say=ctx.say)


def deploy_steps(lab: Lab, parts: Sequence[Part] = ()) -> list[Step]:
    return [*providers.of(lab).images_steps("nginx", [image(lab)]),
            applied("nginx deployment and service", lab, lambda: documents(lab), wait=_wait_rollout(lab))]


def room_for(kube, cpu_m: int) -> int:
    """How many more pods requesting `cpu_m` millicores the nodes can schedule (pod slots and CPU)."""
    return sum(max(0, min(slots, cpu // cpu_m if cpu_m else slots)) for _, cpu, _, slots in node_free(kube))


def scale_steps(lab: Lab, replicas: int) -> list[Step]:
    def check(ctx):
        dep = ctx.kube.apps.read_namespaced_deployment("nginx", NAMESPACE)
        if dep.spec.replicas == replicas:
            return ok(f"nginx has {replicas} replica(s)")
        more = replicas - (dep.spec.replicas or 0)
        room = room_for(ctx.kube, POD_CPU_M) if more > 0 else more
        warning = (f"; warning: the nodes have room for {room} more nginx pod(s) ({POD_CPU_M}m CPU each), "
                   f"so {more - room} will stay Pending" if more > room else "")
        return change(f"scale nginx {dep.spec.replicas} -> {replicas}{warning}")

    def scale(ctx):
        ctx.sh.run(["kubectl", *lab.cluster_flags(), "-n", NAMESPACE, "scale", "deployment", "nginx",
                    f"--replicas={replicas}"])

    return [Step(f"nginx scaled to {replicas}", check, scale, wait=_wait_rollout(lab))]


def verify_steps(lab: Lab) -> list[Step]:
    def verify(ctx):
        dep = ctx.kube.apps.read_namespaced_deployment("nginx", NAMESPACE)
        want = dep.spec.replicas or 0
        if not lab.can.runs_containers:
            # the EndpointSlice follows the pods' readiness a moment later: give it that moment
            deadline = time.monotonic() + ENDPOINTS_SETTLE_S
            while (ready := ctx.kube.ready_endpoints(NAMESPACE, "nginx")) != want and time.monotonic() < deadline:
                ctx.cancelled.wait(0.25)
            if ready != want:
                raise StepFailed(f"service nginx has {ready} ready endpoint(s), want {want}: "
                                 "check `invoke nginx.deploy` and `invoke nginx.scale`")
            return (f"service nginx: {ready}/{want} ready endpoints (a simulated cluster runs no "
                    "containers, so no HTTP request was made)")
        with providers.of(lab).reached(ctx, PART, NODE_PORT, NAMESPACE, "nginx", 80) as base:
            where = f"{base}/"
            try:
                status, body = probes.http_get(where, timeout=5, attempts=8, backoff=1.0)
            except probes.HttpGetError as exc:
                raise StepFailed(f"nginx not reachable at {where}: {exc}; is the kind port mapping in place "
                                 "(`invoke cluster.status`)?") from None
        text = body.decode("utf-8", "replace")
        if status != 200 or not probes.nginx_welcome_ok(text):
            raise StepFailed(f"{where} answered {status} without the nginx welcome page")
        return f"{where} serves the nginx welcome page ({want} replicas){ctx.sh.note(where)}"

    return [action("nginx answers", verify)]


def delete_steps(lab: Lab, parts: Sequence[Part] = ()) -> list[Step]:
    return [absent("nginx deployment and service absent", lab, lambda: documents(lab))]


PART = Part(
    name="nginx", namespaces=(NAMESPACE,), install=deploy_steps, uninstall=delete_steps,
    help=("Apply the nginx Deployment and NodePort Service and wait for the rollout.",
          "Delete the nginx Deployment and Service (absent is fine)."),
    use=lambda lab, parts=(): scale_steps(lab, replicas(lab)) + verify_steps(lab),
    addresses=lambda lab: [("nginx", url(lab).rstrip("/"), "")],
    status=lambda lab, kube: [("nginx endpoints", f"{kube.ready_endpoints(NAMESPACE, 'nginx')} ready")],
    memory_mib=128, requests=(150, 96), tools=("kubectl",), images=("nginx",),  # 3 x 50m / 32Mi
    node_ports=(NODE_PORT,), settings=SETTINGS, task_names=("deploy", "delete"))
