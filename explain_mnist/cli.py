"""The one command-line contract shared by every top-level script.

Shared flags: ``--model``, ``--index`` / ``--image``, ``--data``, ``--solver``,
``--time-limit``, ``--threads``, ``--json``, ``--figure`` / ``--no-figure``.
Bad input ends with one line ``error: <what is wrong and what to do>`` on stderr
and exit code 2, never a traceback. Output paths are checked before any work
(`check_common`), and results and figures are written as `results.write_atomic`
says: through symbolic links, never over a device or fifo, with the user's umask,
atomically; ``--json -`` writes the JSON to standard output.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass

from explain_mnist.errors import UserError
from explain_mnist.threads import DEFAULT_THREADS, limit_threads

SOLVER_CHOICES = ("auto", "highs", "scip", "cplex")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130   # Ctrl-C, after the partial result is written
DEBUG_ENV = "EXPLAIN_MNIST_DEBUG"  # set to show the traceback of an internal error


def _process_start() -> float:
    """Return when this process started (epoch seconds), from /proc where it can; else now (this module's import)."""
    now = time.time()
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        started = now - (uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return now
    return started if 0 <= now - started < 3600 else now


PROCESS_START = _process_start()


def wall_seconds() -> float:
    """Return the seconds since this process started (imports included)."""
    return time.time() - PROCESS_START


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after each option's help, except where there is no default to show (None, off)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the one-line error rule and the defaults shown in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def make_parser(description: str, *, default_model: str = "twoclass", image_input: bool = True,
                solver: bool = True, default_figure: str | None = None,
                default_json: str | None = None) -> ArgumentParser:
    """Return a parser with the shared flags; scripts add their own after it."""
    p = ArgumentParser(description=description)
    p.add_argument("--model", default=default_model,
                   help="shipped model name (twoclass, multiclass, cnn_simple) or a .keras / .onnx file")
    if image_input:
        group = p.add_mutually_exclusive_group()
        group.add_argument("--index", type=int, default=None,
                           help="index of the MNIST test image, the same image for every model "
                                "(default: 0)")
        group.add_argument("--image", default=None,
                           help=".npy file with 784, 28x28 or 28x28x1 floats in [0, 1]")
    p.add_argument("--data", default=None,
                   help="MNIST data to read instead of the shipped test set (mnist.npz or a folder of IDX "
                        "files); the MNIST_PATH environment variable does the same")
    if solver:
        p.add_argument("--solver", default="auto", choices=SOLVER_CHOICES,
                       help="MIP solver; auto picks by problem type and size and says what it chose")
        p.add_argument("--time-limit", type=float, default=None, help="seconds before stopping with the best "
                       "answer found so far, marked as such (default: no limit)")
        p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                       help="threads of numpy's BLAS and of the MIP solver; 1 is the fastest here and gives the "
                            "same nodes on every run")
    p.add_argument("--json", default=default_json, help="write the result as JSON to this file; - writes it to "
                   "standard output (and the summary to standard error)")
    figures = p.add_mutually_exclusive_group()
    figures.add_argument("--figure", default=default_figure, help="write the figure to this file, in the format "
                         "its suffix names: .png, .pdf or .svg")
    figures.add_argument("--no-figure", action="store_true", help="do not draw a figure")
    return p


def check_outputs(args) -> None:
    """Raise UserError, naming the path and the reason, for an output path that cannot be written (no work done)."""
    from explain_mnist.results import STDOUT, check_output, figure_format
    json_path = getattr(args, "json", None)
    figure = None if getattr(args, "no_figure", False) else getattr(args, "figure", None)
    if figure is not None and str(figure) == STDOUT:
        raise UserError("--figure -: a figure cannot go to standard output; give a file name (.png, .pdf or .svg)")
    for flag, path in (("--json", json_path), ("--figure", figure)):
        if path:
            check_output(path, f"{flag} {path}")
    if figure:
        figure_format(figure)


