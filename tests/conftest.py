"""Shared test set-up: the project root on sys.path (plain `pytest` works from any folder), the
`slow` marker (real-simulator and end-to-end runs; CI runs them too), and one torch thread per
worker under pytest-xdist (`pytest -n 2`, the README's test command: each worker has a core)."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# No test reaches the Hugging Face Hub: a run that would download (an env with no scripted expert and no
# --checkpoint) meets HF_HUB_OFFLINE and a closed loopback port instead. tests/test_hub.py gives its own runs
# a fake Hub on the loopback interface.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real simulators / end-to-end runs (seconds to minutes)")


@pytest.fixture(autouse=True)
def one_torch_thread_per_xdist_worker():
    """Test modules set torch's thread count when imported (the last import wins); with two workers on
    two cores, more than one thread each only makes them contend."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch
        torch.set_num_threads(1)
