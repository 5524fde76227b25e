"""kindlab: a local Kubernetes lab in one command. `invoke --list` is the menu.

This file only builds the namespaces: each task reads its flags into a Lab and
hands the steps of one play (playbooks/<part>.py) to the runner.
"""
from invoke import Collection, task

from invoke.exceptions import Exit

from playbooks import cluster as cluster_play
from playbooks import compare as compare_play
from playbooks import doctor as doctor_play
from playbooks import engine as engine_play
from playbooks import images as images_play
from playbooks import faas as faas_play
from playbooks import lab as lab_play
from playbooks.lab import chain
from playbooks import monitoring as monitoring_play
from playbooks import nginx as nginx_play
from playbooks import ray as ray_play
from playbooks import tools as tools_play
from playbooks.core.cli import COMMON_HELP, console, lab_for, make_context, play
from playbooks.core.settings import SettingsError, forget_lab, parse_count, remember_lab
from playbooks.core.steps import StepFailed

PLAY_FLAGS = "provider name context check verbose host timeout offline"


def h(names=PLAY_FLAGS, **extra):
    """Help text for the named common flags, plus a task's own."""
    return {**{n: COMMON_HELP[n] for n in names.split()}, **extra}


def play_task(title, steps, doc, after=None, checkable=True):
    """A task that runs one play with the common flags; `doc` is its help line.

    checkable=False for read-only plays (verify): they have nothing to dry-run.
    """
    def run(c, provider=None, name=None, context=None, check=False, verbose=False, host=None, timeout=None,
            offline=False):
        lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                      host=host, timeout=timeout, offline=offline)
        play(lab, title, steps(lab), after=after)

    def run_read_only(c, provider=None, name=None, context=None, verbose=False, host=None, timeout=None,
                      offline=False):
        run(c, provider, name, context, False, verbose, host, timeout, offline)

    body = run if checkable else run_read_only
    body.__doc__ = doc
    body.__name__ = title.replace(".", "_")
    return task(body, help=h() if checkable else h("provider name context verbose host timeout offline"))


# --- cluster ---------------------------------------------------------------
cluster_create = play_task(
    "cluster.create", cluster_play.create_steps,
    "Create the lab's cluster (kind; kwok simulates one) and wait for Ready nodes.",
    after=remember_lab)
cluster_delete = play_task(
    "cluster.delete", cluster_play.delete_steps,
    "Delete the lab's cluster and its kubeconfig context (absent is fine).",
    after=forget_lab)


@task(help=h("provider name context verbose host"))
def cluster_status(c, provider=None, name=None, context=None, verbose=False, host=None):
    """Show the cluster: provider, context, server version, nodes, port mappings."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host)
    kube = make_context(lab).kube
    for what, state in cluster_play.status_rows(lab, kube):
        console.print(f"  [bold]{what:<16}[/bold] {state}")


# --- nginx -----------------------------------------------------------------
nginx_deploy = play_task(
    "nginx.deploy", nginx_play.deploy_steps,
    "Apply the nginx Deployment and NodePort Service and wait for the rollout.")
nginx_delete = play_task(
    "nginx.delete", nginx_play.delete_steps,
    "Delete the nginx Deployment and Service (absent is fine).")


@task(help=h(replicas="how many nginx pods (default 3)"))
def nginx_scale(c, replicas=None, provider=None, name=None, context=None, check=False, verbose=False,
                host=None, timeout=None, offline=False):
    """Scale nginx to --replicas (default 3) and wait until that many pods are Ready."""
    lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                  host=host, timeout=timeout, offline=offline)
    count = lab.replicas if replicas is None else _count(replicas, "--replicas")
    play(lab, "nginx.scale", nginx_play.scale_steps(lab, count))


nginx_verify = play_task(
    "nginx.verify", nginx_play.verify_steps,
    "Check nginx answers at http://127.0.0.1:30080 (on kwok: its ready endpoints).",
    checkable=False)


# --- monitoring ------------------------------------------------------------
monitoring_install = play_task(
    "monitoring.install", monitoring_play.install_steps,
    "Install kube-prometheus-stack (Prometheus, Grafana) with Helm and wait until both serve.")
monitoring_uninstall = play_task(
    "monitoring.uninstall", monitoring_play.uninstall_steps,
    "Uninstall the monitoring release and delete its namespace (the CRDs stay).")


@task(help=h("provider name context verbose"))
def monitoring_dashboards(c, provider=None, name=None, context=None, verbose=False):
    """Forward Grafana to http://127.0.0.1:3000 and Prometheus to http://127.0.0.1:9090 until Ctrl-C."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose)
    _user_error(monitoring_play.dashboards, lab, out=console.print)


