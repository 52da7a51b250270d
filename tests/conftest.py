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


@pytest.fixture(scope="session")
def tree(tmp_path_factory):
    """The real-world tree, written once per session by a fresh interpreter.

    Why a child process: the tree is written by native encoders (x264, x265, libvpx, FFV1,
    Pillow) and CI once died of a SIGSEGV while the tree was rebuilt inside a pytest process
    that by then also held torch's thread pools and DVCLive's and Prefect's threads. A fresh
    interpreter is the clean process these encoders are written for, and a crash there is a
    failed build with its own stderr rather than the end of the whole suite. Tests only read
    the tree (test_release copies it first), so one build serves every module.
    """
    from realworld import build_realworld_tree_in_child

    return build_realworld_tree_in_child(tmp_path_factory.mktemp("realworld"))
