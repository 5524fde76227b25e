"""kind: real nodes as Docker containers.

Everything kindlab does with kind or with the nodes' containers is here: the
cluster's configuration (its host port mappings derived from the parts' node
ports), create and delete (a half-made cluster repaired, Ctrl-C cleaned up),
images loaded into the nodes (`kind load`, only where a node lacks them), the
local registry the function's image is pulled from (kind's documented
localhost:5001 set-up), and its preflight checks (Docker, privileged
containers, free host ports, inotify limits, kindlab's node image offline).
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import yaml

from .. import engine, images
from ..core import kyaml
from ..core.commands import CommandError, LocalShell
from ..core.deadline import Longer
from ..core.part import NodePort, Part
from ..core.resources import applied
from ..core.settings import Lab
from ..core.steps import MissingPrerequisite, Step, StepFailed, change, ok, skip
from .base import (LOCAL_REGISTRY, Finding, Provider, clusters, context_absent_step, context_step, files_absent_step,
                   nodes_ready_step, own_kubeconfig, rendered)

ROOT = Path(__file__).resolve().parents[2]
KIND_CONFIG = ROOT / "manifests" / "kind-cluster.yaml"
CLUSTER_IMAGES = ("node",)  # offline: kindlab's node image
KINDLAB_LABEL = "kindlab.dev/part"  # on containers kindlab runs beside kind's (the local registry)
REGISTRY = {"name": "kind-registry", "image": "registry:2.8.3",
            "host_port": int(LOCAL_REGISTRY.rpartition(":")[2])}  # on 127.0.0.1, the nodes' localhost:5001
# kind's known issue "too many open files": its documented minimums.
INOTIFY = {"max_user_watches": 524288, "max_user_instances": 512}
REGISTRY_PROBE_S = 5.0  # a registry that has not answered by then is not reached (a pull would hang far longer)
# kind pulls or starts node containers and runs kubeadm in each: longer than a wait on the cluster.
CREATE_BUDGET = Longer(2, "kind starts the node containers and runs kubeadm in each")


class KindProvider(Provider):
    tool = "kind"

    # --- the cluster -------------------------------------------------------------------
    def create_steps(self, parts: Sequence[Part]) -> list[Step]:
        lab = self.lab
        return [
            Step(f"kind cluster {lab.cluster}", self._check_exists, lambda ctx: self._recreate(ctx, parts),
                 budget=CREATE_BUDGET),
            Step(f"kind nodes of {lab.cluster} running", lambda ctx: self._check_running(ctx, parts),
                 self._start_nodes),
            context_step(lab, lambda ctx: ctx.sh.run(["kind", "get", "kubeconfig", "--name", lab.cluster]).stdout,
                         require=self._require_cluster),
            nodes_ready_step(lab, want=1 + lab.workers, system_pods=True),
        ]

    def delete_steps(self) -> list[Step]:
        lab = self.lab

        def check(ctx):
            if lab.cluster in clusters(ctx, "kind"):
                return change(f"delete kind cluster {lab.cluster}")
            return ok(f"no kind cluster {lab.cluster}")

        def delete(ctx):
            ctx.sh.run(["kind", "delete", "cluster", "--name", lab.cluster, "--kubeconfig", str(own_kubeconfig(lab))])
            ctx.reset_kube()

        return [Step(f"kind cluster {lab.cluster} absent", check, delete), context_absent_step(lab),
                files_absent_step(lab, [own_kubeconfig(lab)]), self._leftovers_step()]

    def nodes(self, ctx) -> list[str]:
        return sorted(self._node_states(ctx))

    def node_image(self) -> str:
        """kind's --image: the configured one, offline kindlab's own, else "" (kind's default)."""
        if self.lab.node_image:
            return self.lab.node_image
        return images.reference("node") if self.lab.offline else ""

    def port_mappings(self, parts: Sequence[Part]) -> list[dict]:
        """The cluster's own (port 80, for an ingress) and each part's node ports, on the lab's listen address."""
        lab = self.lab
        mappings = [{"containerPort": 80, "hostPort": lab.http_port, "what": "ingress (port 80)"}]
        mappings += [{"containerPort": port.node_port, "hostPort": part.host_port(lab, port.name),
                      "what": port.what or f"{part.name} NodePort"} for part in parts for port in part.node_ports]
        return [{**m, "listenAddress": lab.listen_address, "protocol": "TCP"} for m in mappings]

    @contextlib.contextmanager
    def reached(self, ctx, part: Part, port: NodePort, namespace: str, service: str,
                service_port: int) -> Iterator[str]:
        """The host port kind maps to the node port (what a user opens in a browser); on a host, that port
        forwarded here over SSH."""
        yield ctx.sh.reach(f"http://{self.lab.listen_address}:{part.host_port(self.lab, port.name)}")

    def render_config(self, parts: Sequence[Part]) -> dict:
        """The kind Cluster config: the port mappings under the control-plane node, the workers.

        With kindlab's node image, also what kubeadm must know about it: its
        control-plane images' names and tags, and kube-proxy in nftables mode.
        """
        config = kyaml.load(KIND_CONFIG.read_text())
        if images.is_kindlab_node(self.node_image()):
            config["kubeadmConfigPatches"] = images.kubeadm_patches()
            config.setdefault("networking", {})["kubeProxyMode"] = "nftables"
        control_plane = {"role": "control-plane",
                         "extraPortMappings": [{k: v for k, v in m.items() if k != "what"}
                                               for m in self.port_mappings(parts)]}
        config["nodes"] = [control_plane] + [{"role": "worker"} for _ in range(self.lab.workers)]
        return config

    def no_registry(self, sh) -> str | None:
        """Where the Docker engine pulls from (its index), asked once with a short timeout: why it does not
        answer, or None when it answers anything (even 401). No engine: None (create says so itself)."""
        info = engine.engine_info(sh)
        index = (info or {}).get("IndexServerAddress") or ""
        if not index:
            return None
        proxy = info.get("HTTPSProxy") or info.get("HTTPProxy") or ""  # the engine's own, if it has one
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": proxy, "http": proxy}
                                                                          if proxy else {}))
        try:
            with opener.open(index, timeout=REGISTRY_PROBE_S):
                return None
        except urllib.error.HTTPError:
            return None  # it answered
        except (urllib.error.URLError, OSError) as exc:
            return f"{index} does not answer ({getattr(exc, 'reason', exc)})"

    def offline_images_missing(self, sh) -> list[str]:
        if self.lab.node_image:
            return []
        return [name for name in CLUSTER_IMAGES if not images.current(sh, name)]

    # --- create, step by step -----------------------------------------------------------
    def _require_cluster(self, ctx) -> None:
        """For the checks after `cluster exists`: in a dry run before it exists, they cannot tell."""
        if self.lab.cluster not in clusters(ctx, "kind"):
            raise MissingPrerequisite(f"kind cluster {self.lab.cluster}")

    def _check_exists(self, ctx):
        lab = self.lab
        if lab.cluster not in clusters(ctx, "kind"):
            return change(f"create kind cluster {lab.cluster}")
        never_started = sorted(n for n, state in self._node_states(ctx).items() if state == "created")
        if never_started:  # what an interrupted `kind create` can leave behind
            return change(f"recreate kind cluster {lab.cluster}: it is half-made (node containers "
                          f"{', '.join(never_started)} were never started)")
        return ok(f"kind cluster {lab.cluster} exists")

    def _recreate(self, ctx, parts: Sequence[Part]):
        if self.lab.cluster in clusters(ctx, "kind"):
            self._remove_half_made(ctx)
        return self._create(ctx, parts)

    def _create(self, ctx, parts: Sequence[Part]):
        lab = self.lab
        image = self.node_image()
        if image and images.is_kindlab_node(image) and images.present_inputs(ctx.sh, image) is None:
            raise StepFailed(f"node image {image} is not built: run `invoke images.build --only node` "
                             "(or leave offline mode for kind's own image)")
        config = self.render_config(parts)
        busy = [f"{m['listenAddress']}:{m['hostPort']}" for m in config["nodes"][0]["extraPortMappings"]
                if not ctx.sh.port_free(m["hostPort"], m["listenAddress"])]
        if busy:
            on = f" on {lab.host}" if lab.host else ""
            raise StepFailed(f"host port {', '.join(busy)}{on} already in use: stop what listens there "
                             "or choose other ports in invoke.yaml (kindlab.ports)")
        path = rendered(ctx, lab, yaml.safe_dump(config, sort_keys=False))
        argv = ["kind", "create", "cluster", "--name", lab.cluster, "--config", path,
                "--kubeconfig", str(own_kubeconfig(lab)), "--wait", "0s"]
        try:
            ctx.sh.run(argv + (["--image", image] if image else []))
        except BaseException:
            # kind removes its nodes when it fails, not when it is interrupted (Ctrl-C) or
            # timed out: a half-made cluster would pass the next run's exists check and
            # leave it waiting for nodes that never turn Ready.
            self._remove_half_made(ctx)
            raise
        return f"created kind cluster {lab.cluster}" + (f" from {image}" if image else "")

    def _check_running(self, ctx, parts: Sequence[Part]):
        self._require_cluster(ctx)
        stopped = [n for n, state in self._node_states(ctx).items() if state != "running"]
        if stopped:
            return change(f"start stopped node containers {', '.join(sorted(stopped))}")
        wanted = {(m["listenAddress"], m["hostPort"], m["containerPort"]) for m in self.port_mappings(parts)}
        actual = self._mapped_ports(ctx)
        if not wanted <= actual:
            return ok(f"warning: the cluster maps {sorted(actual)} but the config wants {sorted(wanted)}; "
                      "port mappings are fixed when a kind cluster is created: "
                      "`invoke cluster.delete` then `invoke cluster.create` to apply them")
        image = self.node_image()
        running = self._node_images(ctx)
        if image and running and running != {image}:
            return ok(f"warning: the nodes run {', '.join(sorted(running))}, not {image}; a node image is "
                      "fixed when a kind cluster is created: `invoke cluster.delete` then `invoke cluster.create`")
        return ok("node containers running")

    def _start_nodes(self, ctx):
        stopped = sorted(n for n, state in self._node_states(ctx).items() if state != "running")
        ctx.sh.run(["docker", "start", *stopped])
        return f"started {', '.join(stopped)}"

    def _remove_half_made(self, ctx) -> None:
        """Delete an unfinished kind cluster, including node containers Docker creates a moment late.

        Ctrl-C ends whatever child runs at that moment, this clean-up's too, so each
        command runs again if a signal ended it; and a `docker run` that was under way
        when kind was interrupted can still leave its container behind just after.
        Its commands have their own timeouts: a clean-up outlives the step's time.
        """
        lab = self.lab
        for _ in range(3):
            deleted = ctx.sh.run(["kind", "delete", "cluster", "--name", lab.cluster,
                                  "--kubeconfig", str(own_kubeconfig(lab))], check=False, timeout=120)
            if deleted.returncode is not None and deleted.returncode >= 0:
                break
        quiet = 0
        for _ in range(20):
            late = list(self._node_states(ctx))
            if late:
                quiet = 0
                ctx.sh.run(["docker", "rm", "--force", "--volumes", *late], check=False, timeout=120)
            else:
                quiet += 1
                if quiet == 3:
                    return
            time.sleep(0.5)

    # --- reading the node containers --------------------------------------------------------
    def _node_states(self, ctx) -> dict[str, str]:
        """Node container name -> Docker state for the lab's kind cluster."""
        out = ctx.sh.run(["docker", "ps", "-a", "--filter", f"label=io.x-k8s.kind.cluster={self.lab.cluster}",
                          "--format", "{{.Names}}\t{{.State}}"], timeout=60).stdout
        return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)

    def _node_images(self, ctx) -> set[str]:
        """The images the lab's node containers were created from."""
        names = list(self._node_states(ctx))
        if not names:
            return set()
        out = ctx.sh.run(["docker", "inspect", "--format", "{{.Config.Image}}", *names]).stdout
        return {line.strip() for line in out.splitlines() if line.strip()}

    def _mapped_ports(self, ctx) -> set[tuple[str, int, int]]:
        """(listen address, host port, container port) of the control-plane node as it is."""
        out = ctx.sh.run(["docker", "inspect", "--format", "{{json .HostConfig.PortBindings}}",
                          f"{self.lab.cluster}-control-plane"]).stdout
        found = set()
        for container, bindings in (json.loads(out or "{}") or {}).items():
            port = int(container.split("/")[0])
            for b in bindings or []:
                if port != 6443:  # the API server mapping kind adds itself
                    found.add((b.get("HostIp") or "0.0.0.0", int(b["HostPort"]), port))
        return found

    # --- images and the registry the nodes pull from ------------------------------------------
    def images_steps(self, what: str, refs: Sequence[str]) -> list[Step]:
        """Images no registry serves here, loaded from the local engine into every node's containerd:
        offline every image, online only kindlab's own (the others are pulled)."""
        refs = [ref for ref in refs if self.lab.offline or ref.startswith(f"{images.REPOSITORY}/")]
        return [self._loaded_step(what, refs)] if refs else []

    def _loaded_step(self, what: str, refs: Sequence[str]) -> Step:
        lab = self.lab

        def local_ids(ctx) -> dict[str, str]:
            """Each image's ID in the local engine: one `docker image inspect` for all of them."""
            result = ctx.sh.run(["docker", "image", "inspect", "--format", "{{.Id}}", *refs], check=False)
            ids = result.stdout.split()
            if result.returncode == 0 and len(ids) == len(refs):
                return dict(zip(refs, ids))
            for ref in refs:  # one is missing: name it
                if ctx.sh.run(["docker", "image", "inspect", ref], check=False).returncode != 0:
                    build = (f"run `invoke images.build --only {ref.split('/', 1)[1].split(':')[0]}`"
                             if ref.startswith(f"{images.REPOSITORY}/") else f"pull or build it (`docker image ls {ref}`)")
                    raise StepFailed(f"image {ref} is not in the local Docker engine, so it cannot be loaded into the "
                                     f"kind nodes: {build}")
            raise StepFailed(f"`docker image inspect` of {', '.join(refs)} answered: {result.stderr.strip()}")

        def node_ids(ctx, node: str) -> dict[str, str]:
            """The images in a node's containerd, by every name they carry: one `crictl images` per node and
            run, shared by every part's step (ctx.shared) and asked again after a load into the node."""
            memo = ctx.shared.setdefault("node images", {})
            if node in memo:
                return memo[node]
            result = ctx.sh.run(["docker", "exec", node, "crictl", "images", "-o", "json"], check=False)
            if result.returncode != 0:
                return {}
            memo[node] = {tag: image.get("id") for image in json.loads(result.stdout or "{}").get("images") or []
                          for tag in image.get("repoTags") or []}
            return memo[node]

        def missing(ctx) -> dict[str, list[str]]:
            nodes = self.nodes(ctx)
            if not nodes:
                raise StepFailed(f"kind cluster {lab.cluster} has no nodes: run `invoke cluster.create`")
            wanted = local_ids(ctx)
            with ThreadPoolExecutor(len(nodes)) as pool:
                found = dict(zip(nodes, pool.map(lambda node: node_ids(ctx, node), nodes)))
            return {ref: [n for n in nodes if found[n].get(qualified(ref)) != wanted[ref]] for ref in refs}

        def check(ctx):
            todo = {ref: nodes for ref, nodes in missing(ctx).items() if nodes}
            if not todo:
                return ok(f"{', '.join(refs)} on every node")
            return change("; ".join(f"load {ref} into {', '.join(nodes)}" for ref, nodes in todo.items()))

        def load(ctx):
            for ref, nodes in missing(ctx).items():
                if nodes:
                    ctx.say(f"kind load docker-image {ref}")
                    ctx.sh.run(["kind", "load", "docker-image", ref, "--name", lab.cluster, "--nodes", ",".join(nodes)])
                    for node in nodes:  # what they hold has changed: read again when next asked
                        ctx.shared.get("node images", {}).pop(node, None)

        return Step(f"{what} image(s) in the kind nodes", check, load)

    def registry_image(self) -> str:
        """kindlab.images.registry, else offline the registry image kindlab built, else the pinned one."""
        return images.for_part(self.lab, "registry") or REGISTRY["image"]

    def registry_steps(self) -> list[Step]:
        """kind's documented local registry: a container on 127.0.0.1:5001, known to every node."""
        lab = self.lab
        name, port = REGISTRY["name"], REGISTRY["host_port"]
        hosts_dir = f"/etc/containerd/certs.d/localhost:{port}"
        hosts_toml = f'[host."http://{name}:5000"]\n'

        def check_running(ctx):
            out = ctx.sh.run(["docker", "inspect", "-f", "{{.State.Running}}", name], check=False)
            return ok(f"registry {name} running") if out.stdout.strip() == "true" else \
                change(f"run registry {name} on 127.0.0.1:{port}")

        def run_registry(ctx):
            if ctx.sh.run(["docker", "inspect", name], check=False).returncode == 0:
                ctx.sh.run(["docker", "start", name])
                return None
            image = self.registry_image()
            if lab.offline and images.present_inputs(ctx.sh, image) is None:
                raise StepFailed(f"registry image {image} is not in the local Docker engine: "
                                 "run `invoke images.build --only registry`")
            ctx.sh.run(["docker", "run", "-d", "--restart=always", "-p", f"127.0.0.1:{port}:5000",
                        "--label", f"{KINDLAB_LABEL}=faas", "--network", "bridge", "--name", name, image])
            return None

        def check_network(ctx):
            out = ctx.sh.run(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", name]).stdout
            return ok("on the kind network") if '"kind"' in out else change(f"connect {name} to the kind network")

        def check_nodes(ctx):
            missing = [n for n in self.nodes(ctx) if ctx.sh.run(
                ["docker", "exec", n, "cat", f"{hosts_dir}/hosts.toml"], check=False).stdout != hosts_toml]
            return change(f"point containerd on {', '.join(missing)} at the registry") if missing else \
                ok(f"every node knows localhost:{port}")

        def configure_nodes(ctx):
            for node in self.nodes(ctx):
                ctx.sh.run(["docker", "exec", node, "mkdir", "-p", hosts_dir])
                ctx.sh.run(["docker", "exec", "-i", node, "cp", "/dev/stdin", f"{hosts_dir}/hosts.toml"],
                           input=hosts_toml)

        hosting = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "local-registry-hosting", "namespace": "kube-public"},
                   "data": {"localRegistryHosting.v1": f'host: "localhost:{port}"\n'
                                                       'help: "https://kind.sigs.k8s.io/docs/user/local-registry/"\n'}}
        return [
            Step(f"registry {name} running", check_running, run_registry),
            Step(f"registry {name} on the kind network", check_network,
                 lambda ctx: ctx.sh.run(["docker", "network", "connect", "kind", name]) and None),
            Step("kind nodes use the local registry", check_nodes, configure_nodes),
            applied("local registry advertised (kube-public)", lab, lambda: [hosting]),
        ]

    # --- with the last cluster: kindlab's own containers and the kind network ---------------
    def _leftovers_step(self) -> Step:
        def leftovers(ctx) -> tuple[list[str], list[str], list[str]]:
            """(other kind clusters, kindlab's containers, other containers on the kind network or ["-"] if none)"""
            others = clusters(ctx, "kind")
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

    # --- what the machine needs ---------------------------------------------------------------
    def tools(self) -> tuple[str, ...]:
        return ("kind", "kubectl")

    def doctor(self, parts: Sequence[Part], sh=None) -> list[Finding]:
        """Docker, privileged containers, the host ports and inotify, where the lab's commands run (`sh`)."""
        sh = sh or LocalShell(self.lab.tools_dir)
        docker = self._docker(sh)
        found = [docker]
        if docker.status == "ok":
            problem = engine.privileged_problem(sh)
            found.append(Finding("docker --privileged", problem[0], problem[1], engine.CAPS_FIX) if problem else
                         Finding("docker --privileged", "ok", "privileged containers start"))
            if self.lab.offline:
                found += self._node_image_found(sh)
        return [*found, *self._ports(parts, sh), *self._inotify(sh)]

    def _docker(self, shell) -> Finding:
        if shell.which("docker") is None:
            return Finding("docker", "fail", "docker CLI not found", "install Docker (Desktop or Engine)")
        try:
            shell.run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20)
        except CommandError as exc:
            return Finding("docker", "fail", f"daemon not reachable: {exc.output.strip()[-160:]}",
                           "start Docker (Desktop: open it; Linux: `sudo systemctl start docker`), "
                           "or rehearse without it: --provider kwok")
        return Finding("docker", "ok", "daemon reachable")

    def _node_image_found(self, shell) -> list[Finding]:
        found = []
        for name in CLUSTER_IMAGES:
            built = images.current(shell, name)
            found.append(Finding(f"image {name}", "ok" if built else "fail",
                                 images.reference(name) + ("" if built else " not built"),
                                 "" if built else f"invoke images.build --only {name}"))
        return found

    def _ports(self, parts: Sequence[Part], shell) -> list[Finding]:
        found = []
        for m in self.port_mappings(parts):
            where = f"{m['listenAddress']}:{m['hostPort']}"
            if not shell.port_free(m["hostPort"], m["listenAddress"]):
                found.append(Finding(f"port {where}", "warn", f"in use (fine if it is this lab's cluster): {m['what']}",
                                     "stop what listens there, or change kindlab.ports in invoke.yaml"))
            else:
                found.append(Finding(f"port {where}", "ok", f"free: {m['what']}"))
        return found

    def _inotify(self, shell) -> list[Finding]:
        if not sys.platform.startswith("linux") and not shell.host:
            return []
        found = []
        for key, minimum in INOTIFY.items():
            try:
                value = int((shell.read_text(f"/proc/sys/fs/inotify/{key}") or "").strip())
            except ValueError:
                continue
            status = "ok" if value >= minimum else "fail"
            found.append(Finding(f"inotify {key}", status, f"{value} (kind wants >= {minimum})",
                                 "" if status == "ok" else f"sudo sysctl fs.inotify.{key}={minimum}"))
        return found

    def status_rows(self, kube, parts: Sequence[Part], sh=None) -> list[tuple[str, str]]:
        rows = super().status_rows(kube, parts, sh)
        for m in self.port_mappings(parts):
            rows.append(("port mapping", f"{m['listenAddress']}:{m['hostPort']} -> node:{m['containerPort']} "
                                         f"({m['what']})"))
        return rows


__all__ = ["KindProvider", "REGISTRY", "KINDLAB_LABEL"]


def qualified(ref: str) -> str:
    """An image reference as containerd names it: a name with no registry is Docker Hub's (`nginx:1` is
    `docker.io/library/nginx:1`)."""
    first, _, rest = ref.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return ref
    return f"docker.io/{ref}" if rest else f"docker.io/library/{ref}"
