"""Binarized network (issue 14): CNF sizes per cardinality encoding, k-flip queries by search / MIP / IP / CNF,
minimal flips.

    python benchmarks/bench_binary.py [--images 20] [--flips 1,2,5,10] [--limit S] [--compare-images 10]
                                      [--minflips-images 10] [--minflips-limit S] [--report] [--update-results]
                                      [--out FILE] [--add]

On the shipped models/binary_net.npz and the first --images test images: (1) the CNF's size for each PySAT
cardinality encoding at every k (median over the images); (2) for each image and k, the k-flip robustness query
answered by our exact search, the MIP, the IP (HiGHS) and the CNF (the default cardinality encoding and SAT
solver), --limit seconds each, answers compared and every counterexample re-checked by the forward pass; (3) on the
first --compare-images images and k = 1, 2: the CNF with each cardinality encoding (glucose4) and with each SAT
solver (default encoding; native constraints for Minicard / Gluecard); (4) binary.py minflips by the search and by
SAT on the first --minflips-images. --add runs only (2) for --flips, and the search's minflips if --minflips-images
is given, and merges them into the saved run.
CaDiCaL is left out of the timed runs: its PySAT binding ignored the interrupt a time limit sends (measured: a
60 s limit did not stop it). With --update-results writes benchmarks/binary.json and the section "binary" of
benchmarks/RESULTS.md; without it prints the tables and writes the JSON under results/benchmarks/ (or --out).
"""
import argparse
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import (HelpFormatter, add_output_flags, machine_line, output_json, publish,  # noqa: E402
                               saved_json)
from explain_mnist.binarized import cnf, network, verify  # noqa: E402
from explain_mnist.binarized.query import compile_query  # noqa: E402
from explain_mnist.data import REPO_ROOT, load_test_set  # noqa: E402
from explain_mnist.results import read_json, write_json  # noqa: E402

JSON = Path(__file__).resolve().parent / "binary.json"
CARDINALITIES = ("kmtotalizer", "seqcounter", "cardnetwrk", "sortnetwrk", "mtotalizer", "totalizer", "native")
SLOW_TO_BUILD = ("totalizer", "sortnetwrk")   # not bounded by k in PySAT: 11.6 M clauses already at k = 2
SAT_SOLVERS = ("glucose4", "glucose42", "minisat22", "maplechrono", "minicard", "gluecard4")


def query_row(net, x0, k, settings, limit):
    """Return {answer, seconds, sizes} of one encoding's k-flip query."""
    settings.time_limit = limit
    r = verify.robustness(net, x0, k, None, settings)
    name = settings.encodings[0]
    return {"answer": r.answers[name], "seconds": round(r.seconds[name], 4), "sizes": r.sizes.get(name, {}),
            "verified": r.verified}


def queries(net, images, ks, args):
    """Yield the rows of (2), one per image, k and method."""
    for i, k, e in tqdm([(i, k, e) for i in range(len(images)) for k in ks for e in verify.ENCODINGS],
                        desc="queries", unit="query"):
        row = query_row(net, images[i], k, verify.Settings((e,), threads=args.threads), args.limit)
        yield {"image": i, "k": k, "encoding": e, **row}


