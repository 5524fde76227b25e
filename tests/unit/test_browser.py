"""The UI test's browser: what `invoke setup` does about Chromium, decided without installing anything."""
import pytest

from playbooks import browser
from playbooks.core.steps import CHANGED, OK, SKIPPED


class Sh:
    def __init__(self, programs):
        self.programs = programs

    def which(self, name):
        return self.programs.get(name)


class Ctx:
    def __init__(self, sh):
        self.sh = sh


@pytest.fixture
def no_chromium(monkeypatch):
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)


def test_a_chromium_on_path_is_kept(monkeypatch):
    monkeypatch.setattr(browser.shutil, "which", lambda name: "/usr/bin/chromium" if name == "chromium" else None)
    result = browser.install_step().check(Ctx(Sh({})))
    assert result.state == OK and result.detail == "/usr/bin/chromium"


def test_without_root_setup_skips_it_naming_the_command_that_installs_it(no_chromium, monkeypatch):
    monkeypatch.setattr(browser.sys, "platform", "linux")
    monkeypatch.setattr(browser.os, "geteuid", lambda: 1000, raising=False)
    result = browser.install_step().check(Ctx(Sh({"apt-get": "/usr/bin/apt-get"})))
    assert result.state == SKIPPED
    assert result.detail == ("chromium (the browser the Prometheus UI test renders with) is not installed, and "
                             "installing it needs root: `sudo apt-get install chromium fonts-dejavu-core` "
                             "(or `sudo invoke setup`)")


def test_as_root_with_apt_get_setup_installs_debians_chromium(no_chromium, monkeypatch):
    monkeypatch.setattr(browser.sys, "platform", "linux")
    monkeypatch.setattr(browser.os, "geteuid", lambda: 0, raising=False)
    result = browser.install_step().check(Ctx(Sh({"apt-get": "/usr/bin/apt-get"})))
    assert result.state == CHANGED and "chromium, fonts-dejavu-core with apt-get" in result.detail


def test_without_apt_get_it_says_to_use_the_package_manager(no_chromium, monkeypatch):
    monkeypatch.setattr(browser.sys, "platform", "linux")
    result = browser.install_step().check(Ctx(Sh({})))
    assert result.state == SKIPPED and "install Chromium with your package manager" in result.detail


def test_the_headless_flags_keep_chromium_off_the_network():
    assert {"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"} <= set(browser.FLAGS)
