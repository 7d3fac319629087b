"""Segment attributes' check: the shortcut for names seen before answers exactly as the full
checks, whatever the input and whichever names were seen."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from litmus.api.attributes import _checked_text, attributes_text

_values = (st.sampled_from(["DE", "", "x" * 128, "x" * 129, "a\x00b", "ios"]) | st.text(max_size=4)
           | st.integers() | st.floats() | st.booleans() | st.none() | st.lists(st.text(), max_size=2))
_keys = st.sampled_from(["country", "device", "Country", "", "9lives", "a" * 64, "a" * 65, "é"])


@settings(max_examples=600, deadline=None)
@given(raw=st.dictionaries(_keys, _values, max_size=7) | st.none() | st.lists(st.text(), max_size=2)
       | st.text(max_size=3), warm=st.lists(_keys, max_size=4))
def test_the_shortcut_answers_as_the_full_checks(raw: Any, warm: list[str]) -> None:
    for key in warm:  # names seen (or refused) before: the cache never holds a bad one
        _checked_text({key: "x"})
    assert attributes_text(raw) == _checked_text(raw)
    assert attributes_text(raw) == _checked_text(raw)  # and once the names are known


def test_an_object_seen_before_is_not_confused_with_a_look_alike() -> None:
    """The texts of objects already checked are reused; an object equal to one of them but
    for a value that is no string is still refused."""
    assert attributes_text({"country": "DE", "tier": "1"}) == ('{"country":"DE","tier":"1"}', None)
    assert attributes_text({"country": "DE", "tier": "1"}) == ('{"country":"DE","tier":"1"}', None)
    for look_alike in ({"country": "DE", "tier": 1}, {"country": "DE", "tier": True},
                       {"country": "DE", "tier": ["1"]}, {"country": "DE", "tier": {"1": 1}}):
        text, why = attributes_text(look_alike)
        assert text is None and why is not None and why == _checked_text(look_alike)[1]
    # The order of the keys is the text's order: both orders are stored as sent.
    assert attributes_text({"tier": "1", "country": "DE"})[0] == '{"tier":"1","country":"DE"}'
