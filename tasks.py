"""kindlab: a local Kubernetes lab in one command. `invoke --list` is the menu.

This file only builds the namespaces. Every part in the registry
(playbooks/parts.py) gets `PART.install` and `PART.uninstall` (nginx:
deploy/delete) from its record, plus the tasks of its own listed under
PART_TASKS below. Each task reads its flags into a Lab and hands the steps of
a play to the runner; user errors end with one `error:` line (cli.user_errors).
"""
import os
import sys
from pathlib import Path

from invoke import Collection, task

from playbooks.core.settings import SettingsError, check_config_files
from playbooks import parts as parts_play


def _config_files() -> list[Path]:
    """The files Invoke reads after importing this one: the project's and a runtime `-f FILE`."""
    here = Path(__file__).resolve().parent
    files = [here / "invoke.yaml"]
    args = sys.argv[1:]
    for i, arg in enumerate(args):
        if arg in ("-f", "--config") and i + 1 < len(args):
            files.append(Path(args[i + 1]))
        elif arg.startswith("--config="):
            files.append(Path(arg.split("=", 1)[1]))
    if os.environ.get("INVOKE_RUNTIME_CONFIG"):
        files.append(Path(os.environ["INVOKE_RUNTIME_CONFIG"]))
    return files


try:  # before Invoke reads them: a bad file is one line and exit 2, not Invoke's traceback
    check_config_files(_config_files(), parts_play.SCHEMA)
except SettingsError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)

from playbooks import browser as browser_play  # noqa: E402 (after the configuration check)
from playbooks import cluster as cluster_play  # noqa: E402
from playbooks import compare as compare_play  # noqa: E402
from playbooks import doctor as doctor_play  # noqa: E402
from playbooks import engine as engine_play  # noqa: E402
from playbooks import faas as faas_play  # noqa: E402
from playbooks import images as images_play  # noqa: E402
from playbooks import lab as lab_play  # noqa: E402
from playbooks import monitoring as monitoring_play  # noqa: E402
from playbooks import nginx as nginx_play  # noqa: E402
from playbooks import ray as ray_play  # noqa: E402
from playbooks import tools as tools_play  # noqa: E402
from playbooks import setup as setup_play  # noqa: E402
from playbooks.core import cli  # noqa: E402
from playbooks.core.cli import COMMON_HELP, console, make_context, play, user_errors  # noqa: E402
from playbooks.core.settings import defaults, forget_lab, parse_count, remember_lab  # noqa: E402
from playbooks.core.steps import StepFailed  # noqa: E402

PLAY_FLAGS = "provider name context check verbose timeout offline host"
PARTS = list(parts_play.REGISTRY.values())  # every part the lab may run


def lab_for(c, **flags):
    """The Lab from Invoke's configuration (kindlab's settings and the parts') and the task's flags."""
    return cli.lab_for(c, schema=parts_play.SCHEMA, **flags)


def h(names=PLAY_FLAGS, **extra):
    """Help text for the named common flags, plus a task's own."""
    return {**{n: COMMON_HELP[n] for n in names.split()}, **extra}


def creating(lab):
    """The lab a task that makes the cluster works on: offline where no container registry answers (asked
    where the lab runs)."""
    from playbooks.core.cli import make_shell
    sh = make_shell(lab)
    try:
        return cluster_play.offline_without_registry(lab, sh, console.print)
    finally:
        sh.close()


def play_task(title, steps, doc, after=None, checkable=True, creates=False):
    """A task that runs one play with the common flags; `doc` is its help line.

    checkable=False for plays that only verify: they have nothing to dry-run.
    creates: it makes the cluster (it first finds out whether a container registry answers).
    """
    @user_errors
    def run(c, provider=None, name=None, context=None, check=False, verbose=False, timeout=None, offline=False,
            host=None):
        lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                      timeout=timeout, offline=offline, host=host)
        if creates:
            lab = creating(lab)
        play(lab, title, steps(lab), after=after)

    @user_errors
    def run_read_only(c, provider=None, name=None, context=None, verbose=False, timeout=None, offline=False,
                      host=None):
        run(c, provider, name, context, False, verbose, timeout, offline, host)

    body = run if checkable else run_read_only
    body.__doc__ = doc
    body.__name__ = title.replace(".", "_")
    return task(body, help=h() if checkable else h("provider name context verbose timeout offline host"))


