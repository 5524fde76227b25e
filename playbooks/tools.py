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
        try:
            how = toolchain.install(name, lab.tools_dir, source=source, log=ctx.say, sources=lab.source_folders)
        except toolchain.ArchiveMissing as exc:
            if optional:
                raise Skipped(f"not installed: {exc}") from None
            raise StepFailed(str(exc)) from None
        except toolchain.ToolInstallError as exc:
            raise StepFailed(str(exc)) from None
        return f"installed {name} {pinned} in {lab.tools_dir}: {how}"

    return Step(f"{name} {pinned}", check, apply)


def table(lab: Lab) -> Table:
    """The pinned tools, their versions and what is installed (`invoke tools.list`)."""
    table = Table("tool", "pinned", "installed", "part of", caption=f"cache: {lab.tools_dir}")
    for name, spec in toolchain.TOOLS.items():
        have = toolchain.installed_version(name, lab.tools_dir) or "-"
        style = "green" if have == spec.version else "red"
        table.add_row(name, spec.version, f"[{style}]{have}[/{style}]",
                      "testbed" if name in toolchain.TESTBED_TOOLS else "lab")
    return table
