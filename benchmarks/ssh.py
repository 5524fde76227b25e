"""`all --offline` here and on an SSH host: first run and converged rerun, and the bytes a rerun uploads.

Runs the real commands (`python -m invoke -f tests/fixtures/offline-charts.yaml all --offline`), first
on this machine, then with `--host HOST`, each on a fresh kind cluster deleted afterwards (one kind
cluster at a time), and prints wall times, the recap's counts and what each run sent over SSH.

    python benchmarks/ssh.py --host kindlab-test-far [--ssh-config FILE]

The host needs `invoke setup --host HOST` first. Source archives: INVOKE_KINDLAB_SOURCES_* as for the lab.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)(?: \((\d+) actions?\))?\s+unknown=\d+\s+failed=(\d+)\s+skipped=(\d+)")
SENT = re.compile(r"uploaded (\d+) bytes")


def invoke(args: list[str], env: dict) -> tuple[float, str]:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=3600)
    return time.monotonic() - start, done.stdout + done.stderr


def row(what: str, seconds: float, output: str) -> str:
    counts = RECAP.findall(output)
    ok, changed, actions, failed, skipped = counts[-1] if counts else ("?",) * 5
    sent = SENT.findall(output)
    uploaded = f"{int(sent[-1]):,} B" if sent else "-"
    lab_changes = int(changed) - int(actions or 0) if changed != "?" else "?"
    return (f"{what:<28} {seconds:7.1f}s  ok={ok} changed={changed} (lab changes {lab_changes}) failed={failed} "
            f"skipped={skipped}  uploaded {uploaded}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", required=True)
    parser.add_argument("--ssh-config", default="")
    parser.add_argument("--name", default="bench-ssh")
    args = parser.parse_args()
    lines = []
    for where, extra in (("here", []), (args.host, ["--host", args.host])):
        home = Path(tempfile.mkdtemp(prefix="kindlab-bench-"))
        env = {**os.environ, "KINDLAB_HOME": str(home), "KUBECONFIG": str(home / "kubeconfig")}
        if args.ssh_config:
            env["INVOKE_KINDLAB_SSH_CONFIG"] = args.ssh_config
        run = ["-f", "tests/fixtures/offline-charts.yaml", "all", "--offline", "--name", args.name, *extra]
        try:
            for label in ("first run", "rerun"):
                seconds, output = invoke(run, env)
                lines.append(row(f"{where}: {label}", seconds, output))
                print(lines[-1], flush=True)
        finally:
            invoke(["cluster.delete", "--provider", "kind", "--name", args.name, *extra], env)
    print("\n".join(["", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
