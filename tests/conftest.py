"""Fixtures every test gets."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _restore_umask() -> Iterator[None]:
    """CLI commands run in-process (click's CliRunner) set the umask to 077, as in their own process: the tests
    after them, and the processes those start, get the session's umask back."""
    umask = os.umask(0o077)
    os.umask(umask)
    yield
    os.umask(umask)
