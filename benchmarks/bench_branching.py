"""How branch-and-bound branches: one tree per margin row against one joint tree, and input splits against none.

    python benchmarks/bench_branching.py [--limit S] [--instances 256x2:prop_1_0.03,...] [--seeds N] [--shared PATH]

Part 1, mnistfc: the product's `Verifier` (no MIP fallback) with ``rows_apart`` (the default) against the same
verifier with one joint tree for all margin rows, both in this process. Part 2, low-dimensional inputs: random
ReLU nets (seeded, 3 outputs, the box [-2, 2]^n) decided by `branch_and_bound` with input splits weighed at every
node (the default for at most `bab.INPUT_SPLIT_MAX_DIMS` free inputs) against ReLU splits only. Writes
benchmarks/branching.json and the section "branching" of benchmarks/RESULTS.md.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import machine_line, update_section  # noqa: E402
from explain_mnist import bab  # noqa: E402
from explain_mnist.network import Affine, Network, ReLU  # noqa: E402
from explain_mnist.onnx_io import read_onnx  # noqa: E402
from explain_mnist.results import write_json  # noqa: E402
from explain_mnist.verifier import Verifier  # noqa: E402
from explain_mnist.vnnlib import read_vnnlib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INSTANCES = ("256x2:prop_1_0.03,256x2:prop_3_0.03,256x2:prop_5_0.03,256x4:prop_0_0.03,"
                     "256x4:prop_5_0.03,256x4:prop_10_0.05")
LOW_DIMENSIONAL = ((1, (6, 6)), (2, (16, 16)), (3, (32, 32)), (5, (64, 64)))   # (inputs, hidden sizes)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shared", default=str(REPO.parent / "shared" / "benchmarks" / "mnistfc"))
    p.add_argument("--limit", type=float, default=60.0, help="time limit per mnistfc instance and mode")
    p.add_argument("--instances", default=DEFAULT_INSTANCES)
    p.add_argument("--seeds", type=int, default=30, help="random nets per low-dimensional shape")
    p.add_argument("--net-limit", type=float, default=10.0, help="time limit per random net and mode")
    args = p.parse_args()
    machine = machine_line()
    folder = Path(args.shared)
    result = dict(rows=[], low_dimensional=[])
    networks = {}
    for item in tqdm(args.instances.split(","), desc="rows apart", unit="instance"):
        size, prop_name = item.split(":")
        if size not in networks:
            networks[size] = read_onnx(folder / f"mnist-net_{size}.onnx")
        net = networks[size]
        prop = read_vnnlib(folder / f"{prop_name}.vnnlib")
        row = dict(network=size, property=prop_name)
        for mode, apart in (("apart", True), ("joint", False)):
            verifier = Verifier(net, time_limit=args.limit, mip_fallback=False, rows_apart=apart)
            v = verifier.verify(prop.lo, prop.hi, prop.label)
            row[mode] = dict(verdict=v.verdict, seconds=round(v.seconds, 2), nodes=v.nodes,
                             lower_bound=float(v.lower_bound))
        result["rows"].append(row)
        write_json(REPO / "benchmarks" / "branching.json", result)
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
        write_json(REPO / "benchmarks" / "branching.json", result)
    report(result, args, machine)


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


def report(result, args, machine):
    rows = result["rows"]
    both = [r for r in rows if r["apart"]["verdict"] != "unknown" and r["joint"]["verdict"] != "unknown"]
    lines = ["## Branching: one tree per margin row, and input splits", "", machine,
             "Command: `OMP_NUM_THREADS=1 python benchmarks/bench_branching.py"
             + ("" if args.limit == 60 else f" --limit {args.limit:g}")
             + ("" if args.instances == DEFAULT_INSTANCES else f" --instances {args.instances}") + "`, 1 thread; "
             "each comparison in one process.", "",
             f"mnistfc, `Verifier` without MIP fallback, {args.limit:g} s per instance and mode. Apart: one "
             "branch-and-bound tree per open margin row (the default); joint: one tree for all rows. "
             f"Decided by both: {len(both)} of {len(rows)}, in "
             f"{sum(r['apart']['seconds'] for r in both):.1f} s apart against "
             f"{sum(r['joint']['seconds'] for r in both):.1f} s joint. Ratio: joint seconds / apart seconds.", "",
             "| network | property | apart | s | nodes | joint | s | nodes | bound | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, j = r["apart"], r["joint"]
        ratio = f"{j['seconds'] / a['seconds']:.1f}" if a["verdict"] != "unknown" and a["seconds"] > 0 else "-"
        if a["verdict"] != "unknown" and j["verdict"] == "unknown":
            ratio = f"> {j['seconds'] / a['seconds']:.1f}"
        lines.append(f"| {r['network']} | {r['property']} | {a['verdict']} | {a['seconds']} | {a['nodes']} | "
                     f"{j['verdict']} | {j['seconds']} | {j['nodes']} | {j['lower_bound']:.4g} | {ratio} |")
    lines += ["", f"Low-dimensional inputs: {args.seeds} random nets per shape (3 outputs, box [-2, 2]^n), "
              f"`branch_and_bound` with input splits weighed at every node against ReLU splits only, "
              f"{args.net_limit:g} s per net and mode; both modes agreed wherever both decided. "
              "Ratio: ReLU-only seconds / with input splits.", "",
              "| inputs | hidden | input+ReLU s | nodes | unknown | input splits | ReLU only s | nodes | unknown | ratio |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["low_dimensional"]:
        i, o = r["input"], r["relu"]
        lines.append(f"| {r['inputs']} | {'x'.join(map(str, r['hidden']))} | {i['seconds']:.2f} | {i['nodes']} | "
                     f"{i['unknown']} | {i['input_splits']} | {o['seconds']:.2f} | {o['nodes']} | {o['unknown']} | "
                     f"{o['seconds'] / max(i['seconds'], 1e-9):.1f} |")
    update_section("branching", "\n".join(lines))


if __name__ == "__main__":
    main()
