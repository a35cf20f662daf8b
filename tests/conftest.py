"""Shared test set-up: the project root on sys.path (plain `pytest` works from any folder) and the
`slow` marker (real-simulator and end-to-end runs; CI runs them too)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: real simulators / end-to-end runs (seconds to minutes)")
