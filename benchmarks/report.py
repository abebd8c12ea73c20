"""Writing benchmark tables into benchmarks/RESULTS.md, one marked section per benchmark, atomically.

The tables and JSON files under benchmarks/ are the shipped measurements: a benchmark rewrites them only with
``--update-results`` (`add_output_flags`, `publish`, `output_json`). Without it a run prints its table, leaves
RESULTS.md alone and writes its JSON under results/benchmarks/ (untracked), or to ``--out``.
"""
import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from explain_mnist.results import write_atomic  # noqa: E402
from explain_mnist.threads import blas_threads, limit_threads  # noqa: E402

limit_threads()   # every benchmark imports this module: all measure with one BLAS thread, as the scripts run

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SCRATCH = Path(__file__).resolve().parent.parent / "results" / "benchmarks"   # a run's JSON without --update-results
HEADER = "# Benchmark results\n\nEach section is rewritten by the benchmark named in it; figures are measured, not asserted.\n"


def machine_line() -> str:
    """Return one line naming the machine, the date, Python and the code's commit."""
    cpu = platform.processor() or platform.machine()
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True, text=True,
                                cwd=RESULTS.parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return (f"Machine: {os.cpu_count()} cores ({cpu}), {blas_threads()} BLAS thread(s), Python {platform.python_version()}, "
            f"{datetime.date.today().isoformat()}, commit {commit}.")


def update_section(name: str, markdown: str) -> Path:
    """Replace (or append) the section ``name`` of RESULTS.md with ``markdown``; return the file."""
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    return write_atomic(RESULTS, lambda f: f.write(text.encode()))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help of a benchmark: its docstring as written, and each option's default (where it has one)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_output_flags(p, section: str, shipped_json: str | None = None) -> None:
    """Add ``--update-results`` (and, for a benchmark with a JSON file, ``--out``) to the parser ``p``.

    ``section`` and ``shipped_json`` name the RESULTS.md section and the tracked JSON file, for the help text.
    """
    p.add_argument("--update-results", action="store_true",
                   help=f"write the table into the section {section} of benchmarks/RESULTS.md"
                        + (f" and the run to {shipped_json}" if shipped_json else "")
                        + " (the shipped results); without it the table is only printed")
    if shipped_json:
        p.add_argument("--out", default=None,
                       help=f"JSON file of the run (default: {shipped_json} with --update-results, else "
                            f"{SCRATCH.relative_to(SCRATCH.parent.parent)}/{Path(shipped_json).name})")


def output_json(args, shipped: str | Path) -> Path:
    """Return the JSON file a run writes: ``--out``, else the shipped one with ``--update-results``, else scratch."""
    if getattr(args, "out", None):
        return Path(args.out)
    return Path(shipped) if args.update_results else SCRATCH / Path(shipped).name


def saved_json(args, shipped: str | Path) -> Path:
    """Return the JSON file a re-rendering (``--report``) reads: ``--out`` if given, else the shipped one."""
    return Path(args.out) if getattr(args, "out", None) else Path(shipped)


def publish(args, name: str, markdown: str) -> Path | None:
    """Write ``markdown`` into the section ``name`` of RESULTS.md with ``--update-results``; else print it."""
    if args.update_results:
        path = update_section(name, markdown)
        print(f"written to {path} (section {name})", file=sys.stderr)
        return path
    print(markdown)
    print(f"benchmarks/RESULTS.md not changed; rerun with --update-results to write the section {name}",
          file=sys.stderr)
    return None
