"""The dispatch table and the protocol every glue module follows."""

import importlib.util

import keras
import pytest

from mmkeras.backend import BACKENDS
from mmkeras.backend import FAMILIES
from mmkeras.backend import FAMILY_OPS
from mmkeras.backend import GLUE
from mmkeras.backend import glue


def test_table_names_every_backend_and_family_by_convention():
    assert set(GLUE) == {(b, f) for b in BACKENDS for f in FAMILIES}
    for (backend, family), module in GLUE.items():
        assert module == f"mmkeras.backend.{backend}_{family}"
        assert importlib.util.find_spec(module) is not None, module


@pytest.mark.parametrize("family", FAMILIES)
def test_glue_of_this_backend_follows_the_protocol(family):
    module = glue(keras.backend.backend(), family)
    assert callable(module.unavailable_reason)
    rows = module.status()
    assert rows and all(len(row) == 3 for row in rows), rows
    for op in FAMILY_OPS[family]:
        assert callable(getattr(module, op)), f"{module.__name__}.{op}"


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="family.*Received: family='fuse'"):
        glue(keras.backend.backend(), "fuse")


def test_a_backend_without_native_kernels_has_no_glue():
    assert glue("numpy", "attention") is None


def test_mmkeras_kernels_is_the_kernel_selection_module():
    import mmkeras
    import mmkeras.kernels
    from mmkeras import kernel_selection

    assert mmkeras.kernels is kernel_selection
    assert mmkeras.kernels.available is kernel_selection.available
