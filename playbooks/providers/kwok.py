"""kwok: a real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) started by
kwokctl from the testbed's binaries, with kwok faking the kubelets; no container runs.

Everything kindlab does with kwokctl is here: create (the control plane's processes checked by pid and
restarted when one died, simulated nodes scaled, kindlab's pod lifecycle stages), delete (every file
kindlab wrote), and the charts' operators, which run as supervised local processes beside the control
plane (core/daemons.py) so a RayCluster or a Prometheus becomes pods as on kind.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import yaml

from .. import toolchain
from ..core import daemons as daemons_, kyaml
from ..core.commands import CommandError, LocalShell
from ..core.daemons import Daemon
from ..core.part import Part
from ..core.settings import Lab
from ..core.steps import MissingPrerequisite, Step, StepFailed, change, ok
from .base import (Finding, Provider, clusters, context_absent_step, context_step, exists_check,
                   files_absent_step, nodes_ready_step, own_kubeconfig, rendered)

ROOT = Path(__file__).resolve().parents[2]
KWOK_STAGES = ROOT / "manifests" / "kwok" / "stages.yaml"
KWOK_BINARIES = {  # kwokctl flag -> binary built by `invoke tools.install --testbed`
    "--kube-apiserver-binary": "kube-apiserver",
    "--kube-controller-manager-binary": "kube-controller-manager",
    "--kube-scheduler-binary": "kube-scheduler",
    "--etcd-binary": "etcd",
    "--kwok-controller-binary": "kwok",
}


class KwokProvider(Provider):
    tool = "kwokctl"

    def create_steps(self, parts: Sequence[Part]) -> list[Step]:
        return kwok_create_steps(self.lab)

    def delete_steps(self) -> list[Step]:
        lab = self.lab

        def check(ctx):
            if lab.cluster in clusters(ctx, "kwokctl"):
                return change(f"delete kwok cluster {lab.cluster}")
            return ok(f"no kwok cluster {lab.cluster}")

        def delete(ctx):
            ctx.sh.run(["kwokctl", "delete", "cluster", "--name", lab.cluster,
                        "--kubeconfig", str(own_kubeconfig(lab))])
            ctx.reset_kube()

        return [kwok_operators_stopped_step(lab), Step(f"kwok cluster {lab.cluster} absent", check, delete),
                context_absent_step(lab),
                files_absent_step(lab, [own_kubeconfig(lab), operators_home(lab)])]

    def operator_unavailable(self, tool: str, sh=None) -> str | None:
        """Only the simulated cluster knows beforehand: its operators are binaries beside its control plane."""
        lab = self.lab
        if (sh or LocalShell(lab.tools_dir)).exists(lab.machine.bin_dir / tool):
            return None
        return (f"{tool} is not installed in {lab.machine.bin_dir}, so on the simulated cluster nothing turns this "
                f"part's custom resources into pods: `invoke tools.install --testbed --only {tool}`, "
                "then `invoke cluster.create --provider kwok` starts it")

    def tools(self) -> tuple[str, ...]:
        return ("kubectl", *toolchain.TESTBED_TOOLS)

    def status_rows(self, kube, parts: Sequence[Part], sh=None) -> list[tuple[str, str]]:
        rows = super().status_rows(kube, parts, sh)
        sh = sh or LocalShell(self.lab.tools_dir)
        for daemon in kwok_operators(self.lab, sh):
            pid = daemons_.running_pid(daemon, sh)
            rows.append((f"operator {daemon.name}", f"running (pid {pid}), log {daemon.log_file}" if pid else
                         f"not running: `invoke cluster.create --provider kwok` starts it "
                         f"({daemons_.last_lines(daemon, sh, 1)})"))
        return rows


def _require_cluster(ctx, lab: Lab) -> None:
    """For the checks after `cluster exists`: in a dry run before it exists, they cannot tell."""
    if lab.cluster not in clusters(ctx, "kwokctl"):
        raise MissingPrerequisite(f"kwok cluster {lab.cluster}")


def kwok_dir(lab: Lab):
    """kwokctl's own folder for the cluster, where its commands run."""
    return lab.machine.user_home / ".kwok" / "clusters" / lab.cluster


def operators_home(lab: Lab):
    """The operators' pid and log files, where they run."""
    return lab.machine.home / "kwok" / lab.cluster


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


