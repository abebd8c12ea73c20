"""Refined intermediate bounds on mnistfc: the `Verifier` with `refine.py` (the default) against without it.

    python benchmarks/bench_refine.py [--limit S] [--instances 256x4:prop_9_0.03,...] [--shared PATH] [--report]

Both run in this process, one after the other (`benchmarks/compare.py`, no MIP fallback). Without refinement
the verifier is the one of the mnistfc runs before it: alpha-CROWN at the root, then branch-and-bound for the
whole limit. Writes benchmarks/refine.json and the section "refine" of benchmarks/RESULTS.md; ``--report``
only re-renders the section from the JSON file.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.compare import compare_verifiers, comparison_table  # noqa: E402
from benchmarks.report import machine_line, update_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
JSON = REPO / "benchmarks" / "refine.json"
# the probe decides the first three with or without refinement; the others need it or were open without it
DEFAULT_INSTANCES = ("256x2:prop_3_0.03,256x4:prop_0_0.03,256x4:prop_10_0.05,256x2:prop_1_0.03,"
                     "256x4:prop_9_0.03,256x4:prop_3_0.03,256x6:prop_5_0.03,256x6:prop_6_0.05")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shared", default=str(REPO.parent / "shared" / "benchmarks" / "mnistfc"))
    p.add_argument("--limit", type=float, default=120.0, help="time limit per instance and mode")
    p.add_argument("--instances", default=DEFAULT_INSTANCES)
    p.add_argument("--report", action="store_true", help="re-render RESULTS.md from the JSON file, run nothing")
    args = p.parse_args()
    if args.report:
        saved = json.loads(JSON.read_text())
        machine, rows = saved["machine"], saved["rows"]
    else:
        machine = machine_line()
        rows = compare_verifiers(args.instances, Path(args.shared), args.limit,
                                 {"refined": dict(refine=True), "plain": dict(refine=False)}, JSON, machine,
                                 "refinement")
    lines = ["## Refined intermediate bounds: with and without (mnistfc)", "", machine,
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_refine.py --limit {args.limit:g}"
             + ("" if args.instances == DEFAULT_INSTANCES else f" --instances {args.instances}") + "`, 1 thread; "
             "both in one process, no MIP fallback. Refined: a probe of branch-and-bound, then intermediate bounds "
             "refined per neuron by branch-and-bound (`refine.py`), then branch-and-bound from the refined root; "
             "plain: branch-and-bound from alpha-CROWN's root for the whole limit.", ""]
    update_section("refine", "\n".join(lines + comparison_table(rows, "refined", "plain", ("refined", "plain"))))


if __name__ == "__main__":
    main()
