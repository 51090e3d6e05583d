"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from tests._trainers import FakeDatasetService


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """The in-process stand-in for dataset_svc (snapshots, compatibility, tokens), one per
    module; tests that need the real dataset_svc start it through tests._dataset."""
    service = FakeDatasetService(tmp_path_factory.mktemp("home"))
    yield service
    service.stop()
