"""Model files: shipped names, the reader for each file type, and the source framework's own evaluation.

A model argument is a shipped name (``twoclass``, ``multiclass``, ``cnn_simple``:
``models/<name>.keras``) or a path. The reader is chosen by the file's suffix from
`MODEL_READERS`; the ONNX reader is added by `explain_mnist.onnx_io`.

Converted networks are cached (pickles under `network_cache_dir`), keyed by the SHA-256 of the model file's
bytes together with the package's modules: a later run reads the numpy network without starting TensorFlow
(which takes seconds), and any change to the file or to the conversion code misses the cache. A cache that
cannot be read or written is skipped, never an error. Re-checks by the model's own framework
(`reference_classes`) always load the model file itself.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
from pathlib import Path

import numpy as np

from explain_mnist.data import REPO_ROOT
from explain_mnist.errors import UserError
from explain_mnist.network import Network

CACHE_ENV = "EXPLAIN_MNIST_CACHE"   # a folder, or "off" for no cache
CACHE_OFF = ("", "0", "off", "no", "none")
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
    cached = _cache_file(path)
    net = _read_cached(cached)
    if net is None:
        try:
            net = getattr(module, entry[1])(path)
        except (ValueError, TypeError) as exc:
            raise UserError(f"model {path} cannot be turned into an affine/ReLU network: {exc}") from None
        _write_cached(cached, net)
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


def network_cache_dir() -> Path | None:
    """Return the folder of cached networks: ``$EXPLAIN_MNIST_CACHE``, else ``$XDG_CACHE_HOME/explain_mnist`` or
    ``~/.cache/explain_mnist``; None if the variable says "off"."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in CACHE_OFF else Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "explain_mnist"


def _cache_file(path: Path) -> Path | None:
    """Return where the network of the model file ``path`` is cached (None: no cache). The key covers the file and
    every module of the package, so that no change to the conversion code can go unnoticed."""
    folder = network_cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256()
    try:
        for source in [path, *sorted(Path(__file__).parent.glob("*.py"))]:
            digest.update(Path(source).read_bytes())
    except OSError:
        return None
    return folder / f"network-{digest.hexdigest()}.pkl"


def _read_cached(cached: Path | None) -> Network | None:
    """Return the cached network, or None if there is none or it cannot be read."""
    if cached is None or not cached.is_file():
        return None
    try:
        with open(cached, "rb") as f:
            net = pickle.load(f)
    except Exception:   # a truncated or foreign file is a cache miss, whatever unpickling raises
        return None
    return net if isinstance(net, Network) else None


def _write_cached(cached: Path | None, net: Network) -> None:
    """Store ``net`` at ``cached`` (atomically); a cache that cannot be written is skipped."""
    from explain_mnist.results import write_atomic
    if cached is None:
        return
    try:
        write_atomic(cached, lambda f: pickle.dump(net, f, protocol=pickle.HIGHEST_PROTOCOL))
    except (OSError, UserError):
        pass


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