@task(help=h("provider name context"))
def monitoring_password(c, provider=None, name=None, context=None):
    """Print Grafana's admin password (user admin), read from Secret monitoring/grafana-admin."""
    lab = lab_for(c, provider=provider, name=name, context=context)
    print(_user_error(monitoring_play.password, lab))


monitoring_verify = play_task(
    "monitoring.verify", monitoring_play.verify_steps,
    "Check every Prometheus target is up and Grafana is healthy (on kwok: the services' endpoints).",
    checkable=False)


# --- faas --------------------------------------------------------------------
faas_install = play_task(
    "faas.install", faas_play.install_steps,
    "Install OpenFaaS with Helm (and, on kind, the local registry) and wait for the gateway.")
faas_login = play_task(
    "faas.login", faas_play.login_steps,
    "Log faas-cli in to the gateway (the password goes through stdin, never printed).")
faas_deploy = play_task(
    "faas.deploy", faas_play.deploy_steps,
    "Build, push and deploy the reverse function (skipped when its code is unchanged).")
faas_remove = play_task(
    "faas.remove", faas_play.remove_steps,
    "Remove the reverse function (absent is fine).")
faas_uninstall = play_task(
    "faas.uninstall", faas_play.uninstall_steps,
    "Remove the function, uninstall OpenFaaS and delete its namespaces.")


@task(help=h("provider name context verbose host timeout", data="text to send (default: Hello World)"))
def faas_invoke(c, data="Hello World", provider=None, name=None, context=None, verbose=False, host=None,
                timeout=None):
    """Call the reverse function: --data "Hello World" prints dlroW olleH."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host,
                  timeout=timeout)
    play(lab, "faas.invoke", faas_play.invoke_steps(lab, data))


# --- ray ---------------------------------------------------------------------
ray_install = play_task(
    "ray.install", ray_play.install_steps,
    "Install the KubeRay operator and a laptop-sized RayCluster; wait for its head and worker pods.")
ray_uninstall = play_task(
    "ray.uninstall", ray_play.uninstall_steps,
    "Uninstall the RayCluster and the KubeRay operator.")


@task(iterable=["url"], help=h("provider name context verbose timeout",
                               url="start URL (repeat for several; default the Ray docs)",
                               prefix="only follow links under this URL prefix (default: each start URL's folder)",
                               depth="link hops to follow from a start URL (default 2)",
                               max_pages="stop after this many pages (default 200)",
                               concurrency="parallel fetches (default 8)",
                               address="a Ray dashboard / Jobs API address instead of the lab's "
                                       "(e.g. http://127.0.0.1:8265 from `ray start --head`)"))
def ray_crawl(c, url=None, prefix="", depth="2", max_pages="200", concurrency="8", address="",
              provider=None, name=None, context=None, verbose=False, timeout=None):
    """Run the web crawler as a Ray job (Jobs API, its own runtime env) and print a summary."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, timeout=timeout)
    args = ray_play.crawl_args(url or lab_play.DEFAULT_CRAWL, prefix, _count(depth, "--depth"),
                               _count(max_pages, "--max-pages"), _count(concurrency, "--concurrency"))
    play(lab, "ray.crawl", ray_play.crawl_steps(lab, args, address, show=console.print), lock=not address)


