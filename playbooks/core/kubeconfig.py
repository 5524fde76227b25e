"""Adding and removing one cluster's entries in the user's kubeconfig.

kind and kwokctl would make their new context the *current* one; kindlab
asks them to write a kubeconfig of their own and merges its entries here,
leaving the user's current-context as it was.

The kubeconfig is shared by every lab (two created side by side is normal),
so each change is a read-modify-write under a file lock beside the file, and
the file is replaced whole: a reader sees the old or the new file, never half.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import yaml

from . import kyaml
from .filelock import LockBusy, locked
from .steps import StepFailed

_SECTIONS = ("clusters", "users", "contexts")
LOCK_WAIT_S = 30.0  # a merge takes milliseconds: this long means a stuck process


def _load(path: Path) -> dict:
    if not path.exists():
        return {"apiVersion": "v1", "kind": "Config", "preferences": {},
                "clusters": [], "users": [], "contexts": [], "current-context": ""}
    data = kyaml.load(path.read_text()) or {}
    for section in _SECTIONS:
        data[section] = data.get(section) or []
    return data


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: a crash mid-write must never leave the user's kubeconfig half written.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kindlab-kubeconfig-")
    try:
        with os.fdopen(fd, "w") as handle:
            yaml.safe_dump(data, handle, default_flow_style=False, sort_keys=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _edit(dest: Path, change: Callable[[dict], bool]) -> bool:
    """Apply `change` to the kubeconfig under its lock; written only when `change` says it changed it.

    A symlinked kubeconfig is followed, never replaced by a file.
    """
    real = Path(os.path.realpath(dest))
    try:
        with locked(real.with_name(real.name + ".kindlab.lock"), f"{os.getpid()}\n", wait=LOCK_WAIT_S):
            data = _load(real)
            if not change(data):
                return False
            _save(real, data)
            return True
    except LockBusy as busy:
        raise StepFailed(f"another process (pid {busy.note or '?'}) has kept {dest} locked for "
                         f"{LOCK_WAIT_S:.0f}s; let it finish or stop it, then run this again") from None


def context_entries(source_text: str, context: str) -> dict:
    """The cluster, user and context entries for `context` from a kubeconfig text."""
    data = kyaml.load(source_text) or {}
    ctx = next((c for c in data.get("contexts") or [] if c.get("name") == context), None)
    if ctx is None:
        names = [c.get("name") for c in data.get("contexts") or []]
        raise ValueError(f"context {context!r} not in the cluster's kubeconfig (has {names})")
    cluster_name, user_name = ctx["context"]["cluster"], ctx["context"].get("user")
    return {
        "clusters": [c for c in data.get("clusters") or [] if c.get("name") == cluster_name],
        "users": [u for u in data.get("users") or [] if u.get("name") == user_name],
        "contexts": [ctx],
    }


def through_tunnel(lab, sh, entries: dict) -> dict:
    """A host's cluster as this machine reaches it: its API server through kindlab's SSH tunnel (on the
    port the user's kubeconfig already names for it, where free), every name the lab's context (which says
    the host)."""
    from urllib.parse import urlsplit

    cluster = dict(entries["clusters"][0]["cluster"])
    server = urlsplit(cluster["server"])
    far_host = server.hostname or "127.0.0.1"
    known = _server_port(_load(lab.kubeconfig), lab.context) if lab.kubeconfig.exists() else None
    here = sh.forward(server.port or 443, far_host, local_port=known)
    cluster["server"] = f"https://127.0.0.1:{here}"
    if far_host not in ("127.0.0.1", "localhost"):
        cluster["tls-server-name"] = far_host  # its certificate names the host's address, not ours
    name = lab.context
    user = dict(entries["users"][0]["user"]) if entries["users"] else {}
    return {"clusters": [{"name": name, "cluster": cluster}], "users": [{"name": name, "user": user}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}]}


def _server_port(data: dict, context: str) -> int | None:
    from urllib.parse import urlsplit

    ctx = next((c for c in data["contexts"] if c.get("name") == context), None)
    entry = ctx and next((c for c in data["clusters"] if c.get("name") == ctx["context"].get("cluster")), None)
    return urlsplit(entry["cluster"]["server"]).port if entry else None


def tunnel(lab, sh) -> None:
    """Open the SSH tunnel to a host's API server for the Kubernetes client (the lab's context names its
    port here); where that port was taken meanwhile, the context is written again with the new one."""
    text = sh.read_text(lab.tool_kubeconfig)
    if not text:
        return  # no cluster there yet: the client says the context is missing
    try:
        entries = through_tunnel(lab, sh, context_entries(text, lab.host_context))
    except ValueError:
        return
    if not has_entries(lab.kubeconfig, entries):
        merge(lab.kubeconfig, entries)


def has_entries(dest: Path, entries: dict) -> bool:
    """True when `dest` already holds exactly these entries."""
    data = _load(dest)
    for section in _SECTIONS:
        for entry in entries[section]:
            if entry not in data[section]:
                return False
    return True


def merge(dest: Path, entries: dict) -> None:
    """Add or replace the entries by name; the current-context is left alone."""
    def add(data: dict) -> bool:
        for section in _SECTIONS:
            for entry in entries[section]:
                data[section] = [e for e in data[section] if e.get("name") != entry.get("name")] + [entry]
        return True

    _edit(dest, add)


def remove_context(dest: Path, context: str) -> bool:
    """Remove a context and its cluster and user entries; True when something was removed."""
    def remove(data: dict) -> bool:
        ctx = next((c for c in data["contexts"] if c.get("name") == context), None)
        if ctx is None:
            return False
        data["contexts"] = [c for c in data["contexts"] if c.get("name") != context]
        data["clusters"] = [c for c in data["clusters"] if c.get("name") != ctx["context"].get("cluster")]
        data["users"] = [u for u in data["users"] if u.get("name") != ctx["context"].get("user")]
        if data.get("current-context") == context:
            data["current-context"] = ""
        return True

    return dest.exists() and _edit(dest, remove)


def has_context(dest: Path, context: str) -> bool:
    return dest.exists() and any(c.get("name") == context for c in _load(dest)["contexts"])
