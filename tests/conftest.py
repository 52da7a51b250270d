"""Test-wide environment: no analytics, no network calls home, generous ephemeral start-up."""

import os
from pathlib import Path

import pytest

for key, value in {
    "DVC_NO_ANALYTICS": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "DO_NOT_TRACK": "1",
    "BENTOML_DO_NOT_TRACK": "true",
    "GX_ANALYTICS_ENABLED": "false",
}.items():
    os.environ.setdefault(key, value)


# Fixtures shared by the predict, serve and package tests: one small corpus, one trained tiny
# model and one real-world tree per session (smallcorpus memoises the first two across modules).


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from smallcorpus import shared_model

    return shared_model(tmp_path_factory)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from smallcorpus import shared_corpus

    return shared_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from realworld import build_realworld_tree

    return build_realworld_tree(tmp_path_factory.mktemp("realworld"))
