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
