"""Branch-and-bound node bounds on mnistfc: beta-CROWN (the default) against a node LP per open node (the baseline).

    python benchmarks/bench_node_bounds.py [--limit S] [--instances 256x2:prop_3_0.03,...] [--shared PATH] [--report]
                                           [--update-results] [--out FILE]

Both run in this process, one after the other, through the same `Verifier` (no MIP fallback, so the node
bound alone decides; `benchmarks/compare.py`). With --update-results writes
benchmarks/node_bounds.json and the section "node_bounds" of benchmarks/RESULTS.md (else prints the table and
writes the JSON under results/benchmarks/ or to --out); ``--report`` only re-renders the table from the JSON file.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.compare import command_line, comparison_parser, comparison_run, comparison_table  # noqa: E402
from benchmarks.report import publish  # noqa: E402

JSON = Path(__file__).resolve().parent / "node_bounds.json"
# decided by branch-and-bound in the mnistfc runs, plus three that stay open (their bounds are compared)
DEFAULT_INSTANCES = ("256x2:prop_3_0.03,256x2:prop_5_0.03,256x2:prop_0_0.05,256x2:prop_1_0.03,"
                     "256x4:prop_0_0.03,256x4:prop_5_0.03,256x4:prop_13_0.03,256x4:prop_10_0.05,"
                     "256x4:prop_3_0.03,256x4:prop_9_0.03")


def main():
    args = comparison_parser(__doc__, DEFAULT_INSTANCES, 60.0, "node_bounds", JSON).parse_args()
    run = comparison_run(args, {"beta": dict(node_bound="beta"), "lp": dict(node_bound="lp")}, JSON, "node bounds")
    lines = ["## Branch-and-bound node bounds: beta-CROWN against node LPs (mnistfc)", "", run["machine"],
             f"Command: {command_line('bench_node_bounds.py', run, DEFAULT_INSTANCES)}, 1 thread; both in one "
             "process, no MIP fallback.", ""]
    publish(args, "node_bounds", "\n".join(lines + comparison_table(run["rows"], "beta", "lp", ("beta", "LP"))))


if __name__ == "__main__":
    main()