# --- cluster: its provider's (playbooks/cluster.py -> playbooks/providers/) ---------------
cluster_create = play_task(
    "cluster.create", lambda lab: cluster_play.create_steps(lab, PARTS),
    "Create the lab's cluster (kind; kwok simulates one) and wait for Ready nodes.",
    after=remember_lab, creates=True)
cluster_delete = play_task(
    "cluster.delete", cluster_play.delete_steps,
    "Delete the lab's cluster, its kubeconfig context and kindlab's files for it (absent is fine).",
    after=forget_lab)


@task(help=h("provider name context verbose host"))
@user_errors
def cluster_status(c, provider=None, name=None, context=None, verbose=False, host=None):
    """Show the cluster: provider, context, server version, nodes, port mappings."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host)
    ctx = make_context(lab)
    try:
        for what, state in cluster_play.status_rows(lab, ctx.kube, PARTS, ctx.sh):
            console.print(f"  [bold]{what:<16}[/bold] {state}")
    finally:
        ctx.sh.close()


# --- the parts' own tasks (install and uninstall come from the registry) ------
@task(help=h(replicas=f"how many nginx pods (default kindlab.nginx.replicas, 3; at most {nginx_play.MAX_REPLICAS})"))
@user_errors
def nginx_scale(c, replicas=None, provider=None, name=None, context=None, check=False, verbose=False,
                timeout=None, offline=False, host=None):
    """Scale nginx to --replicas (default 3) and wait until that many pods are Ready."""
    lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                  timeout=timeout, offline=offline, host=host)
    count = nginx_play.replicas(lab) if replicas is None else parse_count(replicas, "--replicas",
                                                                           nginx_play.MAX_REPLICAS)
    play(lab, "nginx.scale", nginx_play.scale_steps(lab, count))


nginx_verify = play_task(
    "nginx.verify", nginx_play.verify_steps,
    "Check nginx answers at http://127.0.0.1:30080 (on kwok: its ready endpoints).",
    checkable=False)


@task(help=h("provider name context verbose host"))
@user_errors
def monitoring_dashboards(c, provider=None, name=None, context=None, verbose=False, host=None):
    """Forward Grafana to http://127.0.0.1:3000 and Prometheus (its web UI) to :9090 until Ctrl-C; print graph links."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host)
    # soft_wrap: the graph links stay whole lines (rich would break them at the console's width)
    monitoring_play.dashboards(lab, out=lambda line: console.print(line, soft_wrap=True))


@task(help=h("provider name context host"))
@user_errors
def monitoring_password(c, provider=None, name=None, context=None, host=None):
    """Print Grafana's admin password (user admin), read from Secret monitoring/grafana-admin."""
    lab = lab_for(c, provider=provider, name=name, context=context, host=host)
    ctx = make_context(lab)  # on a host, the client here through the SSH tunnel
    try:
        print(monitoring_play.password(lab, ctx.kube))
    finally:
        ctx.sh.close()


monitoring_verify = play_task(
    "monitoring.verify", monitoring_play.verify_steps,
    "Check every Prometheus target is up and Grafana is healthy (on kwok: the services' endpoints).",
    checkable=False)
faas_login = play_task(
    "faas.login", faas_play.login_steps,
    "Log faas-cli in to the gateway (the password goes through stdin, never printed).")
faas_deploy = play_task(
    "faas.deploy", faas_play.deploy_steps,
    "Build, push and deploy the reverse function (skipped when its code is unchanged).")
faas_remove = play_task(
    "faas.remove", faas_play.remove_steps,
    "Remove the reverse function (absent is fine).")


