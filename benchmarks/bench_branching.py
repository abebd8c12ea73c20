"""How branch-and-bound branches: one tree per margin row against one joint tree, and input splits against none.

    python benchmarks/bench_branching.py [--limit S] [--instances 256x2:prop_1_0.03,...] [--seeds N] [--shared PATH]
                                         [--report] [--update-results] [--out FILE]

Part 1, mnistfc: the product's `Verifier` (no MIP fallback) with ``rows_apart`` (the default) against the same
verifier with one joint tree for all margin rows, both in this process (`benchmarks/compare.py`). Part 2, low-dimensional inputs: random
ReLU nets (seeded, 3 outputs, the box [-2, 2]^n) decided by `branch_and_bound` with input splits weighed at every
node (the default for at most `bab.INPUT_SPLIT_MAX_DIMS` free inputs) against ReLU splits only. With
--update-results writes benchmarks/branching.json and the section "branching" of benchmarks/RESULTS.md (else prints
the table and writes the JSON under results/benchmarks/ or to --out); ``--report`` only re-renders the table from
the JSON file.
"""
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.compare import command_line, comparison_parser, comparison_run, comparison_table  # noqa: E402
from benchmarks.report import publish  # noqa: E402
from explain_mnist import bab  # noqa: E402
from explain_mnist.network import Affine, Network, ReLU  # noqa: E402
from explain_mnist.results import write_json  # noqa: E402

JSON = Path(__file__).resolve().parent / "branching.json"
DEFAULT_INSTANCES = ("256x2:prop_1_0.03,256x2:prop_3_0.03,256x2:prop_5_0.03,256x4:prop_0_0.03,"
                     "256x4:prop_5_0.03,256x4:prop_10_0.05")
LOW_DIMENSIONAL = ((1, (6, 6)), (2, (16, 16)), (3, (32, 32)), (5, (64, 64)))   # (inputs, hidden sizes)


def main():
    p = comparison_parser(__doc__, DEFAULT_INSTANCES, 60.0, "branching", JSON)
    p.add_argument("--seeds", type=int, default=30, help="random nets per low-dimensional shape")
    p.add_argument("--net-limit", type=float, default=10.0, help="time limit per random net and mode")
    args = p.parse_args()
    result = comparison_run(args, {"apart": dict(rows_apart=True), "joint": dict(rows_apart=False)}, JSON,
                            "rows apart")
    if args.report:
        report(result, args)
        return
    result.update(seeds=args.seeds, net_limit=args.net_limit, low_dimensional=[])
    for n_in, hidden in tqdm(LOW_DIMENSIONAL, desc="input splits", unit="shape"):
        row = dict(inputs=n_in, hidden=list(hidden), nets=args.seeds)
        for mode, flag in (("input", True), ("relu", False)):
            row[mode] = dict(seconds=0.0, nodes=0, unknown=0, input_splits=0)
        for seed in range(args.seeds):
            net, lo, hi, c = random_case(seed, n_in, hidden)
            verdicts = {}
            for mode, flag in (("input", True), ("relu", False)):
                start = time.perf_counter()
                out = bab.branch_and_bound(net, lo, hi, c, deadline=start + args.net_limit, input_splits=flag)
                stats = row[mode]
                stats["seconds"] += time.perf_counter() - start
                stats["nodes"] += out.nodes
                stats["unknown"] += out.status == "unknown"
                stats["input_splits"] += out.input_splits
                verdicts[mode] = out.status
            if "unknown" not in verdicts.values() and verdicts["input"] != verdicts["relu"]:
                raise SystemExit(f"error: the two modes disagree on net {seed} of shape {n_in} x {hidden}: {verdicts}")
        result["low_dimensional"].append(row)
        write_json(args.json_path, result)
    report(result, args)


def random_case(seed: int, n_in: int, hidden) -> tuple:
    """Return ``(net, lo, hi, c)``: a seeded random ReLU net with 3 outputs, the box [-2, 2]^n, its centre's class."""
    rng = np.random.default_rng(seed)
    sizes = [n_in, *hidden, 3]
    layers = []
    for k in range(len(sizes) - 1):
        layers.append(Affine(rng.normal(size=(sizes[k + 1], sizes[k])), rng.normal(scale=0.5, size=sizes[k + 1])))
        if k < len(sizes) - 2:
            layers.append(ReLU())
    net = Network(layers)
    return net, np.full(n_in, -2.0), np.full(n_in, 2.0), int(net.predict(np.zeros(n_in)))


def report(result, args):
    own_options = f" --seeds {result['seeds']} --net-limit {result['net_limit']:g}"
    lines = ["## Branching: one tree per margin row, and input splits", "", result["machine"],
             f"Command: {command_line('bench_branching.py', result, DEFAULT_INSTANCES, own_options)}, 1 thread; "
             "each comparison in one process.", "",
             f"mnistfc, `Verifier` without MIP fallback, {result['limit']:g} s per instance and mode. Apart: one "
             "branch-and-bound tree per open margin row (the default); joint: one tree for all rows."]
    lines += comparison_table(result["rows"], "apart", "joint", ("apart", "joint"))
    lines += ["", f"Low-dimensional inputs: {result['seeds']} random nets per shape (3 outputs, box [-2, 2]^n), "
              f"`branch_and_bound` with input splits weighed at every node against ReLU splits only, "
              f"{result['net_limit']:g} s per net and mode; both modes agreed wherever both decided. "
              "Ratio: ReLU-only seconds / with input splits.", "",
              "| inputs | hidden | input+ReLU s | nodes | unknown | input splits | ReLU only s | nodes | unknown | ratio |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["low_dimensional"]:
        i, o = r["input"], r["relu"]
        lines.append(f"| {r['inputs']} | {'x'.join(map(str, r['hidden']))} | {i['seconds']:.2f} | {i['nodes']} | "
                     f"{i['unknown']} | {i['input_splits']} | {o['seconds']:.2f} | {o['nodes']} | {o['unknown']} | "
                     f"{o['seconds'] / max(i['seconds'], 1e-9):.1f} |")
    publish(args, "branching", "\n".join(lines))


if __name__ == "__main__":
    main()