def minflips_row(net, images, i, encoding, args) -> dict:
    """Return the row of (4) for one image and method."""
    m = verify.min_flips(net, images[i], encoding, verify.Settings((encoding,), time_limit=args.minflips_limit,
                                                                   threads=args.threads))
    return {"image": i, "encoding": encoding, "min_flips": m.min_flips, "status": m.status,
            "upper_bound": m.upper_bound, "seconds": round(m.seconds, 3), "verified": m.verified}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--images", type=int, default=20, help="test images (the first ones)")
    p.add_argument("--flips", default="1,2,5,10", help="comma-separated budgets k")
    p.add_argument("--limit", type=float, default=5.0, help="seconds per query and encoding")
    p.add_argument("--compare-images", type=int, default=10, help="images for the encoding / SAT solver comparison")
    p.add_argument("--minflips-images", type=int, default=None,
                   help="images for minflips (default: 10; with --add: 0, the saved minflips kept)")
    p.add_argument("--minflips-limit", type=float, default=10.0, help="seconds per minflips search")
    p.add_argument("--report", action="store_true", help="only re-render the tables from the JSON file")
    p.add_argument("--threads", type=int, default=1, help="threads of the exact search")
    p.add_argument("--add", action="store_true", help="keep the saved run and only add the k-flip queries of "
                   "--flips (replacing those of the same k) and, with --minflips-images, the search's minflips")
    add_output_flags(p, "binary", "benchmarks/binary.json")
    args = p.parse_args()
    if args.minflips_images is None:
        args.minflips_images = 0 if args.add else 10
    if args.report:
        return report(read_json(saved_json(args, JSON)), args)
    out = output_json(args, JSON)
    net = network.load(REPO_ROOT / "models" / "binary_net.npz")
    test = load_test_set(verbose=False)
    ks = [int(k) for k in args.flips.split(",") if k.strip()]
    images = [network.binarize(test.x[i]) for i in range(args.images)]
    run = {"machine": machine_line(), "command": " ".join(sys.argv[1:]), "limit": args.limit, "sizes": {},
           "minflips_limit": args.minflips_limit,
           "queries": [], "compare": [], "minflips": []}
    if args.add:
        saved = read_json(saved_json(args, JSON))
        saved["queries"] = [q for q in saved["queries"] if q["k"] not in ks]
        saved["command"] += f"; then {' '.join(sys.argv[1:])}"
        saved["machine"] += f" Added queries: {machine_line()}"
        saved["queries"] += queries(net, images, ks, args)
        saved["queries"].sort(key=lambda q: (q["k"], q["image"]))
        if args.minflips_images:                 # the search's minflips again (e.g. with --threads)
            saved["minflips"] = [m for m in saved["minflips"] if m.get("encoding") != "search"]
            saved["minflips_search"] = {"limit": args.minflips_limit, "threads": args.threads}
            saved["minflips"] += [minflips_row(net, images, i, "search", args)
                                  for i in tqdm(range(args.minflips_images), desc="minflips", unit="image")]
        write_json(out, saved)
        return report(saved, args)
    for k in ks:                                              # (1) sizes
        for card in CARDINALITIES:
            if card in SLOW_TO_BUILD and k > 2:
                continue
            rows = []
            for x0 in images[:2]:
                q = compile_query(net, x0, k)
                if q.trivially is None:
                    start = time.perf_counter()
                    rows.append({**cnf.encode(q, card).sizes(), "seconds": time.perf_counter() - start})
            if rows:
                run["sizes"][f"{k}/{card}"] = {key: median(r.get(key, 0) for r in rows) for key in rows[0]}
    for row in queries(net, images, ks, args):                 # (2)
        run["queries"].append(row)
        write_json(out, run)
    jobs = [(i, k, card, "glucose4") for i in range(args.compare_images) for k in (1, 2) for card in CARDINALITIES
            if card != "native" and card not in SLOW_TO_BUILD]
    jobs += [(i, k, "native" if s in cnf.NATIVE_SOLVERS else cnf.DEFAULT_CARDINALITY, s)
             for i in range(args.compare_images) for k in (1, 2) for s in SAT_SOLVERS]
    for i, k, card, solver in tqdm(jobs, desc="compare", unit="query"):   # (3)
        row = query_row(net, images[i], k, verify.Settings(("cnf",), card, solver, check_with=None), args.limit)
        run["compare"].append({"image": i, "k": k, "cardinality": card, "sat_solver": solver, **row})
    write_json(out, run)
    for i, e in tqdm([(i, e) for i in range(args.minflips_images) for e in ("search", "cnf")], desc="minflips",
                     unit="run"):   # (4)
        run["minflips"].append(minflips_row(net, images, i, e, args))
        write_json(out, run)
    report(run, args)


