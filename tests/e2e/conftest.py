"""Fixtures shared by the end-to-end suites."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.app import FakeClock
from tests.support.fake_connector import FakeConnector


@pytest.fixture
async def connector() -> AsyncIterator[FakeConnector]:
    """A local Bot Connector stand-in, for activities whose serviceUrl points at it."""
    fake = await FakeConnector().start()
    yield fake
    await fake.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
