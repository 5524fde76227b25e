"""Kubernetes objects from manifests: applied server-side, compared before applying.

The check asks the API server what a server-side apply *would* produce
(`--dry-run=server`) and compares that with the live objects, so defaults
and other managers' fields (a `kubectl scale`) never look like a change.
"""
from __future__ import annotations

import json
from typing import Callable

import yaml

from .steps import Step, change, ok

FIELD_MANAGER = "kindlab"
_COMPARED = ("spec", "data", "stringData", "rules", "roleRef", "subjects")


def _key(obj: dict) -> tuple[str, str, str]:
    meta = obj.get("metadata", {})
    return obj.get("kind", ""), meta.get("namespace", "") or "", meta.get("name", "")


def _items(text: str) -> list[dict]:
    if not text.strip():
        return []
    data = json.loads(text)
    return data.get("items", []) if data.get("kind", "").endswith("List") else [data]


def _kubectl(lab) -> list[str]:
    return ["kubectl", *lab.cluster_flags()]


def differences(live: list[dict], wanted: list[dict]) -> list[str]:
    """Names of the objects whose dry-run result differs from the live object."""
    by_key = {_key(o): o for o in live}
    changed = []
    for obj in wanted:
        kind, ns, name = _key(obj)
        current = by_key.get((kind, ns, name))
        label = f"{kind.lower()}/{name}"
        if current is None:
            changed.append(f"create {label}")
            continue
        fields = [f for f in _COMPARED if obj.get(f) != current.get(f)]
        for meta in ("labels", "annotations"):
            if obj["metadata"].get(meta) != current["metadata"].get(meta):
                fields.append(f"metadata.{meta}")
        if fields:
            changed.append(f"update {label} ({', '.join(fields)})")
    return changed


def applied(name: str, lab, documents: Callable[[], list[dict]],
            wait: Callable | None = None, needs: tuple[str, ...] | None = None) -> Step:
    """A step that server-side applies `documents()` when they differ from the cluster."""
    def text() -> str:
        return yaml.safe_dump_all(documents(), sort_keys=False)

    def check(ctx):
        manifest = text()
        live = ctx.sh.run([*_kubectl(lab), "get", "-f", "-", "-o", "json", "--ignore-not-found"],
                          input=manifest).stdout
        dry = ctx.sh.run([*_kubectl(lab), "apply", "--server-side", "--force-conflicts",
                          f"--field-manager={FIELD_MANAGER}", "--dry-run=server", "-o", "json",
                          "-f", "-"], input=manifest).stdout
        diffs = differences(_items(live), _items(dry))
        return change("; ".join(diffs)) if diffs else ok("up to date")

    def apply(ctx):
        out = ctx.sh.run([*_kubectl(lab), "apply", "--server-side", "--force-conflicts",
                          f"--field-manager={FIELD_MANAGER}", "-f", "-"], input=text()).stdout
        return "; ".join(line.strip() for line in out.splitlines() if "unchanged" not in line)

    return Step(name, check, apply, wait=wait, needs=needs)


def absent(name: str, lab, documents: Callable[[], list[dict]]) -> Step:
    """A step that deletes the objects of `documents()` and waits until they are gone."""
    def check(ctx):
        live = ctx.sh.run([*_kubectl(lab), "get", "-f", "-", "-o", "json", "--ignore-not-found"],
                          input=yaml.safe_dump_all(documents())).stdout
        present = [f"{k.lower()}/{n}" for k, _, n in map(_key, _items(live))]
        return change(f"delete {', '.join(present)}") if present else ok("already absent")

    def apply(ctx):
        ctx.sh.run([*_kubectl(lab), "delete", "-f", "-", "--ignore-not-found", "--wait=true",
                    f"--timeout={ctx.deadline.flag()}"], input=yaml.safe_dump_all(documents()))

    return Step(name, check, apply)
