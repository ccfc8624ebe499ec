import pytest

from model_helpers import load_small_digits


@pytest.fixture(scope="session")
def digits():
    """A small slice of the built-in tri-modal digits data."""
    return load_small_digits()
