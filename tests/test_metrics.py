"""Metric labels stay bounded whatever the input; the gateway's counts match its answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from adfunnel import metrics
from adfunnel.ingest import triage
from adfunnel.tools.generator import Generator


def test_a_reason_is_labelled_by_the_field_it_names() -> None:
    assert metrics.reason_label("data.user.age: must be >= 0") == "data.user.age"
    assert metrics.reason_label("eventType: 'x' is not one of a, b") == "eventType"
    assert metrics.reason_label("event: must be a JSON object, not list") == "event"


def test_a_reason_without_a_sane_field_path_is_other() -> None:
    assert metrics.reason_label("") == "other"
    assert metrics.reason_label("something went wrong: badly") == "other"
    assert metrics.reason_label("x" * 65 + ": long") == "other"


@given(st.text(max_size=200))
def test_reason_labels_come_from_a_bounded_alphabet(reason: str) -> None:
    label = metrics.reason_label(reason)
    assert label == "other" or (len(label) <= 64 and set(label) <= metrics._REASON_CHARS)


@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=20),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
)
def test_a_claimed_source_is_one_of_the_known_ones_or_unknown(claimed: object) -> None:
    assert metrics.source_label(claimed) in {"facebook", "tiktok", "unknown"}


def test_accepted_by_source_counts_repeats_like_the_answer_does() -> None:
    generator = Generator(seed=4)
    events = generator.batch(500)
    events += events[:30]  # repeated in the same request: accepted, counted, not re-sent
    events.append(generator.corrupt(generator.event(), "invalid_gender"))
    sorted_out = triage(events)
    by_source = sorted_out.accepted_by_source()
    assert sum(by_source.values()) == sorted_out.accepted_count == 530
    assert sorted_out.repeated == 30
    expected = {"facebook": 0, "tiktok": 0}
    for event in events[:530]:
        expected[event["source"]] += 1
    assert dict(by_source) == {k: v for k, v in expected.items() if v}
