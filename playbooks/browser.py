"""The browser that shows the lab's Prometheus UI as a person sees it: Debian's chromium, headless.

`invoke setup` installs it as root with apt-get (with a font, so that text
renders on a bare machine) and skips it elsewhere with the reason; the real
cluster tests render a graph page of the lab with it, and skip (CI: fail) where
it is missing. Headless it runs with a fresh profile and everything that would
reach the network on its own turned off (sync, component updates, background
requests, QUIC): a render needs nothing but the page it is given.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .core.steps import Step, StepFailed, change, ok, skip

PACKAGES = ("chromium", "fonts-dejavu-core")  # Debian's
PROGRAMS = ("chromium", "chromium-browser")   # Debian's name, Ubuntu's
INSTALL = f"`sudo apt-get install {' '.join(PACKAGES)}` (or `sudo invoke setup`)"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")
RENDER_TIMEOUT_S = 120


def find() -> str | None:
    """The chromium on PATH, or None."""
    return next((path for path in map(shutil.which, PROGRAMS) if path), None)


def _cannot_install_reason(sh) -> str | None:
    why = "chromium (the browser the Prometheus UI test renders with) is not installed"
    if not sys.platform.startswith("linux") or sh.which("apt-get") is None:
        return f"{why}, and kindlab installs it with apt-get only: install Chromium with your package manager"
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        return f"{why}, and installing it needs root: {INSTALL}"
    return None


def install_step() -> Step:
    """chromium on PATH: installed with apt-get where kindlab runs as root, else skipped with the fix."""
    def check(ctx):
        found = find()
        if found:
            return ok(found)
        reason = _cannot_install_reason(ctx.sh)
        return skip(reason) if reason else change(f"install Debian's {', '.join(PACKAGES)} with apt-get")

    def install(ctx):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        ctx.say("apt-get update")
        ctx.sh.run(["apt-get", "update", "-q"], env=env, timeout=600)
        ctx.say(f"apt-get install {' '.join(PACKAGES)}")
        ctx.sh.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES], env=env, timeout=1200)
        if not find():
            raise StepFailed(f"apt-get installed {PACKAGES[0]}, but no {' or '.join(PROGRAMS)} is on PATH; "
                             f"check `dpkg -L {PACKAGES[0]}`")
        return f"installed {', '.join(PACKAGES)} ({find()})"

    return Step("chromium (the UI test's browser)", check, install)


def render(url: str, png: Path | None = None, width: int = 1400, height: int = 900,
           budget_ms: int = 20_000) -> str:
    """The page's DOM once its scripts had `budget_ms` of virtual time to fetch and draw (what they drew,
    as HTML), and, with `png`, a picture of that same rendering."""
    chromium = find()
    if chromium is None:
        raise StepFailed(f"no chromium on PATH: install it with {INSTALL}")
    with tempfile.TemporaryDirectory(prefix="kindlab-chromium-") as profile:
        argv = [chromium, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                f"--window-size={width},{height}", *([f"--screenshot={png}"] if png else []), "--dump-dom", url]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                                  timeout=RENDER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"chromium did not render {url} within {RENDER_TIMEOUT_S}s") from None
    if done.returncode != 0 or (png and not Path(png).is_file()):
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise StepFailed(f"chromium could not render {url} (exit code {done.returncode}):\n{tail}")
    return done.stdout


__all__ = ["find", "install_step", "render", "PACKAGES", "FLAGS"]
