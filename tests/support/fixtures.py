"""Pytest fixtures around the fake upstream DNS server (loaded via ``pytest_plugins``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fakedns import FakeAuthority


@pytest.fixture
def fake_dns() -> Iterator[FakeAuthority]:
    """A started ``FakeAuthority`` on 127.0.0.1 (``.host``/``.port``), stopped afterwards."""
    authority = FakeAuthority()
    authority.start()
    try:
        yield authority
    finally:
        authority.stop()
