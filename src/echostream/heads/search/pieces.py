"""Where long-form decoding cuts the CTC frames of an utterance into pieces.

Prefix beam search and attention rescoring decode a long utterance piece by piece, so that the
frames, the beams and the decoder's cross-attention held at once stay bounded whatever the
duration. A piece ends where its best path has had ``silence_frames`` blank frames in a row after
a token (the pause that also ends a transcript segment), or at ``max_frames`` frames; a capped
piece is cut after its last blank frame in its second half when there is one, so as not to split
a token's frames.
"""

from __future__ import annotations

from collections.abc import Sequence


def piece_end(
    labels: Sequence[int], *, blank_id: int, silence_frames: int, max_frames: int
) -> int | None:
    """Frames of the first piece of ``labels`` (best-path label per pending frame), or None if
    the frames so far do not close a piece.

    >>> piece_end([0, 3, 0, 0, 4], blank_id=0, silence_frames=2, max_frames=10)
    4
    >>> piece_end([0, 0, 0, 3, 0], blank_id=0, silence_frames=2, max_frames=10) is None
    True
    >>> piece_end([3, 0, 4, 4, 5, 5], blank_id=0, silence_frames=2, max_frames=6)
    6
    >>> piece_end([3, 4, 4, 0, 5, 5], blank_id=0, silence_frames=2, max_frames=6)
    4
    """
    if silence_frames < 1 or max_frames < 1:
        raise ValueError("silence_frames and max_frames must be positive")
    seen_token = False
    run = 0
    for i, label in enumerate(labels[:max_frames]):
        if label == blank_id:
            run += 1
        else:
            seen_token, run = True, 0
        if seen_token and run == silence_frames:
            return i + 1
    if len(labels) < max_frames:
        return None
    half = max_frames // 2
    blanks = [i for i in range(half, max_frames) if labels[i] == blank_id]
    return blanks[-1] + 1 if blanks else max_frames
