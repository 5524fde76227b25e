"""Adding and removing one cluster's entries in the user's kubeconfig.

kind and kwokctl would make their new context the *current* one; kindlab
asks them to write a kubeconfig of their own and merges its entries here,
leaving the user's current-context as it was.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from . import kyaml

_SECTIONS = ("clusters", "users", "contexts")


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
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle, default_flow_style=False, sort_keys=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


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
    data = _load(dest)
    for section in _SECTIONS:
        for entry in entries[section]:
            data[section] = [e for e in data[section] if e.get("name") != entry.get("name")] + [entry]
    _save(dest, data)


def remove_context(dest: Path, context: str) -> bool:
    """Remove a context and its cluster and user entries; True when something was removed."""
    if not dest.exists():
        return False
    data = _load(dest)
    ctx = next((c for c in data["contexts"] if c.get("name") == context), None)
    if ctx is None:
        return False
    data["contexts"] = [c for c in data["contexts"] if c.get("name") != context]
    data["clusters"] = [c for c in data["clusters"] if c.get("name") != ctx["context"].get("cluster")]
    data["users"] = [u for u in data["users"] if u.get("name") != ctx["context"].get("user")]
    if data.get("current-context") == context:
        data["current-context"] = ""
    _save(dest, data)
    return True


def has_context(dest: Path, context: str) -> bool:
    return dest.exists() and any(c.get("name") == context for c in _load(dest)["contexts"])
