"""Fixtures for the whole suite: the MongoDB server the MongoDB tests run against."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.mongo import MONGODB_URI_VAR, MongoServer, MongoUnavailable, mongodb_unavailable, mongoeco_server

# Property tests: 2,000 examples per test in every run; HYPOTHESIS_PROFILE=long for a deeper search.
settings.register_profile("ci", max_examples=2_000, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("long", max_examples=50_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer | MongoUnavailable]:
    """JITPASS_TEST_MONGODB_URI when given (a real replica set, Atlas), else mongoeco started for this run."""
    given = os.environ.get(MONGODB_URI_VAR)
    if given:
        yield MongoServer(given, started_by_us=False)
        return
    try:
        with mongoeco_server() as server:
            yield server
    except MongoUnavailable as exc:
        yield exc  # each MongoDB test then skips (locally) or fails (CI) with this reason


@pytest.fixture(scope="session")
def mongo_standalone_server() -> Iterator[MongoServer | MongoUnavailable]:
    """mongoeco refusing transactions as a standalone mongod does (always local: a stand-in, not a given server)."""
    try:
        with mongoeco_server(standalone=True) as server:
            yield server
    except MongoUnavailable as exc:
        yield exc


def _uri(server: MongoServer | MongoUnavailable) -> str:
    if isinstance(server, MongoUnavailable):
        mongodb_unavailable(str(server))
        raise AssertionError("unreachable")
    return server.uri


@pytest.fixture
def mongodb_uri(mongo_server: MongoServer | MongoUnavailable) -> str:
    """The URI of the MongoDB server for this test."""
    return _uri(mongo_server)


@pytest.fixture
def mongodb_standalone_uri(mongo_standalone_server: MongoServer | MongoUnavailable) -> str:
    """The URI of a MongoDB server without transactions (development only in jitpass)."""
    return _uri(mongo_standalone_server)