@task(help=h("provider name context verbose timeout host", data="text to send (default: Hello World)"))
@user_errors
def faas_invoke(c, data="Hello World", provider=None, name=None, context=None, verbose=False, timeout=None,
                host=None):
    """Call the reverse function: --data "Hello World" prints dlroW olleH."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, timeout=timeout, host=host)
    play(lab, "faas.invoke", faas_play.invoke_steps(lab, data))


_ONLINE, _OFFLINE = ray_play.ONLINE_CRAWL, ray_play.OFFLINE_CRAWL


@task(iterable=["url"], help=h("provider name context verbose timeout host",
                               url="start URL (repeat for several; default the Ray docs, offline Python's docs, "
                                   "which the ray part serves in the cluster)",
                               prefix="only follow links under this URL prefix (default: each start URL's folder)",
                               depth=f"link hops to follow from a start URL (default {_ONLINE.depth}, at most 10)",
                               max_pages=f"stop after this many pages (default {_ONLINE.max_pages}, offline "
                                         f"{_OFFLINE.max_pages}; at most 1000000)",
                               concurrency=f"parallel fetches (default {_ONLINE.concurrency}, offline "
                                           f"{_OFFLINE.concurrency}; at most 256)",
                               address="a Ray dashboard / Jobs API address instead of the lab's "
                                       "(e.g. http://127.0.0.1:8265 from `ray start --head`)",
                               verbose="stream the tools' output, and say where the crawl job's seconds went"))
@user_errors
def ray_crawl(c, url=None, prefix="", depth=None, max_pages=None, concurrency=None, address="",
              provider=None, name=None, context=None, verbose=False, timeout=None, host=None):
    """Run the web crawler as a Ray job (Jobs API, its own runtime env) and print a summary."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, timeout=timeout, host=host)
    target = ray_play.default_crawl(lab)

    def given(value, default):
        return default if value is None else value

    args = ray_play.crawl_args(url or list(target.urls), prefix, parse_count(given(depth, target.depth), "--depth", 10),
                               parse_count(given(max_pages, target.max_pages), "--max-pages", 1_000_000),
                               parse_count(given(concurrency, target.concurrency), "--concurrency", 256))
    play(lab, "ray.crawl", ray_play.crawl_steps(lab, args, address, show=console.print), lock=not address)


@task(help=h("provider name context verbose host"))
@user_errors
def ray_dashboard(c, provider=None, name=None, context=None, verbose=False, host=None):
    """Forward the Ray dashboard and Jobs API to http://127.0.0.1:8265 until Ctrl-C."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host)
    ray_play.dashboard(lab, out=console.print)


PART_TASKS = {  # part -> its own tasks, beside the install and uninstall every part has
    "nginx": {"scale": nginx_scale, "verify": nginx_verify},
    "monitoring": {"dashboards": monitoring_dashboards, "password": monitoring_password,
                   "verify": monitoring_verify},
    "faas": {"login": faas_login, "deploy": faas_deploy, "invoke": faas_invoke, "remove": faas_remove},
    "ray": {"crawl": ray_crawl, "dashboard": ray_dashboard},
}


# --- the whole lab -------------------------------------------------------------
PARTS_HELP = {"only": f"comma-separated parts: {', '.join(parts_play.REGISTRY)} (default: all)",
              "skip": "comma-separated parts to leave out"}


@task(name="all", help=h(**PARTS_HELP))
@user_errors
def all_(c, only="", skip="", provider=None, name=None, context=None, check=False, verbose=False, timeout=None,
         offline=False, host=None):
    """The whole lab: the cluster, then every part side by side, each used once installed (nginx x3, ...)."""
    lab = creating(lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                           timeout=timeout, offline=offline, host=host))
    parts = parts_play.choose(only, skip)
    outcomes = play(lab, "all", lab_play.all_steps(lab, parts, PARTS), after=remember_lab)
    console.print(lab_play.addresses_table(lab, lab_play.parts_that_ran(parts, outcomes)))


@task(help=h("provider name context verbose host"))
@user_errors
def status(c, provider=None, name=None, context=None, verbose=False, host=None):
    """One table for the lab: nodes, releases, Ready pods, endpoints, the function, the Ray cluster."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host)
    ctx = make_context(lab)
    try:
        console.print(lab_play.status_table(lab, ctx.kube, ctx.sh, PARTS))
    finally:
        ctx.sh.close()


