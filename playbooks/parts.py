"""The registry of the lab's parts, and what is derived from it once: the settings schema and the offline rule.

`invoke all`, `status`, `down`, `doctor` and tasks.py read it. Adding a part is
a module with its steps and its `PART` record (playbooks/core/part.py) and one
line in REGISTRY: tasks.py then gives it `invoke NAME.install` and
`invoke NAME.uninstall`, its settings join the schema (`kindlab.NAME.*`), its
node ports the kind cluster's port mappings, `all` installs it, `down` removes
it, `status` and `doctor` count it.
"""
from __future__ import annotations

from . import images, sources
from .core.helm import chart_at_hand
from .core.part import Part
from .core.settings import Lab, SettingsError, schema_with
from . import faas, monitoring, nginx, ray

REGISTRY: dict[str, Part] = {part.name: part for part in (
    nginx.PART,
    monitoring.PART,
    faas.PART,
    ray.PART,
)}
# Every setting: kindlab's own and what the parts declare (their settings, their host ports).
SCHEMA = schema_with(REGISTRY.values())


def choose(only: str = "", skip: str = "", registry: dict[str, Part] | None = None) -> list[Part]:
    """The parts --only/--skip name (comma-separated), in registry order; a name it lacks is refused."""
    registry = REGISTRY if registry is None else registry

    def names(text: str) -> list[str]:
        items = [p.strip() for p in text.split(",") if p.strip()]
        unknown = [p for p in items if p not in registry]
        if unknown:
            raise SettingsError(f"unknown part(s) {', '.join(unknown)}: parts are {', '.join(registry)}")
        return items

    chosen = names(only) or list(registry)
    dropped = names(skip)
    return [registry[name] for name in chosen if name not in dropped]


def offline_reason(sh, part: Part, lab: Lab) -> str | None:
    """The one rule for "can this part run offline here?": None when every image it declares is built
    (or, for an image reference, in the local engine), its charts are on this machine and its source
    archives where kindlab.sources says; else why not, with the fix."""
    found = images.present_inputs_of(sh, [images.reference(n) if n in images.CATALOG else n for n in part.images])
    missing = [name for name in part.images if not _image_here(found, name)]
    if missing:
        ours = [name for name in missing if name in images.CATALOG]
        fix = (f"run `invoke images.build --only {','.join(ours)}`" if ours else
               f"build or load {', '.join(missing)} into the local Docker engine")
        return f"offline, {part.name} needs image(s) {', '.join(missing)}, not built yet: {fix}"
    away = {key: r for key, r in part.releases(lab).items() if chart_at_hand(lab, r) is None}
    if away:
        return (f"offline, {part.name} needs its chart(s) on this machine, and no chart repository is reached: "
                + "; ".join(f"{r.chart} {r.version}: set kindlab.charts.{key} to a copy of it (a chart directory "
                            "or .tgz)" for key, r in away.items()))
    archives = [reason for name in part.sources if (reason := sources.reason_missing(name, lab.source_folders))]
    if archives:
        return f"offline, {part.name} needs its source archives: " + "; ".join(archives)
    return None


def _image_here(found: dict[str, str | None], name: str) -> bool:
    """A catalog image built from its inputs as they are now, or any other image in the local engine
    (`found`: the inputs label of each, images.present_inputs_of)."""
    if name in images.CATALOG:
        return found[images.reference(name)] == images.inputs_hash(name)
    return found[name] is not None


__all__ = ["REGISTRY", "SCHEMA", "choose", "offline_reason", "Part"]