@task(help=h("provider name context verbose"))
def ray_dashboard(c, provider=None, name=None, context=None, verbose=False):
    """Forward the Ray dashboard and Jobs API to http://127.0.0.1:8265 until Ctrl-C."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose)
    _user_error(ray_play.dashboard, lab, out=console.print)


# --- the whole lab -------------------------------------------------------------
PARTS_HELP = {"only": "comma-separated parts: nginx, monitoring, faas, ray (default: all)",
              "skip": "comma-separated parts to leave out"}


@task(name="all", help=h(**PARTS_HELP))
def all_(c, only="", skip="", provider=None, name=None, context=None, check=False, verbose=False, host=None,
         timeout=None, offline=False):
    """The whole lab: cluster, nginx x3, then monitoring, faas and ray side by side, function, crawl."""
    lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                  host=host, timeout=timeout, offline=offline)
    try:
        parts = lab_play.choose_parts(only, skip)
    except SettingsError as exc:
        raise Exit(f"error: {exc}", code=2) from None
    play(lab, "all", lab_play.all_steps(lab, parts), after=remember_lab)
    lab_play.print_addresses(lab, parts)


@task(help=h("provider name context verbose host"))
def status(c, provider=None, name=None, context=None, verbose=False, host=None):
    """One table for the lab: nodes, releases, Ready pods, endpoints, the function, the Ray cluster."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host)
    ctx = make_context(lab)
    console.print(_user_error(lambda: lab_play.status_table(lab, ctx.kube, ctx.sh)))


@task(help=h(cluster="delete the whole cluster instead of removing the parts one by one", **PARTS_HELP))
def down(c, cluster=False, only="", skip="", provider=None, name=None, context=None, check=False, verbose=False,
         host=None, timeout=None, offline=False):
    """Tear the lab down in reverse order (--cluster: delete the cluster); absent parts are fine."""
    lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                  host=host, timeout=timeout, offline=offline)
    try:
        parts = lab_play.choose_parts(only, skip)
    except SettingsError as exc:
        raise Exit(f"error: {exc}", code=2) from None
    play(lab, "down", lab_play.down_steps(lab, parts, cluster), after=forget_lab if cluster else None)


@task(help=h("provider name context verbose", calls="warm calls per system (default 20)",
             gateway="OpenFaaS gateway URL (default: the lab's, http://127.0.0.1:31112)",
             address="Ray dashboard URL (default: the lab's head, port-forwarded)"))
def compare(c, calls="20", gateway="", address="", provider=None, name=None, context=None, verbose=False):
    """Measure OpenFaaS function latency and Ray task latency in this lab, side by side."""
    from rich.table import Table
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose)
    if lab.provider == "kwok" and not (gateway and address):
        raise Exit("error: a simulated (kwok) cluster runs no containers, so there is nothing to time; "
                   "use the kind lab, or pass --gateway and --address of running systems", code=2)
    n = _count(calls, "--calls")
    ctx = make_context(lab)

    def measure():
        rows = [compare_play.faas_latency(gateway or faas_play.gateway_url(lab), n)]
        if address:
            rows.append(compare_play.ray_latency(address, n))
        else:
            from playbooks.core.portforward import forwarded
            with forwarded(ctx, ray_play.NAMESPACE, f"svc/{ray_play.HEAD_SERVICE}", ray_play.DASHBOARD_PORT) as url:
                rows.append(compare_play.ray_latency(url, n))
        return rows

    try:
        rows = _user_error(measure)
    finally:
        ctx.sh.close()
    table = Table(*compare_play.HEADERS, title=f"OpenFaaS vs Ray on {lab.context}", title_justify="left")
    for row in rows:
        table.add_row(*row.row())
    console.print(table)


# --- the Docker engine and the images ----------------------------------------
@task(help=h("check verbose"))
def docker_start(c, check=False, verbose=False):
    """Make a Docker engine answer: where none runs (root, apt-get), install docker.io and start dockerd."""
    lab = lab_for(c, check=check, verbose=verbose)
    play(lab, "docker.start", engine_play.start_steps(lab), lock=False)


def _image_names(only: str) -> list[str]:
    names = [n.strip() for n in only.split(",") if n.strip()] or images_play.user_images()
    unknown = [n for n in names if n not in images_play.CATALOG]
    if unknown:
        raise Exit(f"error: unknown image(s) {', '.join(unknown)}; kindlab builds "
                   f"{', '.join(images_play.CATALOG)}", code=2)
    return names


@task(help={"only": "comma-separated images (default: " + ", ".join(images_play.user_images()) + ")",
            **h("check verbose")})
def images_build(c, only="", check=False, verbose=False):
    """Build the offline lab's images from Debian packages and Go modules (only those whose inputs changed)."""
    lab = lab_for(c, check=check, verbose=verbose)
    play(lab, "images.build", images_play.build_steps(lab, _image_names(only)), lock=False)


