"""Shared fixtures: `isa` runs a test once per kernel path this CPU supports, forcing it."""
import numpy as np
import pytest

from cromwell_lsp import kernels


@pytest.fixture(params=list(kernels.ISAS))
def isa(request):
    name = request.param
    if not kernels.isa_supported(name):
        pytest.skip(f"this CPU cannot run the {name} kernels")
    before = kernels.isa()
    kernels.set_isa(name)
    yield name
    kernels.set_isa(before)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def rel_err(got, ref):
    """max |got - ref| / max(|ref|, tiny): the error measure every kernel test states."""
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ref.size == 0:
        return 0.0
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30))