def check_common(args) -> None:
    """Validate the shared numeric flags, raising UserError with what to do."""
    limit = getattr(args, "time_limit", None)
    if limit is not None and not (limit > 0 and math.isfinite(limit)):
        raise UserError(f"--time-limit must be a positive, finite number of seconds, got {limit:g}")
    node_limit = getattr(args, "node_limit", None)
    if node_limit is not None and node_limit < 1:
        raise UserError(f"--node-limit must be at least 1, got {node_limit}")
    threads = getattr(args, "threads", 1)
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    limit_threads(threads or DEFAULT_THREADS)
    check_outputs(args)


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
    import numpy as np

    from explain_mnist.data import load_image_file, load_test_set
    if getattr(args, "image", None):
        return InputImage(load_image_file(args.image), f"image file {args.image}", None, None)
    index = 0 if args.index is None else args.index
    test = load_test_set(args.data, verbose=False)
    if not 0 <= index < len(test):
        raise UserError(f"--index {index} is out of range; the test set has images 0..{len(test) - 1}")
    return InputImage(test.x[index].astype(np.float64), f"test image {index}", int(test.y[index]), index,
                      f"data: {test.source}, {len(test)} images")


def summary_stream(args):
    """Return where the human summary goes: standard output, or standard error when the JSON goes to stdout."""
    from explain_mnist.results import STDOUT
    return sys.stderr if str(getattr(args, "json", None)) == STDOUT else sys.stdout


class ProgressLine:
    """A one-line progress display on standard error, updated in place, only when stderr is a terminal.

    Call it as the verifier's ``progress(stage, nodes, lower_bound, elapsed)``; `close` erases the line.
    """

    def __init__(self, stream=None):
        self.stream = sys.stderr if stream is None else stream
        try:
            self.enabled = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.enabled = False
        self.width = 0

    def __call__(self, stage: str, nodes: int, lower_bound: float, elapsed: float) -> None:
        if not self.enabled:
            return
        text = f"{stage}: {int(nodes):,} nodes, margin lower bound {float(lower_bound):.4g}, {float(elapsed):.1f} s"
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = max(self.width, len(text))

    def close(self) -> None:
        """Erase the line (if anything was shown)."""
        if self.enabled and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def load_model(args):
    """Return the `Network` named by ``--model``, checked against the input size."""
    from explain_mnist.models import load_network
    net = load_network(args.model)
    if net.n_inputs != 784:
        raise UserError(f"model {args.model} takes {net.n_inputs} inputs; MNIST images have 784 pixels")
    return net


def not_implemented(name: str, issue: str, parser: argparse.ArgumentParser | None = None) -> None:
    """Exit with the one-line 'not implemented yet' message (for scripts whose issue has not landed).

    With ``parser`` (the script's intended flags), the command line is parsed first, so ``--help`` shows them
    and a bad flag gets argparse's one-line error.
    """
    if parser is not None:
        parser.parse_args()
    print(f"error: {name} is not implemented yet (issue {issue})" + ("; --help shows its intended flags"
                                                                     if parser is not None else ""), file=sys.stderr)
    sys.exit(EXIT_USAGE)


def run(main) -> None:
    """Call ``main()``; turn a UserError, a missing third-party package (or any other exception) into one
    ``error: ...`` line + exit 2, an interrupt into exit 130."""
    try:
        try:
            limit_threads()   # --threads, where a script has it, sets its own count once parsed
            code = main()
        except ModuleNotFoundError as exc:
            package = (exc.name or "").partition(".")[0]
            if package in ("", "explain_mnist") or package in sys.stdlib_module_names:
                raise RuntimeError(f"cannot import {exc.name}") from exc      # ours or Python's own: a bug
            raise UserError(f"the Python package {package!r} is not installed; run the scripts with "
                            f".venv/bin/python (`make` sets it up) or install the requirements with "
                            f"`pip install -r requirements.txt`") from None
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted: the results already written are complete", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
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


def save_outputs(args, result: dict, figure: str | None = None) -> None:
    """Write a script's JSON result and (unless --no-figure) the figure ``plots.<figure>(plain_result)`` draws.

    Sets ``result["wall_seconds"]``: the seconds since the process started, imports included.
    """
    from explain_mnist.results import to_jsonable, write_json

    result["wall_seconds"] = round(wall_seconds(), 2)
    plain = to_jsonable(result)
    flag, path = "--json", args.json
    try:
        if args.json:
            write_json(args.json, plain)
        if figure is not None and args.figure and not args.no_figure:
            from explain_mnist import plots   # matplotlib only when a figure is drawn
            flag, path = "--figure", args.figure
            plots.save_figure(getattr(plots, figure)(plain), args.figure)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot write the result ({exc.strerror or exc})") from None

