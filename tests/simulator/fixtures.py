"""pytest fixtures for the provider simulator (registered from tests/conftest.py's pytest_plugins).

simulator_server  session scope: the one running Simulator (its port never changes during a run,
                  so module-scoped workers can be pointed at it)
simulator         function scope: the same object, reset before and after each test
"""

from __future__ import annotations

import pytest

from tests.simulator.server import Simulator


@pytest.fixture(scope="session")
def simulator_server():
    with Simulator() as simulator:
        yield simulator


@pytest.fixture
def simulator(simulator_server):
    simulator_server.reset()
    yield simulator_server
    errors = list(simulator_server.errors)
    simulator_server.reset()
    assert not errors, f"the provider simulator failed while answering: {errors}"
