"""Source archives no package registry serves, read from folders a setting names.

OpenFaaS's MIT parts (faas-cli, of-watchdog, the python3-http templates) and two
programs of kube-prometheus-stack (kube-state-metrics, kube-webhook-certgen)
cannot be had from the Go module proxy. Their public sources, packed as
archives, sit in folders the user names: `kindlab.sources.openfaas` and
`kindlab.sources.monitoring` (tests and CI point them at the project's shared
sources). Nothing of them is in this repository.

Each archive's sha256 is pinned here and checked before use; a missing or
different archive is one sentence saying which and what to do. An archive is
unpacked once into kindlab's cache, under a folder named by its sha256, and
renamed into place only when whole, so an interrupted unpack is never used.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

GROUPS = ("openfaas", "monitoring")  # the keys of kindlab.sources


@dataclass(frozen=True)
class Archive:
    name: str
    group: str      # which kindlab.sources folder holds it
    file: str
    sha256: str
    folder: str     # the one top-level folder inside
    what: str       # what it makes, for messages


ARCHIVES: dict[str, Archive] = {a.name: a for a in (
    Archive("faas-cli", "openfaas", "faas-cli-0.18.11.tar.gz",
            "fb0783a8ad919c30c20a83691fe03095a6db5237f82c5f7b18f9fbea29f54806", "faas-cli-0.18.11",
            "faas-cli 0.18.11 (openfaas/faas-cli, MIT)"),
    Archive("of-watchdog", "openfaas", "of-watchdog-0.11.3.tar.gz",
            "d6fe6932d465a76978439c9f5ce5873cc635a0bcc92dc93a7f5191d1d13cba87", "of-watchdog-0.11.3",
            "of-watchdog 0.11.3, the function's fwatchdog (openfaas/of-watchdog, MIT)"),
    Archive("python-flask-template", "openfaas", "python-flask-template-e01a8826291d.tar.gz",
            "ce7711a7288e90f171fb64cb89d4760f2f7c9d786c71d7ce6982489fb81ea374", "python-flask-template-e01a8826291d",
            "the python3-http templates (openfaas/python-flask-template e01a8826291d, MIT)"),
    Archive("kube-state-metrics", "monitoring", "kube-state-metrics-2.17.0.tar.gz",
            "4535603cadc9f2a5dbdce92a703ba3645443e193c6e9c3fb960383dad9236d71", "kube-state-metrics-2.17.0",
            "kube-state-metrics v2.17.0 (Apache-2.0)"),
    Archive("kube-webhook-certgen", "monitoring", "kube-webhook-certgen-1.6.5.tar.gz",
            "758ae317b18a2c191bf68496e929418506ef7111fb2ab1299a6f52c7b5296bea", "kube-webhook-certgen-1.6.5",
            "kube-webhook-certgen v1.6.5 (Apache-2.0)"),
)}


class SourceMissing(Exception):
    """An archive that cannot be used: the message is one sentence with the fix."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(name: str, folders: Mapping[str, str]) -> Path:
    """The archive's file, its sha256 checked; SourceMissing says why it cannot be used."""
    archive = ARCHIVES[name]
    folder = folders.get(archive.group) or ""
    if not folder:
        raise SourceMissing(f"{archive.what} comes from {archive.file}, and kindlab.sources.{archive.group} names "
                            f"no folder: set it to the folder of the {archive.group} source archives")
    path = Path(folder).expanduser() / archive.file
    if not path.is_file():
        raise SourceMissing(f"{archive.file} is not in {path.parent} (kindlab.sources.{archive.group}): "
                            f"put it there for {archive.what}")
    actual = _sha256(path)
    if actual != archive.sha256:
        raise SourceMissing(f"{path} has sha256 {actual}, not the {archive.sha256} kindlab pins: "
                            "it was not used; get the archive again")
    return path


def reason_missing(name: str, folders: Mapping[str, str]) -> str | None:
    """Why the archive cannot be used, or None when it is there and intact."""
    try:
        locate(name, folders)
    except SourceMissing as exc:
        return str(exc)
    return None


def unpacked(name: str, folders: Mapping[str, str], cache: Path) -> Path:
    """The archive's top folder, unpacked under `cache` once (sha256 checked first)."""
    archive = ARCHIVES[name]
    target = Path(cache) / f"{archive.name}-{archive.sha256[:12]}"
    if (target / archive.folder).is_dir():
        return target / archive.folder
    path = locate(name, folders)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{archive.name}-", dir=target.parent))
    try:
        with tarfile.open(path, "r:*") as tar:
            tar.extractall(staging, filter="data")  # no links or paths out of the folder
        if not (staging / archive.folder).is_dir():
            raise SourceMissing(f"{path} has no folder {archive.folder}/ at its top: it is not the archive "
                                "kindlab expects")
        try:
            os.replace(staging, target)
        except OSError:  # unpacked meanwhile by another run
            if not (target / archive.folder).is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / archive.folder


def cache_dir(bin_dir: Path) -> Path:
    """Beside kindlab's tools (shared by every lab), off the PATH they are on."""
    return Path(bin_dir) / "sources"


__all__ = ["ARCHIVES", "Archive", "GROUPS", "SourceMissing", "locate", "reason_missing", "unpacked", "cache_dir"]
