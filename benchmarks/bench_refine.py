"""Refined intermediate bounds on mnistfc: the `Verifier` with `refine.py` (the default) against without it.

    python benchmarks/bench_refine.py [--limit S] [--instances 256x4:prop_9_0.03,...] [--shared PATH] [--report]
                                      [--update-results] [--out FILE]

Both run in this process, one after the other (`benchmarks/compare.py`, no MIP fallback). Without refinement
the verifier is the one of the mnistfc runs before it: alpha-CROWN at the root, then branch-and-bound for the
whole limit. With --update-results writes benchmarks/refine.json and the section "refine" of
benchmarks/RESULTS.md (else prints the table and writes the JSON under results/benchmarks/ or to --out);
``--report`` only re-renders the table from the JSON file.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.compare import command_line, comparison_parser, comparison_run, comparison_table  # noqa: E402
from benchmarks.report import publish  # noqa: E402

JSON = Path(__file__).resolve().parent / "refine.json"
# the probe decides the first three with or without refinement; the others need it or were open without it
DEFAULT_INSTANCES = ("256x2:prop_3_0.03,256x4:prop_0_0.03,256x4:prop_10_0.05,256x2:prop_1_0.03,"
                     "256x4:prop_9_0.03,256x4:prop_3_0.03,256x6:prop_5_0.03,256x6:prop_6_0.05")


def main():
    args = comparison_parser(__doc__, DEFAULT_INSTANCES, 120.0, "refine", JSON).parse_args()
    run = comparison_run(args, {"refined": dict(refine=True), "plain": dict(refine=False)}, JSON, "refinement")
    lines = ["## Refined intermediate bounds: with and without (mnistfc)", "", run["machine"],
             f"Command: {command_line('bench_refine.py', run, DEFAULT_INSTANCES)}, 1 thread; both in one process, "
             "no MIP fallback. Refined: a probe of branch-and-bound, then intermediate bounds refined per neuron by "
             "branch-and-bound (`refine.py`), then branch-and-bound from the refined root; plain: branch-and-bound "
             "from alpha-CROWN's root for the whole limit.", ""]
    publish(args, "refine", "\n".join(lines + comparison_table(run["rows"], "refined", "plain",
                                                                ("refined", "plain"))))


if __name__ == "__main__":
    main()
