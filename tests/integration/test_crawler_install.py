"""The crawler installed with the project: a command, `python -m crawler` from any directory, a job of its own.

The project is installed (without its dependencies, which this environment
has) into a directory of the test's own, from a copy of what the install
reads, so neither the environment nor the checkout changes. pip builds a
wheel for that, which needs setuptools >= 70.1 (or the wheel package) when it
may not download a build environment, and tests reach no registry. Where the
local setuptools cannot, the install is laid out from the same pyproject.toml
by the pieces pip itself uses: setuptools reads which packages and files go
in, and pip's script maker writes the console script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # a pip install of the project: several seconds


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    shutil.copy(REPO / "pyproject.toml", source)
    for package in ("crawler", "playbooks"):  # what pyproject's packages name (playbooks: the kindlab command)
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0 and "invalid command 'bdist_wheel'" in proc.stdout + proc.stderr:
        lay_out_install(source, target)
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


# What pip install puts in a target directory, from a pyproject.toml, without building a wheel.
# Run in a process of its own: setuptools must be imported before anything imports distutils.
LAY_OUT_INSTALL = """
import shutil, sys, warnings
from pathlib import Path
from setuptools.config.pyprojecttoml import read_configuration
from pip._vendor.distlib.scripts import ScriptMaker
source, target = Path(sys.argv[1]), Path(sys.argv[2])
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # "[tool.setuptools] support is beta"
    config = read_configuration(source / "pyproject.toml")
options = config["tool"]["setuptools"]
for package in options["packages"]:
    destination = target / package.replace(".", "/")
    destination.mkdir(parents=True)
    data = options.get("package-data", {}).get(package, [])
    for path in (source / package.replace(".", "/")).iterdir():
        if path.suffix == ".py" or path.name in data:
            shutil.copy(path, destination)
maker = ScriptMaker(None, str(target / "bin"))
maker.executable, maker.variants = sys.executable, {""}
maker.make_multiple([f"{name} = {entry}" for name, entry in config["project"]["scripts"].items()])
"""


def lay_out_install(source: Path, target: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", LAY_OUT_INSTALL, str(source), str(target)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def run_elsewhere(installed: Path, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    """argv run from a directory with no crawler in it, seeing only the installed copy."""
    env = {**os.environ, "PYTHONPATH": str(installed)}
    return subprocess.run(list(argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


def test_the_console_script_is_installed_and_runs(installed, tmp_path):
    proc = run_elsewhere(installed, tmp_path, str(installed / "bin" / "kindlab-crawl"), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: kindlab-crawl [-h]")
    assert "--max-pages" in proc.stdout and "--fetchers" in proc.stdout


def test_python_m_crawler_works_from_another_directory(installed, tmp_path):
    proc = run_elsewhere(installed, tmp_path, sys.executable, "-m", "crawler", "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m crawler [-h]")
    where = run_elsewhere(installed, tmp_path, sys.executable, "-c", "import crawler; print(crawler.__file__)")
    assert where.stdout.strip() == str(installed / "crawler" / "__init__.py")


def test_an_installed_crawler_still_ships_only_itself_as_the_jobs_working_dir(installed, tmp_path):
    script = (
        "import sys, zipfile\n"
        "from pathlib import Path\n"
        "from ray._private.runtime_env.packaging import create_package\n"
        "from crawler.jobs import crawl_runtime_env\n"
        "env = crawl_runtime_env()\n"
        "create_package(env['working_dir'], Path(sys.argv[1]), excludes=env['excludes'])\n"
        "print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))\n"
    )
    proc = run_elsewhere(installed, tmp_path, sys.executable, "-c", script, str(tmp_path / "job.zip"))
    assert proc.returncode == 0, proc.stderr
    names = proc.stdout.split()
    assert "crawler/__main__.py" in names and "crawler/requirements.txt" in names
    assert [name for name in names if not name.startswith("crawler/")] == []
