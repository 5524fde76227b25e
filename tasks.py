"""kindlab: a local Kubernetes lab in one command. `invoke --list` is the menu.

This file only builds the namespaces: each task reads its flags into a Lab and
hands the steps of one play (playbooks/<part>.py) to the runner.
"""
from invoke import Collection, task

from playbooks import cluster as cluster_play
from playbooks import doctor as doctor_play
from playbooks import nginx as nginx_play
from playbooks import tools as tools_play
from playbooks.core.cli import COMMON_HELP, console, lab_for, make_context, play
from playbooks.core.settings import forget_lab, parse_count, remember_lab

PLAY_FLAGS = "provider name context check verbose host timeout"


def h(names=PLAY_FLAGS, **extra):
    """Help text for the named common flags, plus a task's own."""
    return {**{n: COMMON_HELP[n] for n in names.split()}, **extra}


# --- cluster ---------------------------------------------------------------
@task(help=h())
def cluster_create(c, provider=None, name=None, context=None, check=False, verbose=False, host=None,
                   timeout=None):
    """Create the lab's cluster (kind; kwok simulates one) and wait for Ready nodes."""
    lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                  host=host, timeout=timeout)
    play(lab, "cluster.create", cluster_play.create_steps(lab), after=remember_lab)


@task(help=h())
def cluster_delete(c, provider=None, name=None, context=None, check=False, verbose=False, host=None,
                   timeout=None):
    """Delete the lab's cluster and its kubeconfig context (absent is fine)."""
    lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                  host=host, timeout=timeout)
    play(lab, "cluster.delete", cluster_play.delete_steps(lab), after=forget_lab)


@task(help=h("provider name context verbose host"))
def cluster_status(c, provider=None, name=None, context=None, verbose=False, host=None):
    """Show the cluster: provider, context, server version, nodes, port mappings."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host)
    kube = make_context(lab).kube
    for what, state in cluster_play.status_rows(lab, kube):
        console.print(f"  [bold]{what:<16}[/bold] {state}")


# --- nginx -----------------------------------------------------------------
@task(help=h())
def nginx_deploy(c, provider=None, name=None, context=None, check=False, verbose=False, host=None,
                 timeout=None):
    """Apply the nginx Deployment and NodePort Service and wait for the rollout."""
    lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                  host=host, timeout=timeout)
    play(lab, "nginx.deploy", nginx_play.deploy_steps(lab))


@task(help=h(replicas="how many nginx pods (default 3)"))
def nginx_scale(c, replicas=None, provider=None, name=None, context=None, check=False, verbose=False,
                host=None, timeout=None):
    """Scale nginx to --replicas (default 3) and wait until that many pods are Ready."""
    lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                  host=host, timeout=timeout)
    count = lab.replicas if replicas is None else _count(replicas, "--replicas")
    play(lab, "nginx.scale", nginx_play.scale_steps(lab, count))


@task(help=h("provider name context verbose host timeout"))
def nginx_verify(c, provider=None, name=None, context=None, verbose=False, host=None, timeout=None):
    """Check nginx answers at http://127.0.0.1:30080 (on kwok: its ready endpoints)."""
    lab = lab_for(c, provider=provider, name=name, context=context, verbose=verbose, host=host,
                  timeout=timeout)
    play(lab, "nginx.verify", nginx_play.verify_steps(lab))


@task(help=h())
def nginx_delete(c, provider=None, name=None, context=None, check=False, verbose=False, host=None,
                 timeout=None):
    """Delete the nginx Deployment and Service (absent is fine)."""
    lab = lab_for(c, provider=provider, name=name, context=context, check=check, verbose=verbose,
                  host=host, timeout=timeout)
    play(lab, "nginx.delete", nginx_play.delete_steps(lab))


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
    from invoke.exceptions import Exit
    from playbooks.core.settings import SettingsError
    try:
        return parse_count(value, flag)
    except SettingsError as exc:
        raise Exit(f"error: {exc}", code=2) from None


def _namespace(name, **tasks):
    ns = Collection(name)
    for task_name, fn in tasks.items():
        ns.add_task(fn, name=task_name)
    return ns


ns = Collection()
ns.add_collection(_namespace("cluster", create=cluster_create, delete=cluster_delete, status=cluster_status))
ns.add_collection(_namespace("nginx", deploy=nginx_deploy, scale=nginx_scale, verify=nginx_verify,
                             delete=nginx_delete))
ns.add_collection(_namespace("tools", install=tools_install, list=tools_list))
ns.add_task(doctor)
