import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gradmix import config  # noqa: E402


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def params_file() -> Path:
    return ROOT / "params.yaml"


@pytest.fixture(scope="session")
def cfg(params_file):
    """The repository's params.yaml with its smoke overrides (one split, one epoch, few images)."""
    return config.load(params_file, smoke=True)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are skipped on a machine without a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marked cuda; make gpu-check runs these)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
