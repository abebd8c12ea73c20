"""The one command-line contract shared by every top-level script.

Shared flags: ``--model``, ``--index`` / ``--image``, ``--data``, ``--solver``,
``--time-limit``, ``--threads``, ``--json``, ``--figure`` / ``--no-figure``.
Bad input ends with one line ``error: <what is wrong and what to do>`` on stderr
and exit code 2, never a traceback; results and figures are written atomically.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np

from explain_mnist.errors import UserError
from explain_mnist.threads import DEFAULT_THREADS, limit_threads

SOLVER_CHOICES = ("auto", "highs", "scip", "cplex")
EXIT_USAGE = 2
DEBUG_ENV = "EXPLAIN_MNIST_DEBUG"  # set to show the traceback of an internal error


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the one-line error rule."""

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def make_parser(description: str, *, default_model: str = "twoclass", image_input: bool = True,
                solver: bool = True, default_figure: str | None = None,
                default_json: str | None = None) -> ArgumentParser:
    """Return a parser with the shared flags; scripts add their own after it."""
    p = ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=default_model,
                   help="shipped model name (twoclass, multiclass, cnn_simple) or a .keras / .onnx file")
    if image_input:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--index", type=int, default=None,
                           help="index of the MNIST test image (default 0)")
        group.add_argument("--image", default=None,
                           help=".npy file with 784, 28x28 or 28x28x1 floats in [0, 1]")
    p.add_argument("--data", default=None,
                   help="MNIST data to read instead of the shipped test set (mnist.npz or a folder of IDX "
                        "files); the MNIST_PATH environment variable does the same")
    if solver:
        p.add_argument("--solver", default="auto", choices=SOLVER_CHOICES,
                       help="MIP solver; auto picks by problem type and size and says what it chose")
        p.add_argument("--time-limit", type=float, default=None, help="seconds before stopping with the best "
                       "answer found so far, marked as such")
        p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                       help="threads of numpy's BLAS and of the MIP solver; 1 is the fastest here and gives the "
                            "same nodes on every run")
    p.add_argument("--json", default=default_json, help="write the result as JSON to this file")
    p.add_argument("--figure", default=default_figure, help="write the figure (PNG) to this file")
    p.add_argument("--no-figure", action="store_true", help="do not draw a figure")
    return p


def check_common(args) -> None:
    """Validate the shared numeric flags, raising UserError with what to do."""
    limit = getattr(args, "time_limit", None)
    if limit is not None and not (limit > 0 and np.isfinite(limit)):
        raise UserError(f"--time-limit must be a positive, finite number of seconds, got {limit:g}")
    node_limit = getattr(args, "node_limit", None)
    if node_limit is not None and node_limit < 1:
        raise UserError(f"--node-limit must be at least 1, got {node_limit}")
    threads = getattr(args, "threads", 1)
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    limit_threads(threads or DEFAULT_THREADS)
    outputs = [("--json", args.json)] + ([] if getattr(args, "no_figure", False) else [("--figure", args.figure)])
    for flag, path in outputs:
        if not path:
            continue
        if os.path.isdir(path):
            raise UserError(f"{flag} {path} is a folder; give a file name")
        folder = os.path.dirname(os.path.abspath(path))
        existing = folder
        while not os.path.isdir(existing):
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK):
            raise UserError(f"{flag} {path}: cannot write in {existing}; choose another place")


@dataclass
class InputImage:
    """The image a script works on: its pixels, where it came from, and its true label if known."""

    x: np.ndarray
    source: str
    label: int | None
    index: int | None
    provenance: str = ""

    def announce(self) -> None:
        """Print the one line naming the data source and its size (call once the inputs are all valid)."""
        from explain_mnist.data import log
        if self.provenance:
            log(self.provenance)


def load_input(args) -> InputImage:
    """Return the image named by ``--index`` (test set) or ``--image``, validated (see `InputImage.announce`)."""
    from explain_mnist.data import load_image_file, load_test_set
    if getattr(args, "image", None):
        return InputImage(load_image_file(args.image), f"image file {args.image}", None, None)
    index = 0 if args.index is None else args.index
    test = load_test_set(args.data, verbose=False)
    if not 0 <= index < len(test):
        raise UserError(f"--index {index} is out of range; the test set has images 0..{len(test) - 1}")
    return InputImage(test.x[index].astype(np.float64), f"test image {index}", int(test.y[index]), index,
                      f"data: {test.source}, {len(test)} images")


def load_model(args):
    """Return the `Network` named by ``--model``, checked against the input size."""
    from explain_mnist.models import load_network
    net = load_network(args.model)
    if net.n_inputs != 784:
        raise UserError(f"model {args.model} takes {net.n_inputs} inputs; MNIST images have 784 pixels")
    return net


def not_implemented(name: str, issue: str) -> None:
    """Exit with the one-line 'not implemented yet' message (for scripts whose issue has not landed)."""
    print(f"error: {name} is not implemented yet (see the issue '{issue}')", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def run(main) -> None:
    """Call ``main()``; turn a UserError (or any other exception) into one ``error: ...`` line + exit 2, an interrupt into exit 130."""
    limit_threads()   # --threads, where a script has it, sets its own count once parsed
    try:
        code = main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("error: interrupted; results already written are complete", file=sys.stderr)
        sys.exit(130)
    except MemoryError:
        print("error: out of memory; use a smaller model or box, or a machine with more memory", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # a bug of ours: still one line, with a way to get the traceback
        if os.environ.get(DEBUG_ENV):
            raise
        detail = " ".join(str(exc).split())[:300]
        print(f"error: internal error ({type(exc).__name__}: {detail}); please report it, and rerun with "
              f"{DEBUG_ENV}=1 for the traceback", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    sys.exit(code or 0)
