"""The tools play: pinned kind, kubectl, helm, faas-cli (and the testbed) in kindlab's cache.

What to install and how lives in playbooks/toolchain.py; this module turns
each tool into an idempotent step (present at the pinned version -> ok).
"""
from __future__ import annotations

from rich.table import Table

from . import toolchain
from .core.settings import Lab, SettingsError
from .core.steps import Skipped, Step, StepFailed, change, ok


# What the test suite drives: the simulated cluster plus the lab tools it calls for
# real (faas-cli builds the function offline; only its gateway calls are faked).
TEST_TOOLS = ("kind", "kubectl", "helm", "faas-cli", *toolchain.TESTBED_TOOLS)


def selected(testbed: bool, everything: bool, only: str) -> list[str]:
    """The tools to install: the lab's (default), the testbed's, all, or a named few."""
    if everything:
        names = list(toolchain.TOOLS)
    elif testbed:
        names = list(TEST_TOOLS)
    else:
        names = list(toolchain.LAB_TOOLS)
    if only:
        wanted = [n.strip() for n in only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in toolchain.TOOLS]
        if unknown:
            raise SettingsError(f"unknown tool(s) {', '.join(unknown)}; kindlab installs "
                                f"{', '.join(toolchain.TOOLS)}")
        names = wanted
    return names


def install_here(lab, name: str, source: str, say, optional: bool) -> str:
    """Install tool `name` into this machine's cache; how it came. A missing source archive skips the
    step where the tool is optional; any other failure fails it."""
    try:
        return toolchain.install(name, lab.tools_dir, source=source, log=say, sources=lab.source_folders)
    except toolchain.ArchiveMissing as exc:
        if optional:
            raise Skipped(f"not installed: {exc}") from None
        raise StepFailed(str(exc)) from None
    except toolchain.ToolInstallError as exc:
        raise StepFailed(str(exc)) from None


def install_steps(lab: Lab, names: list[str], source: str, optional: bool = False) -> list[Step]:
    """optional (`invoke setup`): a tool whose source archive is not at hand is skipped with the reason."""
    if source not in toolchain.SOURCES:
        raise SettingsError(f"--source must be one of {', '.join(toolchain.SOURCES)}, not {source!r}")
    return [_tool_step(lab, name, source, optional) for name in names]


def _tool_step(lab: Lab, name: str, source: str, optional: bool = False) -> Step:
    pinned = toolchain.TOOLS[name].version

    def check(ctx):
        have = toolchain.installed_version(name, lab.tools_dir)
        if have == pinned:
            return ok(f"{name} {pinned}")
        return change(f"install {name} {pinned}" + (f" (found {have})" if have else ""))

    def apply(ctx):
        how = install_here(lab, name, source, ctx.say, optional)
        return f"installed {name} {pinned} in {lab.tools_dir}: {how}"

    return Step(f"{name} {pinned}", check, apply)


# --- a host's tools (`invoke setup --host`) ----------------------------------------
def host_platform(sh) -> str:
    """The host's platform as Go names it (linux/amd64), from `uname`."""
    system, machine = sh.run(["uname", "-sm"], timeout=30).stdout.split()[:2]
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine.lower(), machine)
    return f"{system.lower()}/{arch}"


def host_steps(lab: Lab, names: list[str], source: str, optional: bool = False) -> list[Step]:
    """Each tool in the host's tool cache at the pinned version: where the host's platform is this machine's,
    copied from this machine's cache (installed here first as `tools.install` does, if it is not), only when
    the host's copy differs from it (sha256)."""
    here = toolchain.current_platform()

    def platform_check(ctx):
        there = host_platform(ctx.sh)
        if there != here:
            raise StepFailed(f"{lab.host} is {there} and this machine {here}: kindlab's tool cache here cannot "
                             f"serve it; run `invoke setup` on {lab.host} itself")
        return ok(f"{lab.host} is {there}, as this machine: its tools are copied from this machine's cache")

    def step(name: str) -> Step:
        pinned = toolchain.TOOLS[name].version
        local = toolchain.tool_path(name, lab.tools_dir)
        there = lab.machine.bin_dir / local.name

        def same(ctx) -> bool:
            found = ctx.sh.run(["sha256sum", there], check=False, timeout=60).stdout.split()
            return bool(found) and found[0] == _sha256(local)

        def check(ctx):
            if toolchain.installed_version(name, lab.tools_dir) != pinned:
                return change(f"install {name} {pinned} here, then copy it to {lab.host}")
            if same(ctx):
                return ok(f"{name} {pinned} on {lab.host}, as in this machine's cache")
            return change(f"copy {name} {pinned} to {lab.host}")

        def apply(ctx):
            how = "this machine's cache"
            if toolchain.installed_version(name, lab.tools_dir) != pinned:
                how = install_here(lab, name, source, ctx.say, optional) + " here"
            ctx.sh.put(local, to=there)
            return (f"copied {name} {pinned} to {there} on {lab.host} from {how} (same platform {here}; "
                    f"{local.stat().st_size / 1e6:.0f} MB)")

        return Step(f"{name} {pinned} on {lab.host}", check, apply, needs=(platform,))

    platform = f"platform of {lab.host}"
    return [Step(platform, platform_check, needs=()), *[step(name) for name in names]]


def _sha256(path) -> str:
    import hashlib
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def table(lab: Lab) -> Table:
    """The pinned tools, their versions and what is installed (`invoke tools.list`)."""
    table = Table("tool", "pinned", "installed", "part of", caption=f"cache: {lab.tools_dir}")
    for name, spec in toolchain.TOOLS.items():
        have = toolchain.installed_version(name, lab.tools_dir) or "-"
        style = "green" if have == spec.version else "red"
        table.add_row(name, spec.version, f"[{style}]{have}[/{style}]",
                      "testbed" if name in toolchain.TESTBED_TOOLS else "lab")
    return table
