"""The cluster play: create, delete and describe the lab's cluster.

Three providers behind the same steps: `kind` (real nodes in Docker), `kwok`
(a real control plane with simulated nodes, no containers) and `existing`
(any kubeconfig context). Every step targets `lab.context` explicitly.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from . import images
from .core import daemons as daemons_, kubeconfig, kyaml
from .core.daemons import Daemon
from .core.commands import CommandError
from .core.portforward import port_free
from .core.settings import Lab
from .core.steps import MissingPrerequisite, Step, StepFailed, change, ok, unknown

ROOT = Path(__file__).resolve().parent.parent
KIND_CONFIG = ROOT / "manifests" / "kind-cluster.yaml"
# What the cluster itself needs before any part, roughly (doctor): a kind control plane.
CLUSTER_MEMORY_MIB, CLUSTER_CPUS = 2048, 1.0
CLUSTER_IMAGES = ("node",)  # offline: kindlab's node image
KWOK_STAGES = ROOT / "manifests" / "kwok" / "stages.yaml"
KWOK_BINARIES = {  # kwokctl flag -> binary built by `invoke tools.install --testbed`
    "--kube-apiserver-binary": "kube-apiserver",
    "--kube-controller-manager-binary": "kube-controller-manager",
    "--kube-scheduler-binary": "kube-scheduler",
    "--etcd-binary": "etcd",
    "--kwok-controller-binary": "kwok",
}


# --- kind ------------------------------------------------------------------
def node_image(lab: Lab) -> str:
    """kind's --image: the configured one, offline kindlab's own, else "" (kind's default)."""
    if lab.node_image:
        return lab.node_image
    return images.reference("node") if lab.offline else ""


def render_kind_config(lab: Lab) -> dict:
    """The kind Cluster config with the lab's ports; mappings sit under the node.

    With kindlab's node image, also what kubeadm must know about it: its
    control-plane images' names and tags, and kube-proxy in nftables mode.
    """
    config = kyaml.load(KIND_CONFIG.read_text())
    if images.is_kindlab_node(node_image(lab)):
        config["kubeadmConfigPatches"] = images.kubeadm_patches()
        config.setdefault("networking", {})["kubeProxyMode"] = "nftables"
    control_plane = config["nodes"][0]
    mappings = {m["containerPort"]: m for m in control_plane["extraPortMappings"]}
    mappings[30080]["hostPort"] = lab.nginx_port
    mappings[80]["hostPort"] = lab.http_port
    mappings[31112]["hostPort"] = lab.gateway_port
    for mapping in control_plane["extraPortMappings"]:
        mapping["listenAddress"] = lab.listen_address
    config["nodes"] = [control_plane] + [{"role": "worker"} for _ in range(lab.workers)]
    return config


def _clusters(ctx, tool: str) -> list[str]:
    """Cluster names `kind get clusters` or `kwokctl get clusters` lists."""
    out = ctx.sh.run([tool, "get", "clusters"]).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


CLUSTER_TOOL = {"kind": "kind", "kwok": "kwokctl"}  # what creates, lists and deletes a provider's clusters


def _require_cluster(ctx, lab: Lab) -> None:
    """For the checks after `cluster exists`: in a dry run before it exists, they cannot tell."""
    if lab.cluster not in _clusters(ctx, CLUSTER_TOOL[lab.provider]):
        raise MissingPrerequisite(f"{lab.provider} cluster {lab.cluster}")


def _exists_check(lab: Lab, tool: str):
    def check(ctx):
        if lab.cluster in _clusters(ctx, tool):
            return ok(f"{lab.provider} cluster {lab.cluster} exists")
        return change(f"create {lab.provider} cluster {lab.cluster}")
    return check


def _kind_nodes(ctx) -> dict[str, str]:
    """Node container name -> Docker state for the lab's kind cluster."""
    out = ctx.sh.run(["docker", "ps", "-a", "--filter", f"label=io.x-k8s.kind.cluster={ctx.lab.cluster}",
                      "--format", "{{.Names}}\t{{.State}}"]).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def _kind_node_images(ctx) -> set[str]:
    """The images the lab's node containers were created from."""
    names = list(_kind_nodes(ctx))
    if not names:
        return set()
    out = ctx.sh.run(["docker", "inspect", "--format", "{{.Config.Image}}", *names]).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def _kind_mapped_ports(ctx) -> set[tuple[str, int, int]]:
    """(listen address, host port, container port) of the control-plane node as it is."""
    out = ctx.sh.run(["docker", "inspect", "--format", "{{json .HostConfig.PortBindings}}",
                      f"{ctx.lab.cluster}-control-plane"]).stdout
    found = set()
    for container, bindings in (json.loads(out or "{}") or {}).items():
        port = int(container.split("/")[0])
        for b in bindings or []:
            if port != 6443:  # the API server mapping kind adds itself
                found.add((b.get("HostIp") or "0.0.0.0", int(b["HostPort"]), port))
    return found


def _remove_half_made(ctx, lab: Lab) -> None:
    """Delete an unfinished kind cluster, including node containers Docker creates a moment late.

    Ctrl-C ends whatever child runs at that moment, this clean-up's too, so each
    command runs again if a signal ended it; and a `docker run` that was under way
    when kind was interrupted can still leave its container behind just after.
    """
    for _ in range(3):
        deleted = ctx.sh.run(["kind", "delete", "cluster", "--name", lab.cluster,
                              "--kubeconfig", str(own_kubeconfig(lab))], check=False, timeout=120)
        if deleted.returncode is not None and deleted.returncode >= 0:
            break
    quiet = 0
    for _ in range(20):
        late = list(_kind_nodes(ctx))
        if late:
            quiet = 0
            ctx.sh.run(["docker", "rm", "--force", "--volumes", *late], check=False)
        else:
            quiet += 1
            if quiet == 3:
                return
        time.sleep(0.5)


def own_kubeconfig(lab: Lab) -> Path:
    """A kubeconfig only kind/kwokctl write to, so they never touch the user's current context."""
    path = lab.home / "kubeconfigs" / f"{lab.context}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def config_file(lab: Lab) -> Path:
    """The kind or kwokctl configuration kindlab renders for the cluster."""
    return lab.home / lab.provider / f"{lab.cluster}.yaml"


def cluster_files(lab: Lab) -> list[Path]:
    """Every file kindlab writes for one cluster (the operators' pid and log files live in the last)."""
    return [lab.home / "kubeconfigs" / f"{lab.context}.yaml", config_file(lab), lab.home / "kwok" / lab.cluster]


def kind_create_steps(lab: Lab) -> list[Step]:
    config_path = config_file(lab)

    def create(ctx):
        image = node_image(lab)
        if image and images.is_kindlab_node(image) and images.present_inputs(ctx.sh, image) is None:
            raise StepFailed(f"node image {image} is not built: run `invoke images.build --only node` "
                             "(or leave offline mode for kind's own image)")
        config = render_kind_config(lab)
        busy = [f"{m['listenAddress']}:{m['hostPort']}" for m in config["nodes"][0]["extraPortMappings"]
                if not port_free(m["hostPort"], m["listenAddress"])]
        if busy:
            raise StepFailed(f"host port {', '.join(busy)} already in use: stop what listens there "
                             "or choose other ports in invoke.yaml (kindlab.ports)")
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = ["kind", "create", "cluster", "--name", lab.cluster, "--config", str(config_path),
                "--kubeconfig", str(own_kubeconfig(lab)), "--wait", "0s"]
        try:
            ctx.sh.run(argv + (["--image", image] if image else []), timeout=lab.timeout * 2)
        except BaseException:
            # kind removes its nodes when it fails, not when it is interrupted (Ctrl-C) or
            # timed out: a half-made cluster would pass the next run's exists check and
            # leave it waiting for nodes that never turn Ready.
            _remove_half_made(ctx, lab)
            raise
        return f"created kind cluster {lab.cluster}" + (f" from {image}" if image else "")

    def check_exists(ctx):
        if lab.cluster not in _clusters(ctx, "kind"):
            return change(f"create kind cluster {lab.cluster}")
        never_started = sorted(n for n, state in _kind_nodes(ctx).items() if state == "created")
        if never_started:  # what an interrupted `kind create` can leave behind
            return change(f"recreate kind cluster {lab.cluster}: it is half-made (node containers "
                          f"{', '.join(never_started)} were never started)")
        return ok(f"kind cluster {lab.cluster} exists")

    def recreate(ctx):
        if lab.cluster in _clusters(ctx, "kind"):
            _remove_half_made(ctx, lab)
        return create(ctx)

    def check_running(ctx):
        _require_cluster(ctx, lab)
        stopped = [n for n, state in _kind_nodes(ctx).items() if state != "running"]
        if stopped:
            return change(f"start stopped node containers {', '.join(sorted(stopped))}")
        wanted = {(m["listenAddress"], m["hostPort"], m["containerPort"])
                  for m in render_kind_config(lab)["nodes"][0]["extraPortMappings"]}
        actual = _kind_mapped_ports(ctx)
        if not wanted <= actual:
            return ok(f"warning: the cluster maps {sorted(actual)} but the config wants {sorted(wanted)}; "
                      "port mappings are fixed when a kind cluster is created: "
                      "`invoke cluster.delete` then `invoke cluster.create` to apply them")
        image = node_image(lab)
        running = _kind_node_images(ctx)
        if image and running and running != {image}:
            return ok(f"warning: the nodes run {', '.join(sorted(running))}, not {image}; a node image is "
                      "fixed when a kind cluster is created: `invoke cluster.delete` then `invoke cluster.create`")
        return ok("node containers running")

    def start_nodes(ctx):
        stopped = sorted(n for n, state in _kind_nodes(ctx).items() if state != "running")
        ctx.sh.run(["docker", "start", *stopped])
        return f"started {', '.join(stopped)}"

    def merged_context(ctx):
        return ctx.sh.run(["kind", "get", "kubeconfig", "--name", lab.cluster]).stdout

    return [
        Step(f"kind cluster {lab.cluster}", check_exists, recreate),
        Step(f"kind nodes of {lab.cluster} running", check_running, start_nodes),
        _context_step(lab, merged_context),
        _nodes_ready_step(lab, want=1 + lab.workers, system_pods=True),
    ]


def needs_loading(lab: Lab, image: str) -> bool:
    """Whether kindlab must put `image` into the kind nodes itself: offline, or an image it built."""
    return lab.can.docker_nodes and (lab.offline or image.startswith(f"{images.REPOSITORY}/"))


def images_loaded_step(lab: Lab, what: str, refs: list[str]) -> Step:
    """kind: images no registry serves here, loaded from the local engine into every node's containerd."""
    def local_id(ctx, ref: str) -> str:
        result = ctx.sh.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], check=False)
        if result.returncode != 0:
            build = (f"run `invoke images.build --only {ref.split('/', 1)[1].split(':')[0]}`"
                     if ref.startswith(f"{images.REPOSITORY}/") else f"pull or build it (`docker image ls {ref}`)")
            raise StepFailed(f"image {ref} is not in the local Docker engine, so it cannot be loaded into the "
                             f"kind nodes: {build}")
        return result.stdout.strip()

    def node_id(ctx, node: str, ref: str) -> str | None:
        result = ctx.sh.run(["docker", "exec", node, "crictl", "inspecti", "-o", "json", ref], check=False)
        if result.returncode != 0:
            return None
        return (json.loads(result.stdout or "{}").get("status") or {}).get("id")

    def missing(ctx) -> dict[str, list[str]]:
        nodes = sorted(_kind_nodes(ctx))
        if not nodes:
            raise StepFailed(f"kind cluster {lab.cluster} has no nodes: run `invoke cluster.create`")
        return {ref: [n for n in nodes if node_id(ctx, n, ref) != wanted]
                for ref, wanted in ((ref, local_id(ctx, ref)) for ref in refs)}

    def check(ctx):
        todo = {ref: nodes for ref, nodes in missing(ctx).items() if nodes}
        if not todo:
            return ok(f"{', '.join(refs)} on every node")
        return change("; ".join(f"load {ref} into {', '.join(nodes)}" for ref, nodes in todo.items()))

    def load(ctx):
        for ref, nodes in missing(ctx).items():
            if nodes:
                ctx.say(f"kind load docker-image {ref}")
                ctx.sh.run(["kind", "load", "docker-image", ref, "--name", lab.cluster, "--nodes", ",".join(nodes)],
                           timeout=lab.timeout)

    return Step(f"{what} image(s) in the kind nodes", check, load)


