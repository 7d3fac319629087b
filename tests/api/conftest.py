"""Fixtures shared by the API tests."""

from __future__ import annotations

import pytest

from litmus.api import fastlane


@pytest.fixture
def known_answers(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """[how many requests the fast lane's code answered from a known head]: a spy that calls
    the real _Connection.take_known and counts the reads it answered."""
    hits = [0]
    real = fastlane._Connection.take_known

    def spy(self: fastlane._Connection, data: bytes) -> bool:
        took = real(self, data)
        hits[0] += took
        return took

    monkeypatch.setattr(fastlane._Connection, "take_known", spy)
    return hits
