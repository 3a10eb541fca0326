"""Native WebGPU fixtures: one event loop, one backend (device) and shared engines per session.

Every test here is marked ``gpu``. Without an adapter they skip locally but FAIL when the
``CI`` environment variable is set: CI must really run them (on lavapipe). The adapter that
ran is printed in the session header line and in the summary, with the largest error each
comparison measured (``gpu_helpers.assert_close``). Set GLASSBOX_EXPECT_ADAPTER to a substring of the
adapter's description to assert which one it must be (e.g. "llvmpipe" in CI).
"""

from __future__ import annotations

import asyncio
import os

import pytest

from gpu_helpers import MEASURED, SMALL, random_checkpoint, random_params

_ADAPTER: list[str] = []


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.gpu)


def pytest_terminal_summary(terminalreporter):
    """The adapter, then per kind of check (first word of its label) the largest error seen
    and the largest error / tolerance ratio (every check with -v)."""
    if not _ADAPTER and not MEASURED:
        return
    terminalreporter.section("glassbox gpu")
    for line in _ADAPTER:
        terminalreporter.write_line(f"adapter: {line}")
    verbose = terminalreporter.config.option.verbose > 0
    groups: dict[str, tuple[float, float, int]] = {}
    for what, error, ratio in MEASURED:
        key = what if verbose else what.split()[0]
        worst_error, worst_ratio, count = groups.get(key, (0.0, 0.0, 0))
        groups[key] = (max(worst_error, error), max(worst_ratio, ratio), count + 1)
    for key, (error, ratio, count) in groups.items():
        terminalreporter.write_line(f"{key:<56} {count:>3} checks  max |gpu-numpy| {error:.3g}  "
                                    f"max error/tolerance {ratio:.3f}")


@pytest.fixture(scope="session")
def run():
    """Run a coroutine on the session's event loop (wgpu-py's promises need a running loop)."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture(scope="session")
def backend(run, pytestconfig):
    from glassbox.gpu.backend import GPUUnavailableError
    from glassbox.gpu.native import NativeBackend

    try:
        be = run(NativeBackend.create())
    except GPUUnavailableError as e:
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but no native WebGPU adapter was found: {e}. Install mesa-vulkan-drivers "
                        "(lavapipe) and wgpu.", pytrace=False)
        pytest.skip(f"no native WebGPU adapter: {e}")
    described = be.info.describe()
    _ADAPTER.append(described)
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\nglassbox gpu tests on {described}")
    assert be.info.vendor or be.info.description or be.info.device, "the adapter describes itself with nothing"
    expected = os.environ.get("GLASSBOX_EXPECT_ADAPTER")
    if expected:
        assert expected.lower() in described.lower(), f"expected adapter {expected!r}, ran on {described}"
    yield be


@pytest.fixture(scope="session")
def small_params():
    return random_params(SMALL, seed=1)


@pytest.fixture(scope="session")
def small_engine(run, backend, small_params):
    """engine(scheme) -> (Engine, Checkpoint) on the small random config, built once per scheme."""
    from glassbox.gpu import Engine

    built = {}

    def get(scheme: str):
        if scheme not in built:
            checkpoint = random_checkpoint(SMALL, scheme, params=small_params)
            built[scheme] = (run(Engine.create(backend, checkpoint)), checkpoint)
        return built[scheme]

    return get
