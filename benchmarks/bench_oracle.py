"""The verifier as the explanation oracle: query times on the boxes a deletion-based explanation asks about.

    python benchmarks/bench_oracle.py [--model twoclass] [--images 10] [--chunk 16] [--update-results] [--out FILE]

For each test image (for twoclass: the first digits 1 and 3 of the test set), pixels are freed to [0, 1] in
order of least importance (|gradient x value| of the margin, smallest first), in chunks that double after a
robust answer and halve after a counterexample (down to one pixel); the pixels still fixed at the end form an
explanation. Each chunk is one verification query on the box "freed pixels in [0, 1], the others fixed",
answered by one `Verifier` per image (so later queries are seeded with earlier counterexamples). Reports the
query-time distribution and the methods that decided the queries. With --update-results the table goes to the
section "oracle_<model>" of benchmarks/RESULTS.md and the rows to benchmarks/oracle_<model>.json; without it the
table is only printed and the rows go to results/benchmarks/oracle_<model>.json (or --out).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import (HelpFormatter, add_output_flags, machine_line, output_json, publish,  # noqa: E402
                               saved_json)
from explain_mnist.attack import margin_gradients  # noqa: E402
from explain_mnist.data import load_test_set  # noqa: E402
from explain_mnist.models import load_network  # noqa: E402
from explain_mnist.results import read_json, write_json  # noqa: E402
from explain_mnist.verifier import Verifier  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


CONFIGS = {  # the product's verifier, and the baseline it is compared with on the same queries
    "default": dict(),
    "baseline": dict(node_bound="lp"),
}


def deletion_queries(net, x0, chunk, pbar):
    """Return the per-query records and the explanation size of a deletion search on one image.

    Every query is answered by each verifier of `CONFIGS` (one per image, each seeded with its own earlier
    counterexamples); the search follows the default one, and a disagreement between decided verdicts is an error.
    """
    c = int(net.predict(x0))
    C = net.spec_matrix(c)
    grad = margin_gradients(net, x0[None], C)[0]
    importance = np.abs(grad * x0).min(axis=0) if grad.ndim == 2 else np.abs(grad * x0)
    order = list(np.argsort(importance, kind="stable"))
    verifiers = {name: Verifier(net, **options) for name, options in CONFIGS.items()}
    free = np.zeros(784, dtype=bool)
    records = []
    size = chunk
    while order:
        take, order = order[:size], order[size:]
        trial = free.copy()
        trial[take] = True
        lo, hi = np.where(trial, 0.0, x0), np.where(trial, 1.0, x0)
        verdicts = {name: verifier.verify(lo, hi, c) for name, verifier in verifiers.items()}
        decided = {v.verdict for v in verdicts.values()} - {"unknown"}
        if len(decided) > 1:
            raise RuntimeError(f"verifiers disagree on a query: { {n: v.verdict for n, v in verdicts.items()} }")
        verdict = verdicts["default"]
        records.append({"seconds": verdict.seconds, "verdict": verdict.verdict, "method": verdict.method,
                        "nodes": verdict.nodes, "freed": int(trial.sum()),
                        "baseline_seconds": verdicts["baseline"].seconds, "baseline_method": verdicts["baseline"].method,
                        "baseline_nodes": verdicts["baseline"].nodes})
        pbar.update(1)
        if verdict.verdict == "robust":
            free = trial
            size *= 2
        elif size > 1:
            order = take + order
            size = max(1, size // 2)
        if verdict.verdict == "unknown":
            break
    return records, int(784 - free.sum())


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", default="twoclass", help="shipped model name")
    p.add_argument("--images", type=int, default=10, help="test images (for twoclass: the first 1s and 3s)")
    p.add_argument("--chunk", type=int, default=16, help="pixels freed by the first query")
    p.add_argument("--indices", default=None, help="comma-separated test indices instead of the first --images")
    p.add_argument("--report-only", action="store_true",
                   help="render the table from the images the JSON file (--out, else the shipped one) already "
                        "holds (after an interrupted run)")
    add_output_flags(p, "oracle_<model>", "benchmarks/oracle_<model>.json")
    args = p.parse_args()
    args.machine = machine_line()   # the code measured is the code at the start of the run
    shipped = REPO / "benchmarks" / f"oracle_{args.model}.json"
    if args.report_only:
        return report(read_json(saved_json(args, shipped)), args)
    out = output_json(args, shipped)
    net = load_network(args.model)
    test = load_test_set(verbose=False)
    indices = np.flatnonzero(np.isin(test.y, (1, 3)))[:args.images] if args.model == "twoclass" \
        else np.arange(args.images)
    if args.indices:
        indices = [int(i) for i in args.indices.split(",")]
    rows = []
    with tqdm(desc="oracle queries", unit="query") as pbar:
        for index in indices:
            start = time.perf_counter()
            records, size = deletion_queries(net, test.x[index].astype(np.float64), args.chunk, pbar)
            rows.append({"index": int(index), "queries": records, "explanation_size": size,
                         "seconds": time.perf_counter() - start})
            write_json(out, rows)
    report(rows, args)


def report(rows, args):
    times = np.array([q["seconds"] for r in rows for q in r["queries"]]) * 1000
    base = np.array([q.get("baseline_seconds", np.nan) for r in rows for q in r["queries"]]) * 1000
    methods = {}
    for r in rows:
        for q in r["queries"]:
            methods[q["method"]] = methods.get(q["method"], 0) + 1
    unknown = sum(q["verdict"] == "unknown" for r in rows for q in r["queries"])
    command = f"OMP_NUM_THREADS=1 python benchmarks/bench_oracle.py --model {args.model} --chunk {args.chunk} " + \
        (f"--indices {args.indices}" if args.indices else f"--images {args.images}")
    lines = [f"## The verifier as explanation oracle ({args.model})", "", args.machine, f"Command: `{command}`. "
             "Each query is answered by the product's verifier (bound, attack, branch-and-bound with its default "
             "node bounds: the convex-hull bounds of `hull.py` on a small one-hidden-layer net such as twoclass, "
             "beta-CROWN otherwise) and, as the baseline in the same process, by the same verifier with a node LP per open node "
             "(`node_bound=\"lp\"`); "
             "the chunked deletion search is only a load generator, not the product's explanation algorithm.", "",
             f"{len(times)} queries over {len(rows)} images: median {np.median(times):.2f} ms, "
             f"90th percentile {np.percentile(times, 90):.2f} ms, max {times.max():.1f} ms, total {times.sum() / 1000:.1f} s "
             f"(baseline: median {np.nanmedian(base):.2f} ms, max {np.nanmax(base):.1f} ms, total "
             f"{np.nansum(base) / 1000:.1f} s); unknown: {unknown}. Decided by: "
             + ", ".join(f"{k} {v}" for k, v in sorted(methods.items())) + ".", "",
             "| test image | queries | explanation size (pixels) | total s | baseline total s | median query ms | "
             "max query ms | baseline max query ms |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = np.array([q["seconds"] for q in r["queries"]]) * 1000
        b = np.array([q.get("baseline_seconds", np.nan) for q in r["queries"]]) * 1000
        lines.append(f"| {r['index']} | {len(t)} | {r['explanation_size']} | {t.sum() / 1000:.2f} | "
                     f"{np.nansum(b) / 1000:.2f} | {np.median(t):.2f} | {t.max():.1f} | {np.nanmax(b):.1f} |")
    publish(args, f"oracle_{args.model}", "\n".join(lines))


if __name__ == "__main__":
    main()