def _median(values):
    return f"{median(values):.3f}" if values else "-"


def report(run: dict, args) -> None:
    lines = ["## Binarized network (binary.py, issue 14)", "", run["machine"], "",
             f"Shipped models/binary_net.npz (784-200-100-10, +-1 weights), first test images, HiGHS for MIP/IP, "
             f"{run['limit']:g} s per query; command: `benchmarks/bench_binary.py {run['command']}`.", "",
             *([run["note"], ""] if run.get("note") else []),
             "CNF size of the k-flip query (median over the first 2 images; totalizer and sortnetwrk, which PySAT builds "
             "without regard to the bound, only for k <= 2):", "",
             "| k | encoding | variables | clauses | native constraints | seconds to encode |", "|---|---|---|---|---|---|"]
    for key, s in run["sizes"].items():
        k, card = key.split("/")
        lines.append(f"| {k} | {card} | {s['variables']:,.0f} | {s['clauses']:,.0f} | "
                     f"{s.get('native_constraints', 0):,.0f} | {s['seconds']:.2f} |")
    lines += ["", "k-flip robustness queries (seconds include building the encoding; 'decided' = robust or "
              "counterexample within the limit; median over decided queries):", "",
              "| k | method | robust | counterexample | unknown | median s (decided) | median s (all, unknown at the "
              "limit) | disagreements |",
              "|---|---|---|---|---|---|---|---|"]
    queries = run["queries"]
    for k in sorted({q["k"] for q in queries}):
        answers = {}
        for q in queries:
            if q["k"] == k:
                answers.setdefault(q["image"], {})[q["encoding"]] = q["answer"]
        disagree = sum(len({a for a in v.values() if a != "unknown"}) > 1 for v in answers.values())
        for e in verify.ENCODINGS:
            rows = [q for q in queries if q["k"] == k and q["encoding"] == e]
            count = {a: sum(q["answer"] == a for q in rows) for a in ("robust", "counterexample", "unknown")}
            decided = [q["seconds"] for q in rows if q["answer"] != "unknown"]
            if not rows:
                continue
            lines.append(f"| {k} | {e} | {count['robust']} | {count['counterexample']} | {count['unknown']} | "
                         f"{_median(decided)} | {_median([q['seconds'] for q in rows])} | {disagree} |")
    lines += ["", "CNF per cardinality encoding / SAT solver, k = 1 and 2 (median s over all queries, unknown = "
              "limit):", "", "| cardinality | SAT solver | queries | unknown | median s |", "|---|---|---|---|---|"]
    pairs = {}
    for q in run["compare"]:
        pairs.setdefault((q["cardinality"], q["sat_solver"]), []).append(q)
    for (card, solver), rows in pairs.items():
        lines.append(f"| {card} | {solver} | {len(rows)} | {sum(q['answer'] == 'unknown' for q in rows)} | "
                     f"{_median([q['seconds'] for q in rows])} |")
    for e in ("search", "cnf"):
        mf = [m for m in run["minflips"] if m.get("encoding", "cnf") == e]
        if mf:
            proved = [m for m in mf if m["status"] == "optimal"]
            limit, extra = run.get("minflips_limit", "-"), ""
            if e == "search" and run.get("minflips_search"):
                limit = run["minflips_search"]["limit"]
                extra = f", {run['minflips_search']['threads']} threads"
            lines += ["", f"minflips ({e}, upward over k from the beam attack's bound, {limit} s limit{extra}): "
                      f"{len(proved)} of {len(mf)} proved; median {_median([m['seconds'] for m in mf])} s "
                      f"over all (unproved at the limit); minima {sorted(m['min_flips'] for m in proved)}; attack "
                      f"bounds {[m['upper_bound'] for m in mf]}; all verified: {all(m['verified'] for m in mf)}."]
    publish(args, "binary", "\n".join(lines))


if __name__ == "__main__":
    main()
