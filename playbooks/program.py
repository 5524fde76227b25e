"""`kindlab`: Invoke's program with kindlab's tasks and one core flag of its own, `--host`.

`invoke --host box all` cannot work: Invoke refuses a core flag it does not know ("No idea what
'--host' is!"). Every play task takes `--host` after its name (`invoke all --host box`), and the
`kindlab` command (pyproject's console script; also `python -m playbooks.program`) takes it before
the tasks, for all of them: `kindlab --host user@box:2222 all --offline`. Both set kindlab.host, as
INVOKE_KINDLAB_HOST and invoke.yaml do.
"""
from __future__ import annotations

import sys
from pathlib import Path

from invoke import Argument, Collection, Program
from invoke.config import merge_dicts

ROOT = Path(__file__).resolve().parent.parent  # the checkout: tasks.py and invoke.yaml


class KindlabProgram(Program):
    def core_args(self) -> list:
        return [*super().core_args(),
                Argument(names=("host",), help="run the lab on this host over SSH (user@box[:port] or a Host "
                                               "alias of ~/.ssh/config), for every task")]

    def update_config(self, merge: bool = True) -> None:
        super().update_config(merge=False)
        host = self.args.host.value
        if host:
            self.config.load_overrides(merge_dicts(dict(self.config._overrides), {"kindlab": {"host": host}}),
                                       merge=False)
        if merge:
            self.config.merge()


def main() -> None:
    namespace = None  # installed elsewhere than a checkout: Invoke finds tasks.py from the current folder
    if (ROOT / "tasks.py").is_file():  # the checkout's (an editable install, `python -m playbooks.program`)
        sys.path.insert(0, str(ROOT))
        import tasks  # noqa: PLC0415

        namespace = Collection.from_module(tasks)
    KindlabProgram(name="kindlab", binary="kindlab", namespace=namespace, version="0.1.0").run()


if __name__ == "__main__":
    main()
