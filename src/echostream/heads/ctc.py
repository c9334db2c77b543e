"""CTC output layer and greedy CTC decoding.

Shape legend: B batch, T' encoder frames, D model dim, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


class CTCHead(nn.Module):
    """Linear projection to the vocabulary, log-softmax over it.

    x: (B, T', D) -> (B, T', V) log-probabilities.
    """

    def __init__(self, d_model: int, vocab_size: int, blank_id: int = 0) -> None:
        super().__init__()
        self.ctc_lo = nn.Linear(d_model, vocab_size)
        self.blank_id = blank_id

    def forward(self, x: Tensor) -> Tensor:
        return torch.log_softmax(self.ctc_lo(x), dim=-1)  # (B, T', V)


@dataclass(frozen=True)
class CTCAlignment:
    """Best path of one utterance: per-frame labels and the emitted tokens with their frames."""

    frame_labels: list[int]  # (T',) argmax label of every frame, blanks included
    tokens: list[int]  # emitted token ids (repeats merged, blanks removed)
    token_frames: list[int]  # frame index at which each token starts


def collapse_ctc(
    frame_labels: list[int], blank_id: int = 0, start_frame: int = 0, previous: int | None = None
) -> CTCAlignment:
    """Merge repeats and drop blanks of a best path.

    ``previous`` is the label of the frame just before ``frame_labels`` when the path continues
    one cut earlier (a repeat of it is merged, not emitted again).

    >>> a = collapse_ctc([0, 3, 3, 0, 3, 5, 5, 0])
    >>> a.tokens, a.token_frames
    ([3, 3, 5], [1, 4, 5])
    """
    tokens: list[int] = []
    frames: list[int] = []
    previous = blank_id if previous is None else previous
    for t, label in enumerate(frame_labels):
        if label != blank_id and label != previous:
            tokens.append(label)
            frames.append(start_frame + t)
        previous = label
    return CTCAlignment(frame_labels=list(frame_labels), tokens=tokens, token_frames=frames)


def greedy_labels(log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
    """Argmax label per frame: (B, T', V), (B,) -> B lists of T'_b labels."""
    best = log_probs.argmax(dim=-1)  # (B, T')
    return [best[b, : int(n)].tolist() for b, n in enumerate(lengths.tolist())]
