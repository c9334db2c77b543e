"""One rank of test_distributed.py, started by torchrun (not collected by pytest).

``python -m torch.distributed.run --nproc_per_node=2 ddp_worker.py OUT [CONFIG [EXP [--resume]]]``:

1. builds the tiny model of :func:`tiny_model`, wraps it as training does, computes the loss of
   this rank's half of :func:`fixed_batch` and back-propagates; saves the gradients to
   ``OUT/grad{rank}.pt``;
2. with CONFIG, runs ``echostream train --config CONFIG --out EXP [--resume]`` in this process
   (the command detects torchrun's environment and joins the group); EXP defaults to OUT/exp.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from echostream.encoders.base import ChunkContext
from echostream.encoders.chunkformer import ChunkFormerConfig
from echostream.heads.attention_decoder import AttentionDecoderConfig
from echostream.heads.losses import LossConfig
from echostream.models.asr import ASRModel, ASRModelConfig
from echostream.models.build import build_model
from echostream.training.distributed import (
    close_process_group,
    environment,
    init_process_group,
    training_device,
    wrap,
)

CONTEXT = ChunkContext(chunk=4, left=8, right=2)


def tiny_model() -> ASRModel:
    """Encoder + CTC + bidirectional decoder, no dropout, the same weights in every process."""
    torch.manual_seed(0)
    encoder = ChunkFormerConfig(
        input_dim=20,
        output_size=32,
        attention_heads=4,
        linear_units=64,
        num_blocks=2,
        cnn_module_kernel=7,
        dropout_rate=0.0,
        positional_dropout_rate=0.0,
        attention_dropout_rate=0.0,
    )
    decoder = AttentionDecoderConfig(
        attention_heads=4,
        linear_units=64,
        num_blocks=1,
        r_num_blocks=1,
        dropout_rate=0.0,
        positional_dropout_rate=0.0,
    )
    cfg = ASRModelConfig(
        encoder=encoder,
        vocab_size=10,
        decoder=decoder,
        loss=LossConfig(ctc_weight=0.3, reverse_weight=0.3),
    )
    return build_model(cfg).train()


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """4 utterances: features (4, 160, 20), lengths, targets (4, 5) padded with -1, lengths."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 160, 20, generator=g)
    x_lens = torch.tensor([160, 131, 97, 150])
    ys = torch.tensor([[2, 3, 4, 5, 6], [7, 8, 2, -1, -1], [3, 3, -1, -1, -1], [5, 4, 6, 2, -1]])
    return x, x_lens, ys, torch.tensor([5, 3, 2, 4])


def main(out: Path, config: str | None, exp: str | None, resume: bool) -> None:
    env = environment()
    device = training_device("cpu", env)
    init_process_group(env, device)
    model = tiny_model()
    module = wrap(model, env, device)
    x, x_lens, ys, ys_lens = fixed_batch()
    half = slice(2 * env.rank, 2 * env.rank + 2)
    parts = module(x[half], x_lens[half], ys[half], ys_lens[half], CONTEXT)
    parts["total"].backward()
    torch.save({n: p.grad for n, p in model.named_parameters()}, out / f"grad{env.rank}.pt")
    if config is not None:
        from echostream.cli.main import main as cli

        target = Path(exp) if exp is not None else out / "exp"
        code = cli(
            ["train", "--config", config, "--out", str(target), *(["--resume"] if resume else [])]
        )
        (target.parent / f"exit{env.rank}").write_text(str(code))
    # as torch.distributed asks: left to interpreter shutdown, gloo's threads can abort the
    # process after its work is done (seen once in CI: "terminate called without an active exception")
    close_process_group()


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        Path(args[0]),
        args[1] if len(args) > 1 else None,
        args[2] if len(args) > 2 else None,
        "--resume" in args[3:],
    )
