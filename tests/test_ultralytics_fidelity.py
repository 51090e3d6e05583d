"""Fidelity: the platform trains exactly as ultralytics does when called directly.

Sized for a few minutes on CPU (160 synthetic shapes images at 96 px, 18 epochs, twice);
``bench/fidelity.py`` runs the same comparison at a larger size.
"""

from __future__ import annotations

import importlib.util

import pytest

from tests._servers import ROOT

pytestmark = pytest.mark.timeout(1800)


def _fidelity():
    spec = importlib.util.spec_from_file_location("bench_fidelity", ROOT / "bench" / "fidelity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_platform_matches_direct_ultralytics_and_learns():
    result = _fidelity().compare(images=160, size=96, epochs=18, batch=16)
    print(result)
    assert result["diff"] <= 0.01, result
    assert result["platform_map50"] >= 0.5, result