# --- kwok --------------------------------------------------------------------
def kwok_dir(lab: Lab) -> Path:
    return Path.home() / ".kwok" / "clusters" / lab.cluster


def render_kwok_config(lab: Lab) -> str:
    """KwokctlConfiguration (loopback only) plus kindlab's stages with the lab's pod delay."""
    stages = [d for d in kyaml.load_all(KWOK_STAGES.read_text()) if d]
    for stage in stages:
        if stage["metadata"]["name"] == "kindlab-pod-ready":
            stage["spec"]["delay"]["durationMilliseconds"] = lab.kwok.ready_delay_ms
    options = {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokctlConfiguration",
               "options": {"bindAddress": "127.0.0.1"}}
    return yaml.safe_dump_all([options, *stages], sort_keys=False)


# The CRDs each operator's controllers need, installed by its chart: the operator
# starts once they are Established (ray-operator exits without them;
# prometheus-operator would run without the controllers of the missing ones).
OPERATOR_CRDS = {
    "ray-operator": ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io"),
    # (its Alertmanager controller lists AlertmanagerConfigs before it reconciles anything)
    "prometheus-operator": tuple(f"{plural}.monitoring.coreos.com" for plural in (
        "prometheuses", "alertmanagers", "alertmanagerconfigs", "servicemonitors", "podmonitors", "probes",
        "prometheusrules")),
}


