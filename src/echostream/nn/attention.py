"""Chunked multi-head self-attention with relative positions and learned u/v biases.

Shape legend:
    N  chunks (of all utterances, flattened)   C  chunk size (queries per chunk)
    W  window = left + chunk + right (keys per chunk)
    P  relative positions = 2 * C + left + right - 1
    H  heads, Dh head dim, D = H * Dh
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def relative_shift(scores: Tensor, window: int) -> Tensor:
    """Turn query-by-distance scores into query-by-key scores.

    ``scores[..., i, r]`` scores query ``i`` against distance row ``r`` of
    :func:`echostream.nn.positional.relative_position_table`; key ``j`` of the window is at row
    ``j + C - 1 - i``.

    Args:
        scores: (N, H, C, P), contiguous.
    Returns:
        shifted: (N, H, C, W), a view.

    Row ``i`` of the result starts ``C - 1 - i`` rows into row ``i`` of the scores, i.e. at flat
    offset ``i * (P - 1) + C - 1``: a slice and a reshape of the flat scores (no ``as_strided``,
    which neither the ONNX exporter nor ``torch.compile`` can follow).

    >>> s = torch.arange(6.0).view(1, 1, 2, 3)  # C=2, P=3 -> W=2 (left=right=0)
    >>> relative_shift(s, 2)[0, 0]
    tensor([[1., 2.],
            [3., 4.]])
    """
    c, p = scores.shape[-2], scores.shape[-1]
    if c == 1:  # one query: distance row j is key j
        return scores[..., :window]
    flat = scores.contiguous().flatten(-2)  # (N, H, C * P)
    return flat[..., c - 1 : c - 1 + c * (p - 1)].unflatten(-1, (c, p - 1))[..., :window]  # (N, H, C, W)


class ChunkRelPositionAttention(nn.Module):
    """Self-attention of each chunk's queries over its [left, chunk, right] key window.

    Scores are ``((q + u) k^T + shift((q + v) p^T)) / sqrt(Dh)`` (Transformer-XL), where ``p``
    projects the relative-position table.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by attention_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(num_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.empty(num_heads, self.head_dim))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def key_values(self, x: Tensor) -> Tensor:
        """Keys and values of frames, stacked for caching.

        x: (*, T, D) normalised layer input -> (*, T, H, 2 * Dh), keys then values per head.
        """
        k = self.linear_k(x).unflatten(-1, (self.num_heads, self.head_dim))  # (*, T, H, Dh)
        v = self.linear_v(x).unflatten(-1, (self.num_heads, self.head_dim))  # (*, T, H, Dh)
        return torch.cat([k, v], dim=-1)  # (*, T, H, 2Dh)

    def forward(self, x: Tensor, kv_windows: Tensor, pos_table: Tensor, attn_mask: Tensor) -> Tensor:
        """Attend each chunk's queries over its key window.

        Args:
            x: (N, C, D) normalised layer input of the query chunks.
            kv_windows: (N, W, H, 2Dh) keys/values of each chunk's window.
            pos_table: (P, D) relative-position encodings of this chunk setting.
            attn_mask: (N, W) True where a key may be attended.
        Returns:
            out: (N, C, D)
        """
        n, c, d = x.shape
        w = kv_windows.shape[1]
        q = self.linear_q(x).view(n, c, self.num_heads, self.head_dim)  # (N, C, H, Dh)
        k, v = kv_windows.transpose(1, 2).split(self.head_dim, dim=-1)  # (N, H, W, Dh) each
        p = self.linear_pos(pos_table).view(-1, self.num_heads, self.head_dim)  # (P, H, Dh)
        q_u = (q + self.pos_bias_u).transpose(1, 2)  # (N, H, C, Dh)
        q_v = (q + self.pos_bias_v).transpose(1, 2)  # (N, H, C, Dh)
        bd = relative_shift(torch.matmul(q_v, p.permute(1, 2, 0)), w)  # (N, H, C, W)
        bias = (bd / math.sqrt(self.head_dim)).masked_fill(
            ~attn_mask[:, None, None, :], float("-inf")
        )  # (N, H, C, W)
        out = F.scaled_dot_product_attention(
            q_u, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0,
            scale=1.0 / math.sqrt(self.head_dim),
        )  # (N, H, C, Dh)
        return self.linear_out(out.transpose(1, 2).reshape(n, c, d))  # (N, C, D)
