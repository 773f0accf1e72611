"""Shared fixtures (helpers are in tests/helpers.py) and the Hypothesis profiles.

`HYPOTHESIS_PROFILE=long python -m pytest tests/test_predict.py` runs the fuzz tests with many more examples
than CI's default profile.
"""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.helpers import fake_batch, write_fake_folder, write_fake_tarball  # noqa: F401  (older imports)

REAL_DATA = os.environ.get("CIFAR10_PATH")

settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config, items):
    """The slow and real-data tests first, so that under xdist the run ends on short tests, not one long one."""
    items.sort(
        key=lambda item: (
            not any(item.iter_markers("slow")) and not any(item.iter_markers("real_data"))
        )
    )


@pytest.fixture
def fake_cifar_dir(tmp_path):
    return write_fake_folder(tmp_path)


@pytest.fixture
def fake_cifar_tarball(tmp_path):
    return write_fake_tarball(tmp_path / "cifar-10-binary.tar.gz")


@pytest.fixture
def real_cifar():
    """Path to the real CIFAR-10 copy from $CIFAR10_PATH; skips when absent."""
    if not REAL_DATA or not Path(REAL_DATA).exists():
        pytest.skip("real CIFAR-10 copy not present: set CIFAR10_PATH to cifar-10-binary.tar.gz")
    return REAL_DATA


@pytest.fixture(scope="module")
def residual_model():
    """A seeded untrained model whose logits differ per image.

    residual=True: an untrained stack of plain Ultimus blocks gives near-identical logits for every image.
    """
    import keras

    from keras_ultimus.models.ultimus import build_model

    keras.utils.set_random_seed(0)
    return build_model(residual=True)
