"""tests/e2e: a real kind cluster. Opt-in (KINDLAB_E2E=1): needs Docker, internet and the lab tools."""
import os
import shutil

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("KINDLAB_E2E") == "1":
        return
    reason = "end-to-end test on a real kind cluster: set KINDLAB_E2E=1 (needs Docker and internet)"
    for item in items:
        if "tests/e2e" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def docker_available():
    if shutil.which("docker") is None:
        pytest.fail("KINDLAB_E2E=1 but docker is not installed")
