"""The framing decoders: whole frames back however the bytes are cut, every limit enforced, and
no input (hypothesis's) that makes them do anything but return frames or raise FramingError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.framing import (AutoDecoder, FramingError, NewlineDecoder, OctetDecoder, decoder,
                            newline_frame, octet_frame)

MAX = 64

messages = st.lists(st.binary(min_size=1, max_size=MAX).filter(lambda b: b"\n" not in b
                                                                and b[:1] not in b"\r"),
                    max_size=20)


def _cuts(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return out


def _decode(dec, chunks: list[bytes]) -> list[bytes]:
    frames = []
    for chunk in chunks:
        frames += dec.feed(chunk)
    dec.finish()
    return frames


@given(messages, st.lists(st.integers(min_value=0), max_size=10))
def test_octet_frames_come_back_however_cut(msgs, cuts):
    data = b"".join(octet_frame(m) for m in msgs)
    assert _decode(OctetDecoder(max_frame=MAX), _cuts(data, cuts)) == msgs


@given(messages, st.lists(st.integers(min_value=0), max_size=10))
def test_newline_frames_come_back_however_cut(msgs, cuts):
    msgs = [m for m in msgs if not m.endswith(b"\r")]
    data = b"".join(newline_frame(m) for m in msgs)
    assert _decode(NewlineDecoder(max_frame=MAX), _cuts(data, cuts)) == msgs


@given(st.lists(st.tuples(st.booleans(), st.binary(min_size=1, max_size=MAX)), max_size=20),
       st.lists(st.integers(min_value=0), max_size=10))
def test_auto_mixes_both_framings(items, cuts):
    # Newline frames must not start with a digit (that starts an octet-counted frame).
    msgs, data = [], b""
    for octet, m in items:
        if octet:
            msgs.append(m)
            data += octet_frame(m)
        else:
            m = b"<" + m.replace(b"\n", b" ").replace(b"\r", b" ")[:MAX - 1]
            msgs.append(m)
            data += newline_frame(m)
    assert _decode(AutoDecoder(max_frame=MAX), _cuts(data, cuts)) == msgs


@settings(max_examples=300)
@given(st.sampled_from(["newline", "octet", "auto"]), st.binary(max_size=400),
       st.lists(st.integers(min_value=0), max_size=8))
def test_garbage_only_ever_raises_framing_error(kind, data, cuts):
    dec = decoder(kind, max_frame=MAX)
    try:
        frames = []
        for chunk in _cuts(data, cuts):
            frames += dec.feed(chunk)
            assert dec.pending() <= MAX + len(str(MAX)) + 1   # memory stays bounded
        dec.finish()
    except FramingError:
        return
    assert all(len(f) <= MAX for f in frames)


def test_a_wrong_length_prefix_is_an_error():
    with pytest.raises(FramingError, match="prefix"):
        OctetDecoder(max_frame=MAX).feed(b"12x hello")
    with pytest.raises(FramingError, match="prefix"):
        OctetDecoder(max_frame=MAX).feed(b"05 hello")     # RFC 6587: no leading zero
    with pytest.raises(FramingError, match="over the limit"):
        OctetDecoder(max_frame=MAX).feed(b"65 " + b"x" * 65)


def test_a_half_frame_at_the_end_is_an_error():
    dec = OctetDecoder(max_frame=MAX)
    assert dec.feed(b"5 hel") == []
    with pytest.raises(FramingError, match="inside a frame"):
        dec.finish()


def test_a_stream_without_newlines_is_cut_at_the_limit():
    dec = NewlineDecoder(max_frame=MAX)
    assert dec.feed(b"x" * MAX) == []
    with pytest.raises(FramingError, match="no newline"):
        dec.feed(b"xx")
    with pytest.raises(FramingError):
        dec.feed(b"\n")          # a broken decoder stays broken


def test_limits_are_exact():
    assert OctetDecoder(max_frame=MAX).feed(octet_frame(b"y" * MAX)) == [b"y" * MAX]
    assert NewlineDecoder(max_frame=MAX).feed(b"y" * MAX + b"\r\n") == [b"y" * MAX]