def kwok_operators(lab: Lab) -> list[Daemon]:
    """The operators that turn the charts' custom resources into pods, run here as local processes.

    On kind they run in the cluster, installed by their charts; a simulated
    cluster runs no containers, so the chart's operator pod is only a shadow
    and the real binary runs beside the control plane instead, with the
    cluster's admin credentials (read from kwokctl's kubeconfig when started).
    Each runs under a supervisor that starts it again when it exits, as a
    kubelet would: prometheus-operator exits until its CRDs are installed.
    """
    home = lab.home / "kwok" / lab.cluster
    kubeconfig_path = kwok_dir(lab) / "kubeconfig.yaml"
    common = {"env": {"KUBECONFIG": str(kubeconfig_path)}, "restart": True,
              "kubectl": str(lab.tools_dir / "kubectl")}
    ray = Daemon("ray-operator", [str(lab.tools_dir / "ray-operator"), "--metrics-addr=0",
                                  "--health-probe-bind-address=0", "--enable-leader-election=false",
                                  "--log-stdout-encoder=console"],
                 home, needs_crds=OPERATOR_CRDS["ray-operator"], **common)
    argv = [str(lab.tools_dir / "prometheus-operator"), "--web.listen-address=127.0.0.1:0", "--log-level=info"]
    if kubeconfig_path.exists():
        argv += _client_flags(kubeconfig_path)
    return [ray, Daemon("prometheus-operator", argv, home, needs_crds=OPERATOR_CRDS["prometheus-operator"],
                        **common)]