@task(help=h("provider name context verbose host"))
@user_errors
def forward(c, provider=None, name=None, context=None, verbose=False, host=None):
    """A lab on --host brought here until Ctrl-C: its API server (your kubeconfig's context) and node ports."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host)
    lab_play.forward(lab, PARTS, console.print)


@task(help=h(cluster="delete the whole cluster instead of removing the parts", **PARTS_HELP))
@user_errors
def down(c, cluster=False, only="", skip="", provider=None, name=None, context=None, check=False, verbose=False,
         timeout=None, offline=False, host=None):
    """Tear the lab down, the install order reversed (--cluster: delete the cluster); absent parts are fine."""
    lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                  timeout=timeout, offline=offline, host=host)
    parts = parts_play.choose(only, skip)
    play(lab, "down", lab_play.down_steps(lab, parts, cluster), after=forget_lab if cluster else None)


@task(help=h("provider name context verbose host", calls="warm calls per system (default 20, 1 to 10000)",
             batch=f"calls in the batch of each system, {compare_play.IN_FLIGHT} in flight "
                   f"(default {compare_play.BATCH}; 0: none)",
             gateway="OpenFaaS gateway URL (default: the lab's function, http://127.0.0.1:31112)",
             address="Ray dashboard URL (default: the lab's head, port-forwarded)"))
@user_errors
def compare(c, calls="20", batch=str(compare_play.BATCH), gateway="", address="", provider=None, name=None,
            context=None, verbose=False, host=None):
    """Measure the reverse function beside a Ray task in this lab: first call, warm calls, a batch."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host)
    n = parse_count(calls, "--calls", 10_000)
    if n < 1:
        raise SettingsError("--calls must be at least 1: a median of no calls means nothing")
    if not lab.can.runs_containers and not (gateway and address):
        raise SettingsError("a simulated (kwok) cluster runs no containers, so there is nothing to time; "
                            "use the kind lab, or pass --gateway and --address of running systems")
    rows = compare_play.measure(lab, make_context(lab), n, gateway, address,
                                batch=parse_count(batch, "--batch", 1_000_000))
    console.print(compare_play.table(lab, rows))


# --- the Docker engine and the images ----------------------------------------
@task(help=h("check verbose"))
@user_errors
def docker_start(c, check=False, verbose=False):
    """Make a Docker engine answer: where none runs (root, apt-get), install docker.io and start dockerd."""
    lab = lab_for(c, check=check, verbose=verbose)
    play(lab, "docker.start", engine_play.start_steps(lab), lock=False)


@task(help={"only": "comma-separated images (default: " + ", ".join(images_play.user_images()) + ")",
            **h("check verbose")})
@user_errors
def images_build(c, only="", check=False, verbose=False):
    """Build the offline lab's images from Debian packages and Go modules (only those whose inputs changed)."""
    lab = lab_for(c, check=check, verbose=verbose)
    play(lab, "images.build", images_play.build_steps(lab, images_play.chosen(only)), lock=False)


@task(help={"all": "also the images that go into others (the node's control-plane images, Debian's base)"})
@user_errors
def images_list(c, all=False):
    """List the images kindlab builds, their references and whether they are built and up to date."""
    from playbooks.core.commands import LocalShell
    lab = lab_for(c)
    console.print(images_play.table(LocalShell(lab.tools_dir), everything=all))


@task(help={"source": "release (download, checksum checked), go (build from Go modules) or auto",
            **h("verbose host")})
