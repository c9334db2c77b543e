"""Every mask of echostream is built here.

Polarity is always ``True = attend/keep`` (as in ``torch.nn.functional.scaled_dot_product_attention``).

Shape legend:
    N  chunks in a masked batch (all chunks of all utterances, flattened)
    C  chunk size, L left context, R right context (encoder frames)
    K  half the convolution kernel (frames of left/right reach)
    S  segments (Emformer), M memory vectors per segment
    B  sequences in a batch, U tokens (attention decoder), T' encoder frames
"""

from __future__ import annotations

import torch
from torch import Tensor


def lengths_to_valid_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Boolean mask of the valid frames of a padded batch.

    Args:
        lengths: (B,) valid lengths.
        max_len: padded length T; defaults to ``lengths.max()``.
    Returns:
        valid_mask: (B, T), True on frames ``t < lengths[b]``.

    >>> lengths_to_valid_mask(torch.tensor([1, 3]), 4).int()
    tensor([[1, 0, 0, 0],
            [1, 1, 1, 0]], dtype=torch.int32)
    """
    if max_len is None:
        max_len = int(lengths.max().item()) if lengths.numel() else 0
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(-1)


def chunk_attn_mask(
    chunk_index: Tensor, end: Tensor, *, chunk: int, left: int, right: int
) -> Tensor:
    """Which keys of each chunk's [left, chunk, right] window may be attended.

    Key ``p`` of chunk ``k`` is absolute frame ``k * chunk - left + p``; it is valid when it lies in
    ``[0, end)``: not before the utterance start and not past the last frame known.

    Args:
        chunk_index: (N,) absolute index k of each chunk within its utterance.
        end: (N,) number of valid frames of the chunk's utterance (known so far).
    Returns:
        attn_mask: (N, left + chunk + right).

    >>> chunk_attn_mask(torch.tensor([0, 1, 2]), torch.tensor([5, 5, 5]), chunk=2, left=2, right=1).int()
    tensor([[0, 0, 1, 1, 1],
            [1, 1, 1, 1, 1],
            [1, 1, 1, 0, 0]], dtype=torch.int32)
    """
    window = left + chunk + right
    pos = chunk_index.unsqueeze(-1) * chunk - left + torch.arange(window, device=end.device)
    return (pos >= 0) & (pos < end.unsqueeze(-1))  # (N, W)


def chunk_conv_mask(
    chunk_index: Tensor, end: Tensor, *, chunk: int, right: int, reach: int
) -> Tensor:
    """Which inputs of each chunk's depthwise-convolution window may be used.

    The window of chunk ``k`` covers absolute frames ``[k*chunk - reach, (k+1)*chunk + reach)``.
    A frame is usable when it lies in ``[0, end)`` and no further right than ``right`` frames past
    the chunk (the convolution never sees more future than the attention does).

    Args:
        chunk_index: (N,) absolute chunk index k.
        end: (N,) valid frames of the chunk's utterance (known so far).
    Returns:
        conv_mask: (N, chunk + 2 * reach).

    >>> chunk_conv_mask(torch.tensor([0, 1]), torch.tensor([4, 4]), chunk=2, right=1, reach=2).int()
    tensor([[0, 0, 1, 1, 1, 0],
            [1, 1, 1, 1, 0, 0]], dtype=torch.int32)
    """
    window = chunk + 2 * reach
    start = chunk_index.unsqueeze(-1) * chunk
    pos = start - reach + torch.arange(window, device=end.device)
    limit = torch.minimum(end.unsqueeze(-1), start + chunk + right)
    return (pos >= 0) & (pos < limit)  # (N, C + 2K)


def emformer_attn_mask(index: Tensor, remaining: Tensor, *, chunk: int, left: int, right: int, memory: int) -> Tensor:
    """Which keys each Emformer query may attend to, per segment.

    Queries are [right-context block (R), segment (C), summary (1)]; keys are [memory (M), left
    context (L), segment (C), block (R)]. Block and segment queries see every key that exists:
    the memories of segments ``index - M .. index - 1`` (none before the first), the left frames
    from frame 0 on, and the segment and block frames before the stream's end. The summary sees
    its segment and block only.

    Args:
        index: (S,) segment number in its stream; remaining: (S,) frames of the stream from the
            segment's first frame on (known so far; later rows are masked).
    Returns:
        mask: (S, R + C + 1, M + L + C + R), True = may attend.

    >>> emformer_attn_mask(torch.tensor([0]), torch.tensor([3]), chunk=2, left=1, right=1, memory=1).int()
    tensor([[[0, 0, 1, 1, 1],
             [0, 0, 1, 1, 1],
             [0, 0, 1, 1, 1],
             [0, 0, 1, 1, 1]]], dtype=torch.int32)
    """
    device = index.device
    start = (index * chunk).view(-1, 1)  # (S, 1) first frame of each segment
    memories = (index.view(-1, 1) - memory + torch.arange(memory, device=device)) >= 0  # (S, M)
    lefts = (start - left + torch.arange(left, device=device)) >= 0  # (S, L)
    own = torch.arange(chunk + right, device=device) < remaining.view(-1, 1)  # (S, C + R)
    keys = torch.cat([memories, lefts, own], dim=1)  # (S, K)
    mask = keys.unsqueeze(1).repeat(1, right + chunk + 1, 1)
    mask[:, -1, : memory + left] = False
    return mask


def causal_attn_mask(length: int, device: torch.device | str | None = None) -> Tensor:
    """Which earlier positions each position of a left-to-right sequence may attend.

    Returns:
        attn_mask: (U, U), True where key ``j <=`` query ``i``.

    >>> causal_attn_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    """
    position = torch.arange(length, device=device)
    return position.unsqueeze(0) <= position.unsqueeze(1)  # (U, U)


def decoder_self_attn_mask(token_lens: Tensor, max_len: int | None = None) -> Tensor:
    """Self-attention mask of an attention decoder over padded token sequences.

    A query attends to the keys at or before it that are not padding.

    Args:
        token_lens: (B,) valid tokens of each sequence (``<sos>`` included).
        max_len: padded length U; defaults to ``token_lens.max()``.
    Returns:
        attn_mask: (B, U, U).

    >>> decoder_self_attn_mask(torch.tensor([2, 3]), 3).int()
    tensor([[[1, 0, 0],
             [1, 1, 0],
             [1, 1, 0]],
    <BLANKLINE>
            [[1, 0, 0],
             [1, 1, 0],
             [1, 1, 1]]], dtype=torch.int32)
    """
    valid = lengths_to_valid_mask(token_lens, max_len)  # (B, U)
    causal = causal_attn_mask(valid.shape[1], device=token_lens.device)  # (U, U)
    return valid.unsqueeze(1) & causal.unsqueeze(0)  # (B, U, U)


def cross_attn_mask(memory_lens: Tensor, max_len: int | None = None) -> Tensor:
    """Which encoder frames decoder queries may attend (every query sees the same frames).

    Args:
        memory_lens: (B,) valid encoder frames.
        max_len: padded length T'; defaults to ``memory_lens.max()``.
    Returns:
        attn_mask: (B, 1, T'), broadcasting over the queries.

    >>> cross_attn_mask(torch.tensor([1, 3]), 3).int()
    tensor([[[1, 0, 0]],
    <BLANKLINE>
            [[1, 1, 1]]], dtype=torch.int32)
    """
    return lengths_to_valid_mask(memory_lens, max_len).unsqueeze(1)  # (B, 1, T')
