"""Metrics tests train/cache the digits network in a private cache directory, never ~/.cache."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    old = os.environ.get("BEATGANS_CACHE")
    os.environ["BEATGANS_CACHE"] = str(tmp_path_factory.mktemp("beatgans_cache"))
    yield
    if old is None:
        os.environ.pop("BEATGANS_CACHE", None)
    else:
        os.environ["BEATGANS_CACHE"] = old
