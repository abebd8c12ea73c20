"""Branch-and-bound node bounds on mnistfc: beta-CROWN (the default) against a node LP per open node (the baseline).

    python benchmarks/bench_node_bounds.py [--limit S] [--instances 256x2:prop_3_0.03,...] [--shared PATH] [--report]

Both run in this process, one after the other, through the same `Verifier` (no MIP fallback, so the node
bound alone decides; `benchmarks/compare.py`). Writes benchmarks/node_bounds.json and the section
"node_bounds" of benchmarks/RESULTS.md; ``--report`` only re-renders the section from the JSON file.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.compare import compare_verifiers, comparison_table  # noqa: E402
from benchmarks.report import machine_line, update_section  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
JSON = REPO / "benchmarks" / "node_bounds.json"
# decided by branch-and-bound in the mnistfc runs, plus three that stay open (their bounds are compared)
DEFAULT_INSTANCES = ("256x2:prop_3_0.03,256x2:prop_5_0.03,256x2:prop_0_0.05,256x2:prop_1_0.03,"
                     "256x4:prop_0_0.03,256x4:prop_5_0.03,256x4:prop_13_0.03,256x4:prop_10_0.05,"
                     "256x4:prop_3_0.03,256x4:prop_9_0.03")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shared", default=str(REPO.parent / "shared" / "benchmarks" / "mnistfc"))
    p.add_argument("--limit", type=float, default=60.0, help="time limit per instance and node bound")
    p.add_argument("--instances", default=DEFAULT_INSTANCES)
    p.add_argument("--report", action="store_true", help="re-render RESULTS.md from the JSON file, run nothing")
    args = p.parse_args()
    if args.report:
        saved = json.loads(JSON.read_text())
        machine, rows = saved["machine"], saved["rows"]
    else:
        machine = machine_line()
        rows = compare_verifiers(args.instances, Path(args.shared), args.limit,
                                 {"beta": dict(node_bound="beta"), "lp": dict(node_bound="lp")}, JSON, machine,
                                 "node bounds")
    lines = ["## Branch-and-bound node bounds: beta-CROWN against node LPs (mnistfc)", "", machine,
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_node_bounds.py --limit {args.limit:g}"
             + ("" if args.instances == DEFAULT_INSTANCES else f" --instances {args.instances}") + "`, 1 thread; "
             "both in one process, no MIP fallback.", ""]
    update_section("node_bounds", "\n".join(lines + comparison_table(rows, "beta", "lp", ("beta", "LP"))))


if __name__ == "__main__":
    main()
