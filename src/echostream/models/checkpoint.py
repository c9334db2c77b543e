"""Checkpoints: echostream's own format, and import of released ChunkFormer/WeNet folders.

Our format is one file, ``{"version", "config", "model", "vocab", "fbank"}``, so that loading needs
nothing else. A released folder (``config.yaml``, ``global_cmvn``, ``vocab.txt``,
``pytorch_model.bin``) is converted on load; every tensor in it is either loaded or knowingly
skipped, and a missing or misshapen tensor is an error naming it.

The attention decoder of a released folder (``decoder: transformer`` or ``bitransformer`` with its
``decoder_conf``; ``decoder_conf`` alone means ``transformer``, as in the reference) is loaded
like the encoder; only its positional tables ``decoder.*embed.1.pe`` are skipped (recomputed). A
config with neither ``decoder`` nor ``decoder_conf`` describes a CTC-only model: its ``decoder.*``
tensors, if any, cannot be checked against a shape and are skipped with a log line. The loss
weights come from ``model_conf`` (missing keys take the reference's defaults).
"""

from __future__ import annotations

import logging
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from echostream.atomic import save_atomically
from echostream.config import ConfigError, from_dict, to_dict
from echostream.encoders.chunkformer import ChunkFormerConfig
from echostream.frontend.cmvn import CMVNError, read_cmvn
from echostream.frontend.fbank import FbankConfig
from echostream.heads.attention_decoder import AttentionDecoderConfig, sinusoidal_positions
from echostream.heads.losses import LossConfig
from echostream.models.asr import ASRModel, ASRModelConfig
from echostream.models.build import build_model
from echostream.text.vocab import Vocabulary, VocabularyError

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""2: the encoder config carries its ``type`` and CMVN is the model's (``cmvn.*``). Version 1 files
(ChunkFormer only, CMVN under ``encoder.global_cmvn.*``) are migrated on load."""
RELEASED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.pt", "pytorch_model.ckpt")


class CheckpointError(ValueError):
    """A checkpoint or model folder that cannot be loaded."""


@dataclass(frozen=True)
class ModelBundle:
    """What a checkpoint holds: the network, its vocabulary and its front-end settings."""

    model: ASRModel
    vocab: Vocabulary
    fbank: FbankConfig

    @property
    def frame_seconds(self) -> float:
        """Seconds per encoder frame (80 ms for ChunkFormer's 8x subsampling of 10 ms features)."""
        return self.fbank.frame_shift_ms * self.model.encoder.subsampling / 1000.0  # type: ignore[no-any-return]

    @property
    def token_time_offset(self) -> float:
        """Where a token emitted at encoder frame j is placed after ``j * frame_seconds``: the
        centre of the audio that frame sees (82.5 ms for ChunkFormer's 15 feature frames)."""
        fbank, field = self.fbank, self.model.encoder.receptive_field
        return ((field - 1) * fbank.frame_shift_ms + fbank.frame_length_ms) / 2000.0  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------
# Released ChunkFormer folders

# encoder_conf keys that describe the network, by their echostream name
_ENCODER_FIELDS = {
    "output_size", "attention_heads", "linear_units", "num_blocks", "cnn_module_kernel",
    "cnn_module_norm", "activation_type", "macaron_style", "use_cnn_module", "dropout_rate",
    "positional_dropout_rate", "attention_dropout_rate",
}
# older ChunkFormer releases spell some keys and values differently
_OLD_KEY_NAMES = {"use_dynamic_conv": "dynamic_conv"}
_OLD_VALUES = {
    "input_layer": {"depthwise": "dw_striding"},
    "pos_enc_layer_type": {"stream_rel_pos": "chunk_rel_pos"},
    "selfattention_layer_type": {"stream_rel_selfattn": "chunk_rel_seflattn"},
}
# keys whose value is fixed by the architecture we implement
_REQUIRED_VALUES: dict[str, Any] = {
    "input_layer": "dw_striding",
    "pos_enc_layer_type": "chunk_rel_pos",
    "selfattention_layer_type": "chunk_rel_seflattn",
    "dynamic_conv": True,
    "causal": False,
    "normalize_before": True,
    "final_norm": True,
    "layer_norm_type": "layer_norm",
    "norm_eps": 1e-5,
}
# training-time options that do not change the network or inference
_TRAINING_ONLY = {
    "static_chunk_size", "use_dynamic_chunk", "use_dynamic_left_chunk", "gradient_checkpointing",
    "use_sdpa", "streaming", "dynamic_chunk_sizes", "dynamic_left_context_sizes",
    "dynamic_right_context_sizes",
}


def _encoder_config(conf: dict[str, Any], input_dim: int, where: str) -> ChunkFormerConfig:
    renamed = {}
    for key, value in conf.items():
        key = _OLD_KEY_NAMES.get(key, key)
        if isinstance(value, str) and key in _OLD_VALUES:
            value = _OLD_VALUES[key].get(value, value)
        renamed[key] = value
    values = _section_values(
        renamed, "encoder_conf", _ENCODER_FIELDS, _REQUIRED_VALUES, _TRAINING_ONLY, where
    )
    return _section_config(  # type: ignore[no-any-return]
        ChunkFormerConfig, {"type": ChunkFormerConfig.TYPE, "input_dim": input_dim, **values}, "encoder_conf", where
    )


def _section_values(
    conf: dict[str, Any],
    section: str,
    fields: set[str],
    required: dict[str, Any],
    ignored: set[str],
    where: str,
) -> dict[str, Any]:
    """The keys of a released config section that we use; a key with a value we do not implement,
    or a key we do not know, is an error naming it."""
    values: dict[str, Any] = {}
    for key, value in conf.items():
        if key in fields:
            values[key] = value
        elif key in required:
            if value != required[key]:
                raise CheckpointError(
                    f"{where}: {section}.{key}={value!r} is not supported "
                    f"(echostream implements {key}={required[key]!r})"
                )
        elif key not in ignored:
            raise CheckpointError(f"{where}: {section}.{key} is an unknown key")
    return values


def _section_config(cls: Any, values: dict[str, Any], section: str, where: str) -> Any:
    try:
        return from_dict(cls, values, f"{where}: {section}")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None


# decoder_conf keys that describe the network, by their echostream name
_DECODER_FIELDS = {
    "attention_heads", "linear_units", "num_blocks", "r_num_blocks", "activation_type",
    "dropout_rate", "positional_dropout_rate", "self_attention_dropout_rate",
    "src_attention_dropout_rate",
}
_DECODER_REQUIRED_VALUES: dict[str, Any] = {
    "input_layer": "embed",
    "use_output_layer": True,
    "normalize_before": True,
    "src_attention": True,
    "query_bias": True,
    "key_bias": True,
    "value_bias": True,
    "src_query_bias": True,
    "src_key_bias": True,
    "src_value_bias": True,
    "tie_word_embedding": False,
    "layer_norm_type": "layer_norm",
    "norm_eps": 1e-5,
    "n_kv_head": None,
    "head_dim": None,
    "mlp_type": "position_wise_feed_forward",
    "mlp_bias": True,
}
# training-time options, and mixture-of-experts sizes that position-wise feed-forward ignores
_DECODER_IGNORED = {"gradient_checkpointing", "use_sdpa", "n_expert", "n_expert_activated"}
_DECODER_TYPES = {"transformer": False, "bitransformer": True}  # -> bidirectional
# model_conf keys: echostream's loss weights, with the reference's defaults
_LOSS_DEFAULTS: dict[str, Any] = {
    "ctc_weight": 0.5, "reverse_weight": 0.0, "lsm_weight": 0.0, "length_normalized_loss": False,
}
_MODEL_REQUIRED_VALUES: dict[str, Any] = {"apply_non_blank_embedding": False}


def _decoder_config(conf: dict[str, Any], kind: Any, where: str) -> AttentionDecoderConfig:
    if kind not in _DECODER_TYPES:
        raise CheckpointError(
            f"{where}: decoder {kind!r} is not supported (only {', '.join(_DECODER_TYPES)})"
        )
    bidirectional = _DECODER_TYPES[kind]
    values = _section_values(
        conf, "decoder_conf", _DECODER_FIELDS, _DECODER_REQUIRED_VALUES, _DECODER_IGNORED, where
    )
    if not bidirectional:
        values.pop("r_num_blocks", None)  # the reference's transformer decoder ignores it too
    return _section_config(
        AttentionDecoderConfig, {"bidirectional": bidirectional, **values}, "decoder_conf", where
    )


def _loss_config(conf: dict[str, Any], where: str) -> LossConfig:
    values = _section_values(conf, "model_conf", set(_LOSS_DEFAULTS), _MODEL_REQUIRED_VALUES, set(), where)
    return _section_config(LossConfig, {**_LOSS_DEFAULTS, **values}, "model_conf", where)


def _section(conf: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    """``conf[key]`` as a mapping ({} when absent)."""
    value = conf.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: {key} must be a mapping, got {type(value).__name__}")
    return value


def _value(
    conf: dict[str, Any], key: str, kind: type, path: Path, prefix: str = "", default: Any = None
) -> Any:
    """``conf[key]`` checked to be a number of ``kind`` (ints are accepted for floats)."""
    value = conf.get(key, default)
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if not ok or isinstance(value, bool):
        raise CheckpointError(f"{path}: {prefix}{key} must be {kind.__name__}, got {value!r}")
    return kind(value)


def _released_cmvn_file(folder: Path) -> Path | None:
    """The CMVN statistics file a released config names, or None for ``cmvn: null``.

    WeNet configs name it in ``cmvn_conf.cmvn_file`` (a training path: only its file name is
    looked for in the folder); ``cmvn: null`` means features are not normalised. A config that
    says nothing about CMVN uses the folder's ``global_cmvn``, as released ChunkFormer folders do.
    """
    conf = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    if "cmvn" in conf and conf["cmvn"] is None:
        return None
    cmvn_conf = conf.get("cmvn_conf")
    name = cmvn_conf.get("cmvn_file") if isinstance(cmvn_conf, dict) else None
    return folder / (Path(name).name if isinstance(name, str) and name else "global_cmvn")


def _released_config(folder: Path) -> tuple[ASRModelConfig, FbankConfig]:
    path = folder / "config.yaml"
    try:
        conf: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no config.yaml in the model folder") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a text file (not UTF-8)") from None
    except yaml.YAMLError as err:
        raise CheckpointError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(conf, dict):
        raise CheckpointError(f"{path}: expected a mapping at the top level")
    if conf.get("model", "asr_model") != "asr_model":
        raise CheckpointError(f"{path}: model {conf['model']!r} is not supported (only asr_model)")
    if conf.get("encoder") != "chunkformer":
        raise CheckpointError(f"{path}: encoder {conf.get('encoder')!r} is not supported (only chunkformer)")
    for key in ("input_dim", "output_dim", "encoder_conf"):
        if key not in conf:
            raise CheckpointError(f"{path}: {key} is missing")
    input_dim = _value(conf, "input_dim", int, path)
    encoder = _encoder_config(_section(conf, "encoder_conf", path), input_dim, str(path))
    decoder = None
    if "decoder" in conf or "decoder_conf" in conf:
        decoder_conf = _section(conf, "decoder_conf", path)
        decoder = _decoder_config(decoder_conf, conf.get("decoder", "transformer"), str(path))
    loss = _loss_config(_section(conf, "model_conf", path), str(path))
    ctc_conf = _section(conf, "ctc_conf", path)
    fbank_conf = _section(conf, "fbank_conf", path)
    resample_conf = _section(conf, "resample_conf", path)
    try:
        model_cfg = ASRModelConfig(
            encoder=encoder,
            vocab_size=_value(conf, "output_dim", int, path),
            blank_id=_value(ctc_conf, "ctc_blank_id", int, path, "ctc_conf.", 0),
            decoder=decoder,
            loss=loss,
        )
        fbank = FbankConfig(
            num_mel_bins=_value(fbank_conf, "num_mel_bins", int, path, "fbank_conf.", input_dim),
            frame_length_ms=_value(fbank_conf, "frame_length", float, path, "fbank_conf.", 25.0),
            frame_shift_ms=_value(fbank_conf, "frame_shift", float, path, "fbank_conf.", 10.0),
            dither=0.0,
            energy_floor=0.0,
            sample_rate=_value(resample_conf, "resample_rate", int, path, "resample_conf.", 16000),
        )
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    if fbank.num_mel_bins != encoder.input_dim:
        raise CheckpointError(
            f"{path}: fbank_conf.num_mel_bins {fbank.num_mel_bins} != input_dim {encoder.input_dim}"
        )
    return model_cfg, fbank


# released prefix -> echostream prefix ("{}" stands for a layer index)
_ENCODER_PREFIXES = [
    ("encoder.global_cmvn.", "cmvn."),
    ("encoder.encoders.{}.", "encoder.layers.{}."),
    ("encoder.embed.conv.0.", "encoder.embed.conv_in."),
    ("encoder.embed.conv.2.", "encoder.embed.depthwise_1."),
    ("encoder.embed.conv.3.", "encoder.embed.pointwise_1."),
    ("encoder.embed.conv.5.", "encoder.embed.depthwise_2."),
    ("encoder.embed.conv.6.", "encoder.embed.pointwise_2."),
]
_BIDIRECTIONAL_DECODER_PREFIXES = [
    ("decoder.left_decoder.decoders.{}.", "decoder.l2r.layers.{}."),
    ("decoder.left_decoder.embed.0.", "decoder.l2r.embed."),
    ("decoder.left_decoder.", "decoder.l2r."),
    ("decoder.right_decoder.decoders.{}.", "decoder.r2l.layers.{}."),
    ("decoder.right_decoder.embed.0.", "decoder.r2l.embed."),
    ("decoder.right_decoder.", "decoder.r2l."),
]
_DECODER_PREFIXES = [
    ("decoder.decoders.{}.", "decoder.l2r.layers.{}."),
    ("decoder.embed.0.", "decoder.l2r.embed."),
    ("decoder.", "decoder.l2r."),
]

Prefixes = list[tuple[str, str]]


def _prefixes(cfg: ASRModelConfig) -> Prefixes:
    """Released <-> echostream name prefixes of a model shaped as ``cfg`` says."""
    if cfg.decoder is None:
        return _ENCODER_PREFIXES
    if cfg.decoder.bidirectional:
        return _ENCODER_PREFIXES + _BIDIRECTIONAL_DECODER_PREFIXES
    return _ENCODER_PREFIXES + _DECODER_PREFIXES


def _rename(name: str, to_ours: bool, prefixes: Prefixes) -> str:
    """A tensor name in the other naming (released <-> echostream)."""
    for released, ours in prefixes:
        source, target = (released, ours) if to_ours else (ours, released)
        pattern = re.escape(source).replace(re.escape("{}"), r"(\d+)")
        match = re.match(pattern, name)
        if match:
            return target.format(*match.groups()) + name[match.end() :]
    return name


# tensors of released checkpoints that echostream does not load, and why
_DECODER_PE_REASON = "decoder positional table (recomputed)"
_SKIPPED = [
    (re.compile(r"\.pos_enc\.pe$"), "positional table (recomputed)"),
    (re.compile(r"^decoder\.(.+\.)?embed\.1\.pe$"), _DECODER_PE_REASON),
]
_SKIPPED_WITHOUT_DECODER = (
    re.compile(r"^decoder\."),
    "attention decoder (config.yaml names no decoder/decoder_conf)",
)


def _check_positional_table(name: str, table: torch.Tensor, d_model: int, where: str) -> None:
    """A skipped decoder table must be what echostream recomputes (absolute sinusoids)."""
    if not isinstance(table, torch.Tensor) or table.dim() != 3 or table.shape[-1] != d_model:
        shape = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise CheckpointError(f"{where}: tensor {name!r} has shape {shape}, expected (1, N, {d_model})")
    expected = sinusoidal_positions(table.shape[1], d_model)
    # sin/cos of float32 arguments: the argument of position p is only known to about p * 2**-23,
    # and vectorised sin/cos differ between CPUs by that much (2e-4 at position 4850 seen here)
    position = torch.arange(table.shape[1], dtype=torch.float32).unsqueeze(1)  # (N, 1)
    tolerance = 1e-4 + position * 2.0**-21  # (N, 1)
    if not bool(((table[0].float() - expected).abs() <= tolerance).all()):
        raise CheckpointError(f"{where}: {name!r} is not the sinusoidal table echostream recomputes")


def _convert_released_weights(
    state: dict[str, torch.Tensor], model: ASRModel, where: str
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Rename released tensors to ours; returns the converted dict and counts of skipped ones."""
    expected = model.state_dict()
    prefixes = _prefixes(model.cfg)
    skip_rules = _SKIPPED if model.cfg.decoder is not None else [_SKIPPED_WITHOUT_DECODER, *_SKIPPED]
    converted: dict[str, torch.Tensor] = {}
    skipped: dict[str, int] = {}
    for name, tensor in state.items():
        reason = next((why for pattern, why in skip_rules if pattern.search(name)), None)
        if reason is not None:
            if reason == _DECODER_PE_REASON:
                _check_positional_table(name, tensor, model.cfg.encoder_dim, where)
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        ours = _rename(name, to_ours=True, prefixes=prefixes)
        if ours not in expected:
            raise CheckpointError(f"{where}: unexpected tensor {name!r}")
        converted[ours] = tensor
    return converted, skipped


def _check_and_load(
    model: ASRModel, state: dict[str, torch.Tensor], where: str, released: bool = False
) -> None:
    expected = model.state_dict()
    prefixes = _prefixes(model.cfg)
    for name, target in expected.items():
        shown = _rename(name, to_ours=False, prefixes=prefixes) if released else name
        if name not in state:
            raise CheckpointError(f"{where}: missing tensor {shown!r}")
        tensor = state[name]
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{where}: {shown!r} is not a tensor")
        if tensor.shape != target.shape:
            raise CheckpointError(
                f"{where}: tensor {shown!r} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{where}: tensor {shown!r} holds NaN or infinite values (a diverged run?)")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"{where}: unexpected tensor {extra[0]!r}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def _read_state_dict(path: Path) -> dict[str, Any]:
    """A torch file's dict, loaded with ``weights_only=True``; every failure is one line of ours."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror})") from None
    if not magic:
        raise CheckpointError(f"{path}: the checkpoint file is empty (0 bytes)")
    if not (magic.startswith(b"PK") or magic[:1] == b"\x80"):  # a zip archive, or a legacy pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise CheckpointError(
                f"{path}: holds Python objects other than tensors and plain containers "
                "(echostream loads weights only and never runs code from a checkpoint)"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (bad pickle data)") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt file
        if "zip archive" in str(err) or "central directory" in str(err):
            raise CheckpointError(f"{path}: a damaged or truncated PyTorch checkpoint (its zip archive cannot be read)") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def load_released_folder(folder: str | Path) -> ModelBundle:
    """Load a released ChunkFormer checkpoint folder."""
    folder = Path(folder)
    model_cfg, fbank = _released_config(folder)
    weights = next((folder / n for n in RELEASED_WEIGHTS if (folder / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{folder}: no {' / '.join(RELEASED_WEIGHTS)} in the model folder")
    state = _read_state_dict(weights)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        vocab = Vocabulary.from_file(folder / "vocab.txt")
    except VocabularyError as err:
        raise CheckpointError(str(err)) from None
    if len(vocab) != model_cfg.vocab_size:
        raise CheckpointError(
            f"{folder}: vocab.txt has {len(vocab)} tokens but output_dim is {model_cfg.vocab_size}"
        )
    model = build_model(model_cfg)
    converted, skipped = _convert_released_weights(state, model, str(weights))
    cmvn_names = ("cmvn.mean", "cmvn.istd")
    if not all(n in converted for n in cmvn_names):
        cmvn_file = _released_cmvn_file(folder)
        dim = model_cfg.input_dim
        if cmvn_file is None:  # cmvn: null - features are used as they are (the identity)
            mean, istd = np.zeros(dim, np.float32), np.ones(dim, np.float32)
        elif not cmvn_file.is_file():
            raise CheckpointError(
                f"{folder}: no CMVN: config.yaml names {cmvn_file.name}, which is not in the folder, "
                "and the weights hold no encoder.global_cmvn.* tensors (set cmvn: null for none)"
            )
        else:
            try:
                mean, istd = read_cmvn(cmvn_file)
            except CMVNError as err:
                raise CheckpointError(str(err)) from None
        converted[cmvn_names[0]] = torch.from_numpy(mean)
        converted[cmvn_names[1]] = torch.from_numpy(istd)
    _check_and_load(model, converted, str(weights), released=True)
    for reason, count in skipped.items():
        log.info("%s: skipped %d tensors: %s", weights, count, reason)
    return ModelBundle(model=model.eval(), vocab=vocab, fbank=fbank)


# ---------------------------------------------------------------------------------------------
# echostream's own checkpoint file


STORED_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
"""How :func:`save_checkpoint` may store the parameters (loading casts them back to the model's)."""


def save_checkpoint(path: str | Path, bundle: ModelBundle, *, weights: str = "fp32", **extra: Any) -> None:
    """Write ``bundle`` atomically: a crash mid-write never leaves a broken file at ``path``.

    ``weights="fp16"`` stores the floating-point parameters in half precision (half the file, for
    a model that ships); buffers such as CMVN stay as they are. Loading gives an fp32 model again.
    """
    path = Path(path)
    if weights not in STORED_DTYPES:
        raise CheckpointError(f"weights must be one of {', '.join(STORED_DTYPES)}, got {weights!r}")
    state = bundle.model.state_dict()
    if weights != "fp32":
        parameters = {name for name, _ in bundle.model.named_parameters()}
        state = {k: v.to(STORED_DTYPES[weights]) if k in parameters and v.is_floating_point() else v
                 for k, v in state.items()}
    payload = {
        "version": FORMAT_VERSION,
        "config": to_dict(bundle.model.cfg),
        "model": state,
        "vocab": list(bundle.vocab.tokens),
        "fbank": to_dict(bundle.fbank),
        **extra,
    }
    save_atomically(payload, path)


def load_checkpoint(path: str | Path) -> ModelBundle:
    """Load a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    payload = _read_state_dict(path)
    for key in ("version", "config", "model", "vocab", "fbank"):
        if key not in payload:
            raise CheckpointError(f"{path}: not an echostream checkpoint ({key!r} is missing)")
    version, config, state = payload["version"], payload["config"], payload["model"]
    if version == 1:
        config, state = _migrate_v1(config, state, path)
    elif version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version!r} is not supported (1 or {FORMAT_VERSION})")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'model' is not a state dict")
    try:
        model_cfg = from_dict(ASRModelConfig, config, f"{path}: config")
        fbank = from_dict(FbankConfig, payload["fbank"], f"{path}: fbank")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    vocab = Vocabulary(tuple(payload["vocab"]))
    if len(vocab) != model_cfg.vocab_size:
        raise CheckpointError(f"{path}: vocabulary has {len(vocab)} tokens, config says {model_cfg.vocab_size}")
    model = build_model(model_cfg)
    _check_and_load(model, state, str(path))
    return ModelBundle(model=model.eval(), vocab=vocab, fbank=fbank)


def _migrate_v1(config: Any, state: Any, path: Path) -> tuple[Any, Any]:
    """A version 1 checkpoint as version 2: its encoder was a ChunkFormer (the only one then),
    and CMVN moves from the encoder to the model."""
    if not isinstance(config, dict) or not isinstance(config.get("encoder"), dict):
        raise CheckpointError(f"{path}: config.encoder is missing")
    if "type" in config["encoder"]:
        raise CheckpointError(f"{path}: a version 1 checkpoint with an encoder type; it is damaged")
    config = {**config, "encoder": {"type": ChunkFormerConfig.TYPE, **config["encoder"]}}
    if isinstance(state, dict):
        state = {("cmvn." + k.removeprefix("encoder.global_cmvn.")) if k.startswith("encoder.global_cmvn.") else k: v
                 for k, v in state.items()}
    return config, state
