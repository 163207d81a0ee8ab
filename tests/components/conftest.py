"""Upstream layer runs shared by the mocks tests of the droplet-based DigitalOcean layers.

Each is module-scoped, as the fixtures it replaces were; a test module may override one
(``test_do_support.py`` runs do-support with its own settings).
"""

from __future__ import annotations

import pytest

from infragym.backends.mockrun import LayerRun
from tests.components.do_droplets import SEED, run, support_run


@pytest.fixture(scope="module")
def cp() -> LayerRun:
    """A do-k8s-control-plane run with the fixed seed."""
    return run("do-k8s-control-plane", {"secret_seed": SEED})


@pytest.fixture(scope="module")
def support() -> LayerRun:
    """A default do-support run (3 Consul servers, the fixed seed)."""
    return support_run()