@user_errors
def setup(c, source="auto", verbose=False, host=None):
    """The tests' tools, a Docker engine and Chromium (root: installed) and the offline lab's images
    (--host: that host's, sent from this machine where it has them)."""
    lab = lab_for(c, verbose=verbose, host=host)
    if lab.host:
        play(lab, "setup", setup_play.host_steps(lab, source), lock=False)
        return
    tools = tools_play.install_steps(lab, tools_play.selected(True, False, ""), source, optional=True)
    # Where no engine can be had (no root, no apt-get), the engine and the images are
    # skipped with the reason, and the tests that need them skip too (CI fails them).
    engine = engine_play.start_steps(lab, optional=True)
    # The engine starts beside the tools' Go builds; the images' Go builds wait for those.
    builds = images_play.build_steps(lab, images_play.user_images(), after=engine[-1].name,
                                     go_after=tools[-1].name, optional=True)
    # after the engine's apt-get (one at a time); skipped with the reason where it cannot be installed
    browser = browser_play.install_step()
    play(lab, "setup", [*tools, *lab_play.chain(engine, ()), browser, *builds,
                        *setup_play.sshd_steps(after=browser.name)], lock=False)


# --- tools and doctor ------------------------------------------------------
@task(help={"testbed": "the simulated-cluster testbed and the tools the tests use "
                        "(kind, kubectl, helm, faas-cli, kwok, kwokctl, etcd, kube-apiserver, the operators...)",
            "all": "every tool: the lab's and the testbed's",
            "source": "release (download, checksum checked), go (build from Go modules; where the module proxy "
                      "refuses one, from its source archive in kindlab.sources), archive, or auto: release, "
                      "or Go where the releases cannot be reached",
            "only": "comma-separated tool names to install",
            **h("check verbose")})
@user_errors
def tools_install(c, testbed=False, all=False, source="auto", only="", check=False, verbose=False):
    """Install pinned kind, kubectl, helm, faas-cli (--testbed: the test cluster) into kindlab's cache."""
    lab = lab_for(c, check=check, verbose=verbose)
    names = tools_play.selected(testbed, all, only)
    play(lab, "tools.install", tools_play.install_steps(lab, names, source), lock=False)


@task
@user_errors
def tools_list(c):
    """List the pinned tools, their versions and what is installed."""
    console.print(tools_play.table(lab_for(c)))


@task(help=h("provider offline host", parts=f"comma-separated parts to check for (default: all of "
                                            f"{', '.join(parts_play.REGISTRY)}; the cluster always)"))
@user_errors
def doctor(c, provider=None, parts="", offline=False, host=None):
    """Preflight: tools, Docker, free ports, memory and CPU, inotify limits; a fix for each."""
    from playbooks.core.cli import make_shell

    lab = lab_for(c, provider=provider, offline=offline, host=host)
    sh = make_shell(lab)
    try:
        results = doctor_play.findings(lab, parts_play.choose(parts), PARTS, sh)
    finally:
        sh.close()
    console.print(doctor_play.table(lab, results))
    failed = [f for f in results if f.status == "fail"]
    if failed:
        raise StepFailed(f"doctor: {len(failed)} blocking problem(s): " +
                         "; ".join(f"{f.check}: {f.fix}" for f in failed))
    console.print("[green]doctor: ready[/green]")


# --- the namespaces --------------------------------------------------------
def _namespace(name, **tasks):
    ns = Collection(name)
    for task_name, fn in tasks.items():
        ns.add_task(fn, name=task_name)
    return ns


def _part_namespace(part):
    """`PART.install` / `PART.uninstall` from the part's record, then its own tasks."""
    install, uninstall = part.task_names
    return _namespace(part.name, **{
        install: play_task(f"{part.name}.{install}", lambda lab: part.install(lab, PARTS), part.help[0]),
        uninstall: play_task(f"{part.name}.{uninstall}", lambda lab: part.uninstall(lab, PARTS), part.help[1]),
        **PART_TASKS.get(part.name, {})})


ns = Collection()
ns.configure({"kindlab": defaults(parts_play.SCHEMA)})  # every default, once: SCHEMA and the parts' own
ns.add_collection(_namespace("cluster", create=cluster_create, delete=cluster_delete, status=cluster_status))
for _part in parts_play.REGISTRY.values():
    ns.add_collection(_part_namespace(_part))
ns.add_collection(_namespace("tools", install=tools_install, list=tools_list))
ns.add_collection(_namespace("docker", start=docker_start))
ns.add_collection(_namespace("images", build=images_build, list=images_list))
for top in (all_, status, down, compare, doctor, setup, forward):
    ns.add_task(top)
