"""Writing benchmark tables into benchmarks/RESULTS.md, one marked section per benchmark, atomically."""
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
