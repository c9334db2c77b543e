"""Write a released-format ChunkFormer folder with random weights, made by the reference package.

Runs in the reference venv (``benchmarks/reference/setup.sh``), with this folder on PYTHONPATH for
the torchaudio stub:

    PYTHONPATH=benchmarks/reference .venv-reference/bin/python benchmarks/reference/make_model.py \
        OUT_DIR --cmvn GLOBAL_CMVN [--shape large] [--seed 0]

The reference builds the model from ``config.yaml`` and saves its own ``state_dict``, so that the
folder is exactly what ``ChunkFormerModel.from_pretrained`` loads, and echostream imports it as a
released folder: both sides run the same weights. Shapes: ``large`` is ChunkFormer-large (17
blocks, d=512, 8 heads, FFN 2048, vocabulary 6992); ``tiny`` (3 blocks, d=128) is for tests.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
import yaml

SHAPES = {
    "large": {"output_size": 512, "attention_heads": 8, "linear_units": 2048, "num_blocks": 17, "vocab": 6992},
    "tiny": {"output_size": 128, "attention_heads": 4, "linear_units": 512, "num_blocks": 3, "vocab": 64},
}


def config(shape: str) -> dict:
    s = SHAPES[shape]
    return {
        "model": "asr_model",
        "input_dim": 80,
        "output_dim": s["vocab"],
        "encoder": "chunkformer",
        "encoder_conf": {
            "output_size": s["output_size"], "attention_heads": s["attention_heads"],
            "linear_units": s["linear_units"], "num_blocks": s["num_blocks"], "input_layer": "dw_striding",
            "cnn_module_kernel": 15, "activation_type": "swish", "pos_enc_layer_type": "chunk_rel_pos",
            "selfattention_layer_type": "chunk_rel_seflattn", "cnn_module_norm": "layer_norm",
            "dynamic_conv": True, "normalize_before": True, "macaron_style": True, "use_cnn_module": True,
            "causal": False, "dropout_rate": 0.0, "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0,
        },
        "decoder": "bitransformer",
        "decoder_conf": {
            "attention_heads": s["attention_heads"], "linear_units": s["linear_units"], "num_blocks": 1,
            "r_num_blocks": 1, "dropout_rate": 0.0, "positional_dropout_rate": 0.0,
            "self_attention_dropout_rate": 0.0, "src_attention_dropout_rate": 0.0,
        },
        "ctc_conf": {"ctc_blank_id": 0},
        "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.1, "length_normalized_loss": False, "reverse_weight": 0.3},
        "fbank_conf": {"num_mel_bins": 80, "frame_length": 25, "frame_shift": 10, "dither": 0.0},
        "resample_conf": {"resample_rate": 16000},
        "cmvn": "global_cmvn",
        "cmvn_conf": {"cmvn_file": "global_cmvn", "is_json_cmvn": True},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write (config.yaml, global_cmvn, vocab.txt, pytorch_model.bin)")
    parser.add_argument("--cmvn", type=Path, required=True, help="a JSON global_cmvn file of 80 bins to use")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="large")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from chunkformer.chunkformer_model import ChunkFormerConfig, ChunkFormerModel

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    conf = config(args.shape)
    (out / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    shutil.copyfile(args.cmvn, out / "global_cmvn")
    tokens = ["<blank>", "<unk>"] + [f"\u2581t{i}" for i in range(2, conf["output_dim"] - 1)] + ["<sos/eos>"]
    (out / "vocab.txt").write_text("".join(f"{t} {i}\n" for i, t in enumerate(tokens)))
    torch.manual_seed(args.seed)
    model = ChunkFormerModel(ChunkFormerConfig.from_dict({**conf, "cmvn_file": str(out / "global_cmvn")}))
    torch.save(model.model.state_dict(), out / "pytorch_model.bin")
    params = sum(p.numel() for p in model.model.parameters()) / 1e6
    print(f"wrote {out} ({args.shape}, {params:.1f} M parameters, seed {args.seed})")


if __name__ == "__main__":
    main()