def _client_flags(kubeconfig_path: Path) -> list[str]:
    """prometheus-operator reads no kubeconfig: the API server and client certificate as its flags."""
    config = kyaml.load(kubeconfig_path.read_text())
    current = config.get("current-context") or config["contexts"][0]["name"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == current)
    cluster_entry = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    flags = ["--apiserver", cluster_entry["server"]]
    for flag, key in (("--ca-file", "certificate-authority"), ("--cert-file", "client-certificate"),
                      ("--key-file", "client-key")):
        if cluster_entry.get(key) or user.get(key):
            flags += [flag, cluster_entry.get(key) or user.get(key)]
    return flags


def operator_unavailable(lab: Lab, tool: str) -> str | None:
    """Why no operator of this kind can run in the lab's cluster, or None when one can.

    Only the simulated cluster knows beforehand: its operators are local
    binaries. Elsewhere the operator is the chart's own pod, judged by its wait.
    """
    if not lab.can.local_operators or (lab.tools_dir / tool).exists():
        return None
    return (f"{tool} is not installed in {lab.tools_dir}, so on the simulated cluster nothing turns this "
            f"part's custom resources into pods: `invoke tools.install --testbed --only {tool}`, "
            "then `invoke cluster.create --provider kwok` starts it")


def kwok_operators_step(lab: Lab) -> Step:
    def installed(daemons):
        return [d for d in daemons if Path(d.argv[0]).exists()]

    def check(ctx):
        daemons = kwok_operators(lab)
        missing = [d.name for d in daemons if d not in installed(daemons)]
        note = f" ({', '.join(missing)} not installed: `invoke tools.install --testbed`)" if missing else ""
        stopped = [d.name for d in installed(daemons) if daemons_.running_pid(d) is None]
        if stopped:
            return change(f"start {', '.join(stopped)}{note}")
        return ok(f"{', '.join(d.name for d in installed(daemons)) or 'no operator'} running{note}")

    def apply(ctx):
        started = []
        for daemon in installed(kwok_operators(lab)):
            if daemons_.running_pid(daemon) is None:
                daemons_.start(daemon)
                started.append(daemon.name)
        return f"started {', '.join(started)} (logs in {lab.home / 'kwok' / lab.cluster})"

    return Step(f"operators of {lab.cluster} running", check, apply)


