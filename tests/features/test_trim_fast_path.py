"""The validator's trim shortcut (``may_need_trim``) against Arrow's trim itself.

``_Source`` skips ``pc.utf8_trim_whitespace`` on a text column when no string starts or ends
with a byte that whitespace can start or end with. Slow twin: trimming anyway. Property
(hypothesis): whenever the shortcut says "no trim needed", the trimmed column equals the
column, for random text over ASCII controls, spaces, Unicode spaces and letters, split into
random chunks and sliced.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from partnerscore.features.validate import may_need_trim

ALPHABET = st.sampled_from(
    [chr(c) for c in range(0, 0x21)]
    + ["a", "Z", "0", "-", ":", "é", "ü", "中", "\x85", "\xa0", "\u1680", "\u2003", "\u2028"]
    + ["\u202f", "\u205f", "\u3000", "\ufeff", "\u200b"]
)


def chunked(strings: list[str], cuts: list[int], start: int) -> pa.ChunkedArray:
    """``strings`` as an Arrow string column in pieces at ``cuts``, the first ``start`` dropped
    by slicing (non-zero chunk offsets)."""
    bounds = sorted({0, len(strings), *(c % (len(strings) + 1) for c in cuts)})
    chunks = [pa.array(strings[a:b], pa.string()) for a, b in zip(bounds, bounds[1:], strict=False)]
    column = pa.chunked_array(chunks or [pa.array([], pa.string())], pa.string())
    return column.slice(min(start, len(column)))


@settings(max_examples=400, deadline=None)
@given(
    strings=st.lists(st.text(ALPHABET, max_size=6), max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=4),
    start=st.integers(0, 5),
)
def test_property_no_trim_needed_means_trimming_changes_nothing(strings, cuts, start):
    column = chunked(strings, cuts, start)
    trimmed = pc.utf8_trim_whitespace(column)
    if not may_need_trim(column):
        assert trimmed.equals(column)
    if not trimmed.equals(column):  # the contrapositive, stated for the counterexamples
        assert may_need_trim(column)


def test_padded_cells_are_found_in_any_chunk_and_plain_ones_are_not():
    plain = pa.chunked_array([["P001", "2026-01-01 09:00:00"], ["won", ""]])
    assert not may_need_trim(plain)
    assert may_need_trim(pa.chunked_array([["P001"], ["won "]]))
    assert may_need_trim(pa.chunked_array([["P001"], ["\u00a0won"]]))
    assert may_need_trim(pa.chunked_array([["\tP001"]]).slice(0))
    assert not may_need_trim(pa.chunked_array([[" x", "P001"]]).slice(1))


def test_every_character_arrow_trims_is_caught_at_either_end():
    """Exhaustive over Unicode: each code point that ``utf8_trim_whitespace`` removes from the
    start or end of a string makes ``may_need_trim`` say yes."""
    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for text in ([chr(c) + "x" for c in points], ["x" + chr(c) for c in points]):
        column = pa.chunked_array([pa.array(text, pa.string())])
        changed = pc.not_equal(pc.utf8_trim_whitespace(column), column).to_numpy(
            zero_copy_only=False
        )
        hits = [text[i] for i in changed.nonzero()[0]]
        assert len(hits) >= 20  # tab .. space, U+0085, U+00A0, U+2000.., U+3000
        for cell in hits:
            assert may_need_trim(pa.chunked_array([[cell]])), repr(cell)
