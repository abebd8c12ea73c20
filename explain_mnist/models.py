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
    if path.is_dir():
        raise UserError(f"model {path} is a folder, not a model file; give a .keras or .onnx file "
                        f"or a shipped name ({', '.join(SHIPPED_MODELS)})")
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


def class_name(k: int, names: list[str] | None) -> str | None:
    """Return what class ``k`` stands for ("digit 1" for a class named "1"), or None if the model card does not say."""
    if k is None or not names or not 0 <= k < len(names):
        return None
    name = str(names[k])
    return f"digit {name}" if len(name) == 1 and name.isdigit() else name


def class_label(k: int | None, names: list[str] | None) -> str:
    """Return "class 0 (digit 1)": the model's class index and, if the card names it, what it stands for."""
    if k is None:
        return "-"
    name = class_name(k, names)
    return f"class {k}" if name is None else f"class {k} ({name})"


def label_in_classes(label: int, names: list[str] | None, n_classes: int) -> bool | None:
    """Return whether an MNIST digit ``label`` is one of the model's classes (None if the model does not say).

    A model without class names counts as a digit classifier if it has 10 classes.
    """
    if names:
        return str(int(label)) in [str(n) for n in names]
    return True if n_classes == 10 else None


def reference_logits(net: Network, X: np.ndarray) -> np.ndarray:
    """Return the logits of ``X`` computed by the model's own framework (Keras, or ONNX's reference runtime)."""
    path = Path(net.meta["path"])
    module, entry = _reader(path)
    return getattr(module, entry[2])(path, np.atleast_2d(X))


def reference_classes(net: Network, X: np.ndarray) -> np.ndarray:
    """Return the classes the model's own framework gives to ``X`` under the network's decision rule."""
    return net.classify_logits(reference_logits(net, X))