@task(help={"all": "also the images that go into others (the node's control-plane images, Debian's base)"})
def images_list(c, all=False):
    """List the images kindlab builds, their references and whether they are built and up to date."""
    from playbooks.core.commands import LocalShell
    lab = lab_for(c)
    console.print(_user_error(lambda: images_play.table(LocalShell(lab.tools_dir), everything=all)))


@task(help={"source": "go (build from Go modules), release (download, SHA-256 checked) or auto",
            **h("verbose")})
def setup(c, source="auto", verbose=False):
    """The tests' tools, a Docker engine (root: installed and started) and the offline lab's images."""
    lab = lab_for(c, verbose=verbose)
    tools = tools_play.install_steps(lab, tools_play.selected(True, False, ""), source)
    # Where no engine can be had (no root, no apt-get), the engine and the images are
    # skipped with the reason, and the tests that need them skip too (CI fails them).
    engine = engine_play.start_steps(lab, optional=True)
    # The engine starts beside the tools' Go builds; the images' Go builds wait for those.
    builds = images_play.build_steps(lab, images_play.user_images(), after=engine[-1].name,
                                     go_after=tools[-1].name, optional=True)
    play(lab, "setup", [*tools, *chain(engine, None), *builds], lock=False)


# --- tools and doctor ------------------------------------------------------
@task(help={"testbed": "the simulated-cluster testbed and the tools the tests use "
                        "(kind, kubectl, helm, kwok, kwokctl, etcd, kube-apiserver, ...)",
            "all": "every tool: the lab's and the testbed's",
            "source": "go (build from Go modules), release (download, SHA-256 checked) or auto",
            "only": "comma-separated tool names to install",
            **h("check verbose")})
def tools_install(c, testbed=False, all=False, source="auto", only="", check=False, verbose=False):
    """Install pinned kind, kubectl, helm, faas-cli (--testbed: the test cluster) into kindlab's cache."""
    lab = lab_for(c, check=check, verbose=verbose)
    names = tools_play.selected(testbed, all, only)
    play(lab, "tools.install", tools_play.install_steps(lab, names, source), lock=False)


@task
def tools_list(c):
    """List the pinned tools, their versions and what is installed."""
    lab = lab_for(c)
    tools_play.print_table(lab)


@task(help=h("provider", parts="comma-separated parts to check for (default: all)"))
def doctor(c, provider=None, parts=""):
    """Preflight: tools, Docker, free ports, memory and CPU, inotify limits; a fix for each."""
    lab = lab_for(c, provider=provider)
    doctor_play.run(lab, parts)


def _count(value, flag):
    try:
        return parse_count(value, flag)
    except SettingsError as exc:
        raise Exit(f"error: {exc}", code=2) from None


def _user_error(fn, *args, **kwargs):
    """Run an interactive helper; a StepFailed is a one-line error and exit code 1."""
    try:
        return fn(*args, **kwargs)
    except StepFailed as exc:
        raise Exit(f"error: {exc}", code=1) from None


def _namespace(name, **tasks):
    ns = Collection(name)
    for task_name, fn in tasks.items():
        ns.add_task(fn, name=task_name)
    return ns


ns = Collection()
ns.add_collection(_namespace("cluster", create=cluster_create, delete=cluster_delete, status=cluster_status))
ns.add_collection(_namespace("nginx", deploy=nginx_deploy, scale=nginx_scale, verify=nginx_verify,
                             delete=nginx_delete))
ns.add_collection(_namespace("monitoring", install=monitoring_install, dashboards=monitoring_dashboards,
                             password=monitoring_password, verify=monitoring_verify,
                             uninstall=monitoring_uninstall))
ns.add_collection(_namespace("faas", install=faas_install, login=faas_login, deploy=faas_deploy,
                             invoke=faas_invoke, remove=faas_remove, uninstall=faas_uninstall))
ns.add_collection(_namespace("ray", install=ray_install, crawl=ray_crawl, dashboard=ray_dashboard,
                             uninstall=ray_uninstall))
ns.add_collection(_namespace("tools", install=tools_install, list=tools_list))
ns.add_collection(_namespace("docker", start=docker_start))
ns.add_collection(_namespace("images", build=images_build, list=images_list))
for top in (all_, status, down, compare, doctor, setup):
    ns.add_task(top)
