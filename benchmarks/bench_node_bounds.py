"""Branch-and-bound node bounds on mnistfc: beta-CROWN (the default) against a node LP per open node (the baseline).

    python benchmarks/bench_node_bounds.py [--limit S] [--instances 256x2:prop_3_0.03,...] [--shared PATH]

Both run in this process, one after the other, through the same `Verifier` (root bounds, attack, alpha-CROWN,
branch-and-bound; no MIP fallback, so the node bound alone decides). Writes benchmarks/node_bounds.json and the
section "node_bounds" of benchmarks/RESULTS.md: per instance, verdict, seconds, nodes and the proven lower bound
of each, and the time ratio.
"""
import argparse
import sys
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import machine_line, update_section  # noqa: E402
from explain_mnist.onnx_io import read_onnx  # noqa: E402
from explain_mnist.results import write_json  # noqa: E402
from explain_mnist.verifier import Verifier  # noqa: E402
from explain_mnist.vnnlib import read_vnnlib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# decided by branch-and-bound in the mnistfc runs, plus three that stay open (their bounds are compared)
DEFAULT_INSTANCES = ("256x2:prop_3_0.03,256x2:prop_5_0.03,256x2:prop_0_0.05,256x2:prop_1_0.03,"
                     "256x4:prop_0_0.03,256x4:prop_5_0.03,256x4:prop_13_0.03,256x4:prop_10_0.05,"
                     "256x4:prop_3_0.03,256x4:prop_9_0.03")
NODE_BOUNDS = ("beta", "lp")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shared", default=str(REPO.parent / "shared" / "benchmarks" / "mnistfc"))
    p.add_argument("--limit", type=float, default=60.0, help="time limit per instance and node bound")
    p.add_argument("--instances", default=DEFAULT_INSTANCES)
    args = p.parse_args()
    machine = machine_line()
    folder = Path(args.shared)
    rows, networks = [], {}
    for item in tqdm(args.instances.split(","), desc="node bounds", unit="instance"):
        net_name, prop_name = item.split(":")
        if net_name not in networks:
            networks[net_name] = read_onnx(folder / f"mnist-net_{net_name}.onnx")
        net = networks[net_name]
        prop = read_vnnlib(folder / f"{prop_name}.vnnlib")
        row = {"network": net_name, "property": prop_name}
        for node_bound in NODE_BOUNDS:
            verdict = Verifier(net, time_limit=args.limit, mip_fallback=False,
                               node_bound=node_bound).verify(prop.lo, prop.hi, prop.label)
            row[node_bound] = {"verdict": verdict.verdict, "seconds": round(verdict.seconds, 2),
                               "nodes": verdict.nodes, "lower_bound": verdict.lower_bound}
        rows.append(row)
        tqdm.write(f"{item}: " + ", ".join(f"{b} {row[b]['verdict']} {row[b]['seconds']} s {row[b]['nodes']} nodes"
                                           for b in NODE_BOUNDS))
        write_json(REPO / "benchmarks" / "node_bounds.json", rows)
    report(rows, args, machine)


def report(rows, args, machine):
    both = [r for r in rows if all(r[b]["verdict"] != "unknown" for b in NODE_BOUNDS)]
    total = {b: sum(r[b]["seconds"] for r in both) for b in NODE_BOUNDS}
    lines = ["## Branch-and-bound node bounds: beta-CROWN against node LPs (mnistfc)", "", machine,
             f"Command: `OMP_NUM_THREADS=1 python benchmarks/bench_node_bounds.py --limit {args.limit:g}"
             + ("" if args.instances == DEFAULT_INSTANCES else f" --instances {args.instances}") + "`, 1 thread; "
             "both in one process, no MIP fallback. Ratio: LP seconds / beta seconds.", "",
             f"Decided by both: {len(both)} of {len(rows)}, in {total['beta']:.1f} s with beta-CROWN against "
             f"{total['lp']:.1f} s with node LPs"
             + (f" ({total['lp'] / total['beta']:.1f}x)." if both and total["beta"] > 0 else "."), "",
             "| network | property | beta | s | nodes | bound | LP | s | nodes | bound | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b, lp = r["beta"], r["lp"]
        ratio = f"{lp['seconds'] / b['seconds']:.1f}" if b["verdict"] != "unknown" and b["seconds"] > 0 else "-"
        lines.append(f"| {r['network']} | {r['property']} | {b['verdict']} | {b['seconds']} | {b['nodes']} | "
                     f"{b['lower_bound']:.4g} | {lp['verdict']} | {lp['seconds']} | {lp['nodes']} | "
                     f"{lp['lower_bound']:.4g} | {ratio} |")
    update_section("node_bounds", "\n".join(lines))


if __name__ == "__main__":
    main()