def kwok_operators(lab: Lab, sh=None) -> list[Daemon]:
    """The operators that turn the charts' custom resources into pods, run here as local processes.

    On kind they run in the cluster, installed by their charts; a simulated
    cluster runs no containers, so the chart's operator pod is only a shadow
    and the real binary runs beside the control plane instead, with the
    cluster's admin credentials (read from kwokctl's kubeconfig when started).
    Each runs under a supervisor that starts it again when it exits, as a
    kubelet would: prometheus-operator exits until its CRDs are installed.
    """
    sh = sh or LocalShell(lab.tools_dir)
    home, bin_dir = operators_home(lab), lab.machine.bin_dir
    kubeconfig_path = kwok_dir(lab) / "kubeconfig.yaml"
    common = {"env": {"KUBECONFIG": sh.far(kubeconfig_path)}, "restart": True,
              "kubectl": sh.far(bin_dir / "kubectl")}
    ray = Daemon("ray-operator", [sh.far(bin_dir / "ray-operator"), "--metrics-addr=0",
                                  "--health-probe-bind-address=0", "--enable-leader-election=false",
                                  "--log-stdout-encoder=console"],
                 home, needs_crds=OPERATOR_CRDS["ray-operator"], **common)
    argv = [sh.far(bin_dir / "prometheus-operator"), "--web.listen-address=127.0.0.1:0", "--log-level=info"]
    kubeconfig_text = sh.read_text(kubeconfig_path)
    if kubeconfig_text:
        argv += _client_flags(kubeconfig_text)
    return [ray, Daemon("prometheus-operator", argv, home, needs_crds=OPERATOR_CRDS["prometheus-operator"],
                        **common)]


def _client_flags(kubeconfig_text: str) -> list[str]:
    """prometheus-operator reads no kubeconfig: the API server and client certificate as its flags."""
    config = kyaml.load(kubeconfig_text)
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


def kwok_operators_step(lab: Lab) -> Step:
    def installed(ctx, daemons):
        return [d for d in daemons if ctx.sh.exists(d.argv[0])]

    def check(ctx):
        daemons = kwok_operators(lab, ctx.sh)
        missing = [d.name for d in daemons if d not in installed(ctx, daemons)]
        note = f" ({', '.join(missing)} not installed: `invoke tools.install --testbed`)" if missing else ""
        stopped = [d.name for d in installed(ctx, daemons) if daemons_.running_pid(d, ctx.sh) is None]
        if stopped:
            return change(f"start {', '.join(stopped)}{note}")
        return ok(f"{', '.join(d.name for d in installed(ctx, daemons)) or 'no operator'} running{note}")

    def apply(ctx):
        started = []
        for daemon in installed(ctx, kwok_operators(lab, ctx.sh)):
            if daemons_.running_pid(daemon, ctx.sh) is None:
                daemons_.start(daemon, ctx.sh)
                started.append(daemon.name)
        return f"started {', '.join(started)} (logs in {operators_home(lab)})"

    return Step(f"operators of {lab.cluster} running", check, apply)


def kwok_components(ctx, lab: Lab) -> dict[str, int | None]:
    """Each process kwokctl runs for the cluster (etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler, kwok-controller) -> its pid while it runs, else None."""
    names = ctx.sh.run(["kwokctl", "get", "components", "--name", lab.cluster]).stdout.split()
    return {name: _component_pid(ctx.sh, lab, name) for name in names}


def _component_pid(sh, lab: Lab, name: str) -> int | None:
    try:
        pid = int((sh.read_text(kwok_dir(lab) / "pids" / f"{name}.pid") or "").strip())
    except ValueError:
        return None
    # an exited process not yet reaped counts as dead here, not for kwokctl; and the pid may have been
    # handed to another program since
    args = sh.proc_args(pid)
    if args is None:
        return None
    return None if args and args[0] and Path(args[0]).name != name else pid


def _component_log(sh, lab: Lab, name: str) -> str:
    """The last line of a component's log, which says why it exited."""
    text = sh.read_text(kwok_dir(lab) / "logs" / f"{name}.log")
    if text is None:
        return "no log"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "an empty log"