def kwok_components(ctx, lab: Lab) -> dict[str, int | None]:
    """Each process kwokctl runs for the cluster (etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler, kwok-controller) -> its pid while it runs, else None."""
    names = ctx.sh.run(["kwokctl", "get", "components", "--name", lab.cluster]).stdout.split()
    return {name: _component_pid(lab, name) for name in names}


def _component_pid(lab: Lab, name: str) -> int | None:
    try:
        pid = int((kwok_dir(lab) / "pids" / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    if not daemons_.alive(pid):  # an exited process not yet reaped counts as dead here, not for kwokctl
        return None
    try:  # Linux: the pid may have been handed to another program since
        program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        program = ""
    return None if program and Path(program).name != name else pid


def _component_log(lab: Lab, name: str) -> str:
    """The last line of a component's log, which says why it exited."""
    try:
        lines = [line for line in (kwok_dir(lab) / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "an empty log"


def kwok_control_plane_step(lab: Lab) -> Step:
    """Every control-plane process running, restarted when one died; then the API server ready and
    the controller-manager and scheduler leading again (a restarted one waits for its old lease to expire)."""
    restarted: dict[str, float] = {}  # apply -> wait: when the control plane was started again

    def dead(ctx) -> list[str]:
        return [name for name, pid in kwok_components(ctx, lab).items() if pid is None]

    def check(ctx):
        _require_cluster(ctx, lab)
        stopped = dead(ctx)
        if stopped:
            return change(f"restart {', '.join(stopped)} of kwok cluster {lab.cluster} (not running)")
        try:
            ctx.sh.run(["kubectl", "--kubeconfig", str(kwok_dir(lab) / "kubeconfig.yaml"),
                        "get", "--raw", "/readyz"], timeout=10)
        except CommandError:
            return change(f"restart kwok cluster {lab.cluster} (its API server is not ready)")
        return ok("control plane running")

    def start(ctx):
        stopped = dead(ctx)
        for name in stopped:  # kwokctl skips a component whose pid file names a live (or unreaped) pid
            (kwok_dir(lab) / "pids" / f"{name}.pid").unlink(missing_ok=True)
        restarted["at"] = time.time()
        # kwokctl would wait two minutes for an API server that exits at once; the wait below says why
        ctx.sh.run(["kwokctl", "start", "cluster", "--name", lab.cluster, "--timeout", "20s"], timeout=lab.timeout)
        ctx.reset_kube()
        return f"restarted {', '.join(stopped) or 'the control plane'} of kwok cluster {lab.cluster}"

    def wait(ctx):
        from .core.kube import LEADERS, Kube, Verdict  # the kubernetes client is slow to import; only plays need it

        since = restarted.get("at")
        # kwokctl's own kubeconfig: the user's may not have the context yet
        kube = Kube(kwok_dir(lab) / "kubeconfig.yaml", lab.context, fix="`invoke cluster.create` restarts it")

        def evaluate() -> Verdict:
            stopped = dead(ctx)
            if stopped:  # it exited at once: a port another program took, a bad flag; its log says
                return Verdict(False, f"{', '.join(stopped)} exited", failure=(
                    "; ".join(f"{name} of kwok cluster {lab.cluster} exited after starting; its log ends: "
                              f"{_component_log(lab, name)}" for name in stopped)
                    + "; fix what the log says (a port in use: stop what listens there, or "
                      "`invoke cluster.delete` and `invoke cluster.create` for new ports), then run "
                      "`invoke cluster.create` again"))
            not_ready = kube.api_not_ready()
            if not_ready:
                return Verdict(False, f"API server not ready: {not_ready}")
            if since is None:
                behind = list(kube.leaders_down())
            else:  # renewed since the restart: a live leader (same clock: kwok runs here)
                renewed = {name: at for name, (at, _) in kube.leases().items()}
                behind = [name for name in LEADERS if renewed.get(name, 0.0) <= since]
            if behind:
                return Verdict(False, f"waiting for {', '.join(behind)} to lead again (a restarted one waits "
                                      "for its old lease to expire)")
            return Verdict(True, "control plane running; API server ready; "
                                 f"{', '.join(LEADERS)} leading")

        return kube.wait_for(f"control plane of {lab.cluster}", evaluate, [], timeout=lab.timeout,
                             say=ctx.say, recheck=0.5)

    return Step(f"kwok control plane of {lab.cluster} running", check, start, wait=wait)


def kwok_create_steps(lab: Lab) -> list[Step]:
    config_path = config_file(lab)

    def create(ctx):
        missing = [name for name in KWOK_BINARIES.values() if not (lab.tools_dir / name).exists()]
        if missing or ctx.sh.which("kwokctl") is None or ctx.sh.which("kubectl") is None:
            raise StepFailed(f"the kwok testbed needs {', '.join(missing or ['kwokctl', 'kubectl'])} "
                             f"in {lab.tools_dir}: run `invoke tools.install --testbed`")
        config_path.parent.mkdir(parents=True, exist_ok=True)
        config_path.write_text(render_kwok_config(lab))
        argv = ["kwokctl", "create", "cluster", "--name", lab.cluster, "--runtime", "binary",
                "--config", str(config_path), "--kubeconfig", str(own_kubeconfig(lab)), "--wait", "60s"]
        for flag, name in KWOK_BINARIES.items():
            argv += [flag, str(lab.tools_dir / name)]
        try:
            ctx.sh.run(argv, timeout=lab.timeout)
        except CommandError:
            # A half-made cluster would make the next run think all is well.
            ctx.sh.run(["kwokctl", "delete", "cluster", "--name", lab.cluster,
                        "--kubeconfig", str(own_kubeconfig(lab))], check=False)
            raise
        ctx.reset_kube()
        return f"created kwok cluster {lab.cluster}"

    def check_nodes(ctx):
        have = len(ctx.kube.core.list_node().items)
        if have == lab.kwok.nodes:
            return ok(f"{have} simulated node(s)")
        return change(f"scale simulated nodes {have} -> {lab.kwok.nodes} "
                      f"({lab.kwok.cpu} CPU, {lab.kwok.memory} each)")

    def scale(ctx):
        ctx.sh.run(["kwokctl", "scale", "node", "--name", lab.cluster, "--replicas", str(lab.kwok.nodes),
                    "--param", f'.allocatable.cpu="{lab.kwok.cpu}"',
                    "--param", f'.allocatable.memory="{lab.kwok.memory}"',
                    "--param", f'.allocatable.pods="{lab.kwok.pods}"'], timeout=lab.timeout)

    def read_kubeconfig(ctx):
        return (kwok_dir(lab) / "kubeconfig.yaml").read_text()

    return [
        Step(f"kwok cluster {lab.cluster}", _exists_check(lab, "kwokctl"), create),
        kwok_control_plane_step(lab),
        _context_step(lab, read_kubeconfig),
        Step(f"simulated nodes of {lab.cluster}", check_nodes, scale),
        _nodes_ready_step(lab, want=lab.kwok.nodes, system_pods=False),
        kwok_operators_step(lab),
    ]


# --- shared steps ----------------------------------------------------------
def _context_step(lab: Lab, read_source) -> Step:
    """Put the cluster's context into the user's kubeconfig without making it current."""
    def entries(ctx):
        return kubeconfig.context_entries(read_source(ctx), lab.context)

    def check(ctx):
        if lab.provider in CLUSTER_TOOL:
            _require_cluster(ctx, lab)
        if kubeconfig.has_entries(lab.kubeconfig, entries(ctx)):
            return ok(f"context {lab.context} in {lab.kubeconfig}")
        return change(f"add context {lab.context} to {lab.kubeconfig} (current context unchanged)")

    def apply(ctx):
        kubeconfig.merge(lab.kubeconfig, entries(ctx))
        ctx.reset_kube()

    return Step(f"context {lab.context}", check, apply)


def _nodes_ready_step(lab: Lab, want: int, system_pods: bool) -> Step:
    def wait(ctx):
        # A restarted API server answers 403 to everyone until its authorizer is warm:
        # nothing below may read the cluster before /readyz says it is ready.
        ctx.kube.wait_api_ready(timeout=lab.timeout, say=ctx.say)
        done = ctx.kube.wait_nodes_ready(want, timeout=lab.timeout, say=ctx.say)
        ctx.kube.wait_service_account(timeout=lab.timeout, say=ctx.say)
        if system_pods:
            done += "; " + ctx.kube.wait_namespace_ready("kube-system", timeout=lab.timeout, say=ctx.say)
        return done

    def check(ctx):
        from .core.kube import condition_ready  # the kubernetes client is slow to import: only when used

        # Just started (a stopped node, a restarted control plane), the API server answers 403
        # to everyone until its authorizer is warm: the wait below waits that out.
        not_ready = ctx.kube.api_not_ready()
        if not_ready:
            return unknown(f"the API server ready ({not_ready})")
        nodes = ctx.kube.core.list_node().items
        ready = [n for n in nodes if condition_ready(n)]
        if len(ready) >= want and len(ready) == len(nodes):
            return ok(f"{len(ready)}/{len(nodes)} nodes Ready")
        return unknown(f"{want} Ready node(s); {len(ready)} of {len(nodes)} are")

    return Step(f"nodes of {lab.context} Ready", check, wait=wait)


def existing_steps(lab: Lab) -> list[Step]:
    def check(ctx):
        if not kubeconfig.has_context(lab.kubeconfig, lab.context):
            raise StepFailed(f"context {lab.context!r} is not in {lab.kubeconfig}: "
                             "see `kubectl config get-contexts`")
        return ok(f"using existing context {lab.context}")

    return [Step(f"context {lab.context}", check), _nodes_ready_step(lab, want=1, system_pods=False)]


def create_steps(lab: Lab) -> list[Step]:
    return {"kind": kind_create_steps, "kwok": kwok_create_steps, "existing": existing_steps}[lab.provider](lab)


def delete_steps(lab: Lab) -> list[Step]:
    if not lab.can.creates_clusters:
        return [Step(f"context {lab.context}",
                     lambda ctx: ok("an existing cluster is not kindlab's to delete; "
                                    "use `invoke down` to remove the lab's parts"))]
    tool = CLUSTER_TOOL[lab.provider]

    def check(ctx):
        if lab.cluster in _clusters(ctx, tool):
            return change(f"delete {lab.provider} cluster {lab.cluster}")
        return ok(f"no {lab.provider} cluster {lab.cluster}")

    def delete(ctx):
        ctx.sh.run([tool, "delete", "cluster", "--name", lab.cluster, "--kubeconfig", str(own_kubeconfig(lab))],
                   timeout=lab.timeout)
        ctx.reset_kube()

    def check_context(ctx):
        if kubeconfig.has_context(lab.kubeconfig, lab.context):
            return change(f"remove context {lab.context} from {lab.kubeconfig}")
        return ok(f"no context {lab.context}")

    steps = [Step(f"{lab.provider} cluster {lab.cluster} absent", check, delete),
             Step(f"context {lab.context} absent", check_context,
                  lambda ctx: kubeconfig.remove_context(lab.kubeconfig, lab.context) and None),
             files_absent_step(lab)]
    if lab.can.docker_nodes:
        return [*steps, _kind_leftovers_step(lab)]
    return [kwok_operators_stopped_step(lab), *steps]


def files_absent_step(lab: Lab) -> Step:
    """The cluster's kubeconfig, its kind/kwokctl configuration and its operators' pid and log files."""
    def left():
        return [path for path in cluster_files(lab) if path.exists()]

    def check(ctx):
        paths = left()
        return change(f"remove {', '.join(map(str, paths))}") if paths else ok(f"no file of {lab.cluster} left")

    def remove(ctx):
        for path in left():
            shutil.rmtree(path) if path.is_dir() else path.unlink()

    return Step(f"files of {lab.cluster} absent", check, remove)


def kwok_operators_stopped_step(lab: Lab) -> Step:
    def check(ctx):
        running = [d.name for d in kwok_operators(lab) if daemons_.running_pid(d) is not None]
        return change(f"stop {', '.join(running)}") if running else ok("no operator running")

    def apply(ctx):
        for daemon in kwok_operators(lab):
            daemons_.stop(daemon)

    return Step(f"operators of {lab.cluster} stopped", check, apply)


KINDLAB_LABEL = "kindlab.dev/part"  # on containers kindlab runs beside kind's (the faas registry)


def _kind_leftovers_step(lab: Lab) -> Step:
    """With the last kind cluster gone: kindlab's own containers, then the `kind` network, go too."""
    def leftovers(ctx) -> tuple[list[str], list[str], list[str]]:
        """(other kind clusters, kindlab's containers, other containers on the kind network or ["-"] if none)"""
        others = _clusters(ctx, "kind")
        ours = ctx.sh.run(["docker", "ps", "-a", "--filter", f"label={KINDLAB_LABEL}",
                           "--format", "{{.Names}}"]).stdout.split()
        result = ctx.sh.run(["docker", "network", "inspect", "--format",
                             "{{range .Containers}}{{.Name}} {{end}}", "kind"], check=False)
        users = [n for n in result.stdout.split() if n not in ours] if result.returncode == 0 else ["-"]
        return others, ours, users

    def check(ctx):
        others, ours, users = leftovers(ctx)
        if others:
            return ok(f"other kind clusters remain ({', '.join(others)}): the kind network stays for them")
        remove = [f"container {n}" for n in ours] + (["the kind network"] if not users else [])
        if remove:
            return change("remove " + ", ".join(remove))
        if users != ["-"]:
            return ok(f"the kind network stays: containers not of kindlab's use it ({', '.join(users)})")
        return ok("no container or network of kindlab's left")

    def remove(ctx):
        others, ours, users = leftovers(ctx)
        if ours:
            ctx.sh.run(["docker", "rm", "--force", "--volumes", *ours])
        if not others and not users:
            ctx.sh.run(["docker", "network", "rm", "kind"])

    return Step("kindlab's containers and network absent", check, remove)


def status_rows(lab: Lab, kube) -> list[tuple[str, str]]:
    """(what, state) lines for `cluster.status`."""
    rows = [("provider", lab.provider), ("context", f"{lab.context} (in {lab.kubeconfig})")]
    version = kube.api.call_api("/version", "GET", response_type="object", auth_settings=["BearerToken"],
                                _return_http_data_only=True)
    rows.append(("server version", version.get("gitVersion", "?")))
    from .core.kube import condition_ready

    for node in kube.core.list_node().items:
        ready = condition_ready(node)
        alloc = node.status.allocatable or {}
        rows.append((f"node {node.metadata.name}",
                     f"{'Ready' if ready else 'NotReady'}, kubelet {node.status.node_info.kubelet_version or 'simulated'}, "
                     f"{alloc.get('cpu', '?')} CPU, {alloc.get('memory', '?')}"))
    if lab.can.local_operators:
        for daemon in kwok_operators(lab):
            pid = daemons_.running_pid(daemon)
            rows.append((f"operator {daemon.name}", f"running (pid {pid}), log {daemon.log_file}" if pid else
                         f"not running: `invoke cluster.create --provider kwok` starts it ({daemons_.last_lines(daemon, 1)})"))
    if lab.can.docker_nodes:
        for m in render_kind_config(lab)["nodes"][0]["extraPortMappings"]:
            rows.append(("port mapping", f"{m['listenAddress']}:{m['hostPort']} -> node:{m['containerPort']}"))
    return rows
