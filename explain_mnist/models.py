"""Model files: shipped names, the reader for each file type, and the source framework's own evaluation.

A model argument is a shipped name (``twoclass``, ``multiclass``, ``cnn_simple``:
``models/<name>.keras``) or a path. The reader is chosen by the file's suffix from
`MODEL_READERS`; the ONNX reader is added by `explain_mnist.onnx_io`.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np

from explain_mnist.data import REPO_ROOT
from explain_mnist.errors import UserError
from explain_mnist.network import Network

MODELS_DIR = REPO_ROOT / "models"
SHIPPED_MODELS = ("twoclass", "multiclass", "cnn_simple")

# suffix -> (module, reader function, reference evaluation function)
MODEL_READERS = {
    ".keras": ("explain_mnist.keras_io", "read_keras", "reference_logits"),
    ".h5": ("explain_mnist.keras_io", "read_keras", "reference_logits"),
    ".onnx": ("explain_mnist.onnx_io", "read_onnx", "reference_logits"),
}


def resolve_model_path(model: str) -> Path:
    """Return the file a model argument names (shipped name or path)."""
    if model in SHIPPED_MODELS:
        return MODELS_DIR / f"{model}.keras"
    return Path(model).expanduser()


def _reader(path: Path):
    entry = MODEL_READERS.get(path.suffix.lower())
    if entry is None:
        raise UserError(f"model {path}: unknown file type {path.suffix or '(none)'}; supported: "
                        f"{', '.join(MODEL_READERS)} or a shipped name ({', '.join(SHIPPED_MODELS)})")
    return importlib.import_module(entry[0]), entry


def load_network(model: str) -> Network:
    """Return the `Network` of a shipped model name or a model file."""
    path = resolve_model_path(model)
    if not path.is_file():
        hint = "run `make models` to train it" if model in SHIPPED_MODELS else "check the path"
        raise UserError(f"model file {path} not found; {hint}")
    module, entry = _reader(path)
    try:
        net = getattr(module, entry[1])(path)
    except (ValueError, TypeError) as exc:
        raise UserError(f"model {path} cannot be turned into an affine/ReLU network: {exc}") from None
    net.meta["path"] = str(path)
    card = path.with_suffix(".json")
    if card.is_file():
        try:
            names = json.loads(card.read_text()).get("class_names")
        except (json.JSONDecodeError, AttributeError):
            names = None
        if isinstance(names, list) and len(names) == net.n_classes:
            net.meta["class_names"] = names
    return net


def reference_logits(net: Network, X: np.ndarray) -> np.ndarray:
    """Return the logits of ``X`` computed by the model's own framework (Keras, or ONNX's reference runtime)."""
    path = Path(net.meta["path"])
    module, entry = _reader(path)
    return getattr(module, entry[2])(path, np.atleast_2d(X))


def reference_classes(net: Network, X: np.ndarray) -> np.ndarray:
    """Return the classes the model's own framework gives to ``X`` under the network's decision rule."""
    return net.classify_logits(reference_logits(net, X))