def _kwokctl_kubeconfig(ctx, lab: Lab) -> Path:
    """kwokctl's own kubeconfig, as the client here reads it (the user's may not have the context yet); on a
    host, a copy whose API server comes through kindlab's SSH tunnel."""
    path = kwok_dir(lab) / "kubeconfig.yaml"
    if not lab.host:
        return Path(path)
    from ..core import kubeconfig

    entries = kubeconfig.through_tunnel(lab, ctx.sh, kubeconfig.context_entries(ctx.sh.read_text(path) or "",
                                                                                 lab.host_context))
    here = lab.home / "tunnels" / f"{lab.context.replace(':', '_')}.yaml"
    here.parent.mkdir(parents=True, exist_ok=True)
    here.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **entries}))
    here.chmod(0o600)
    return here


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
            ctx.sh.run(["kubectl", "--kubeconfig", kwok_dir(lab) / "kubeconfig.yaml",
                        "get", "--raw", "/readyz"], timeout=10)
        except CommandError:
            return change(f"restart kwok cluster {lab.cluster} (its API server is not ready)")
        return ok("control plane running")

    def start(ctx):
        stopped = dead(ctx)
        for name in stopped:  # kwokctl skips a component whose pid file names a live (or unreaped) pid
            ctx.sh.remove(kwok_dir(lab) / "pids" / f"{name}.pid")
        restarted["at"] = time.time()
        # kwokctl would wait two minutes for an API server that exits at once; the wait below says why
        ctx.sh.run(["kwokctl", "start", "cluster", "--name", lab.cluster, "--timeout", "20s"])
        ctx.reset_kube()
        return f"restarted {', '.join(stopped) or 'the control plane'} of kwok cluster {lab.cluster}"

    def wait(ctx):
        from ..core.kube import LEADERS, Kube, Verdict  # the kubernetes client is slow to import; only plays need it

        since = restarted.get("at")
        # kwokctl's own kubeconfig: the user's may not have the context yet
        kube = Kube(_kwokctl_kubeconfig(ctx, lab), lab.context, fix="`invoke cluster.create` restarts it")

        def evaluate() -> Verdict:
            stopped = dead(ctx)
            if stopped:  # it exited at once: a port another program took, a bad flag; its log says
                return Verdict(False, f"{', '.join(stopped)} exited", failure=(
                    "; ".join(f"{name} of kwok cluster {lab.cluster} exited after starting; its log ends: "
                              f"{_component_log(ctx.sh, lab, name)}" for name in stopped)
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

        return kube.wait_for(f"control plane of {lab.cluster}", evaluate, [],
                             say=ctx.say, recheck=0.5)

    return Step(f"kwok control plane of {lab.cluster} running", check, start, wait=wait)


def kwok_create_steps(lab: Lab) -> list[Step]:
    bin_dir = lab.machine.bin_dir

    def create(ctx):
        missing = [name for name in KWOK_BINARIES.values() if not ctx.sh.exists(bin_dir / name)]
        if missing or ctx.sh.which("kwokctl") is None or ctx.sh.which("kubectl") is None:
            on = f" on {lab.host} (`invoke setup --host {lab.host}`)" if lab.host else ""
            raise StepFailed(f"the kwok testbed needs {', '.join(missing or ['kwokctl', 'kubectl'])} "
                             f"in {bin_dir}{on}: run `invoke tools.install --testbed`")
        config_path = rendered(ctx, lab, render_kwok_config(lab))
        argv = ["kwokctl", "create", "cluster", "--name", lab.cluster, "--runtime", "binary",
                "--config", config_path, "--kubeconfig", own_kubeconfig(lab), "--wait", "60s"]
        for flag, name in KWOK_BINARIES.items():
            argv += [flag, ctx.sh.far(bin_dir / name)]
        try:
            ctx.sh.run(argv)
        except CommandError:
            # A half-made cluster would make the next run think all is well.
            ctx.sh.run(["kwokctl", "delete", "cluster", "--name", lab.cluster,
                        "--kubeconfig", str(own_kubeconfig(lab))], check=False, timeout=120)
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
                    "--param", f'.allocatable.pods="{lab.kwok.pods}"'])

    def read_kubeconfig(ctx):
        return ctx.sh.read_text(kwok_dir(lab) / "kubeconfig.yaml") or ""

    return [
        Step(f"kwok cluster {lab.cluster}", exists_check(lab, "kwokctl"), create),
        kwok_control_plane_step(lab),
        context_step(lab, read_kubeconfig, require=lambda ctx: _require_cluster(ctx, lab)),
        Step(f"simulated nodes of {lab.cluster}", check_nodes, scale),
        nodes_ready_step(lab, want=lab.kwok.nodes, system_pods=False),
        kwok_operators_step(lab),
    ]


def kwok_operators_stopped_step(lab: Lab) -> Step:
    def check(ctx):
        running = [d.name for d in kwok_operators(lab, ctx.sh) if daemons_.running_pid(d, ctx.sh) is not None]
        return change(f"stop {', '.join(running)}") if running else ok("no operator running")

    def apply(ctx):
        for daemon in kwok_operators(lab, ctx.sh):
            daemons_.stop(daemon, ctx.sh)

    return Step(f"operators of {lab.cluster} stopped", check, apply)


__all__ = ["KwokProvider", "kwok_dir", "kwok_operators", "OPERATOR_CRDS"]
