"""Measure the core pipeline (bounds -> MIP encoding -> solver) on the shipped models, per bound method and backend.

    python benchmarks/bench_core.py [--images N] [--time-limit S] [--solvers highs,scip,cplex] [--quick]
                                    [--update-results]

For each shipped model, each of the first N test images (the same images for every model, also for
twoclass, which only knows the digits 1 and 3: there the images only choose c and the box) and two
input boxes:

- ``full``: the whole ``[0, 1]^784``;
- ``fixed 90%``: 90 % of the pixels fixed to the image (chosen by a RNG seeded with the image
  index), the other 10 % free in ``[0, 1]``;

it computes the pre-activation bounds by each method (interval, crown, lp), then for each backend
builds a `NetworkMIP` on those bounds and solves ``max_gap(c, j)``, the largest ``logit_j - logit_c``
over the box (c the predicted class of the image, j the runner-up; a negative value proves that no
input of the box reaches class j). "Build" is the encoding plus loading the model into the solver,
"solve" the solver's own time. The exact value must not depend on the bounds or the backend, and must
not exceed the bound method's own upper bound on the gap: both are checked, and any failure is
printed in the table, never asserted. Medians over the images are printed, and with --update-results written
to benchmarks/RESULTS.md (section "core").
"""
import argparse
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path
from statistics import median

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import add_output_flags, machine_line, publish  # noqa: E402
from explain_mnist.bounds import compute_bounds  # noqa: E402
from explain_mnist.data import load_test_set  # noqa: E402
from explain_mnist.errors import UserError  # noqa: E402
from explain_mnist.mip import NetworkMIP  # noqa: E402
from explain_mnist.models import SHIPPED_MODELS, load_network  # noqa: E402
from explain_mnist.solvers import available_solvers  # noqa: E402

BOXES = ("full", "fixed 90%")
BOUND_METHODS = ("interval", "crown", "lp")
FREE_FRACTION = 0.1
SEED = 2024
# two exact values agree if they differ by less than what the solvers' default gaps (1e-4 relative,
# 1e-6 absolute) allow each of them, with room to spare
AGREE_RELATIVE = 3e-4
AGREE_ABSOLUTE = 1e-5
# --quick skips these (model, box, backend) combinations: SCIP on a full box takes up to ~45 s a solve
QUICK_SKIPS = {("twoclass", "full", "scip"), ("multiclass", "full", "scip"), ("cnn_simple", "full", "scip")}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=3, help="number of test images per model (default 3)")
    p.add_argument("--time-limit", type=float, default=60.0, help="time limit per solve in seconds (default 60)")
    p.add_argument("--solvers", default=None, help="comma-separated backends (default: all installed)")
    p.add_argument("--quick", action="store_true", help="1 image, and skip SCIP on the full boxes")
    add_output_flags(p, "core")
    args = p.parse_args()
    try:
        solvers = choose_solvers(args.solvers)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    n_images = 1 if args.quick else args.images
    if n_images < 1:
        print("error: --images must be at least 1", file=sys.stderr)
        sys.exit(2)

    test_set = load_test_set(verbose=False)
    networks = {name: load_network(name) for name in SHIPPED_MODELS}
    jobs = [(name, index) for name in SHIPPED_MODELS for index in range(n_images)]
    records = []        # one per (model, image, box, bound method, backend)
    bound_records = []  # one per (model, image, box, bound method)
    progress = tqdm(total=len(jobs) * len(BOXES) * len(BOUND_METHODS), desc="core", unit="bounds")
    for name, index in jobs:
        net = networks[name]
        x = test_set.x[index].astype(np.float64)
        c, j = class_and_runner_up(net, x)
        spec_row = net.spec_matrix(c)[net.spec_classes(c).index(j)][None, :]
        for box in BOXES:
            lo, hi = make_box(box, x, index)
            for method in BOUND_METHODS:
                progress.set_postfix_str(f"{name} img {index} {box} {method}")
                bounds = compute_bounds(net, lo, hi, method, C=spec_row)
                common = {"model": name, "image": index, "label": int(test_set.y[index]), "c": c, "j": j,
                          "box": box, "bounds": method}
                bound_records.append({**common, "seconds": bounds.seconds, "binaries": bounds.n_unstable(),
                                      "neurons": sum(a.n_out for a in net.hidden),
                                      "gap_bound": -float(bounds.spec_lower[0, 0])})
                for solver in solvers:
                    if args.quick and (name, box, solver) in QUICK_SKIPS:
                        continue
                    records.append({**common, "solver": solver,
                                    **solve_max_gap(net, lo, hi, bounds, solver, args.time_limit, c, j, spec_row)})
                    r = records[-1]
                    if r["status"] not in ("optimal", "too big"):
                        tqdm.write(f"{name} img {index} {box} {method} {solver}: {r['status']} {r['message']}")
                progress.update()
    progress.close()
    report(records, bound_records, solvers, args, n_images)


def choose_solvers(option: str | None) -> list[str]:
    """Return the backends to measure: the named ones (each must be installed) or all installed ones."""
    installed = available_solvers()
    if option is None:
        if not installed:
            raise UserError("no MIP solver is installed: pip install highspy pyscipopt cplex")
        return installed
    names = [s.strip() for s in option.split(",") if s.strip()]
    missing = [s for s in names if s not in installed]
    if missing or not names:
        raise UserError(f"--solvers: {', '.join(missing) or '(none given)'} not installed; "
                        f"installed: {', '.join(installed) or 'none'}")
    return names


def class_and_runner_up(net, x: np.ndarray) -> tuple[int, int]:
    """Return the predicted class of ``x`` and the class with the next largest logit (the other class if binary)."""
    logits = net.forward(x[None, :])[0]
    c = int(net.classify_logits(logits[None, :])[0])
    if net.decision == "sigmoid":
        return c, 1 - c
    order = [int(k) for k in np.argsort(-logits, kind="stable") if k != c]
    return c, order[0]


def make_box(box: str, x: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(lo, hi)`` of the named box around image ``x`` (test image ``index`` seeds the free pixels)."""
    if box == "full":
        return np.zeros_like(x), np.ones_like(x)
    rng = np.random.default_rng([SEED, index])
    free = rng.choice(x.size, size=int(round(FREE_FRACTION * x.size)), replace=False)
    lo, hi = x.copy(), x.copy()
    lo[free], hi[free] = 0.0, 1.0
    return lo, hi


def solve_max_gap(net, lo, hi, bounds, solver, time_limit, c, j, spec_row) -> dict:
    """Build a NetworkMIP with ``bounds`` on ``solver``, solve max_gap(c, j) and return the measurements."""
    start = time.perf_counter()
    mip = NetworkMIP(net, lo, hi, bounds=bounds, solver=solver, time_limit=time_limit)
    encoded = time.perf_counter()
    size = {"cols": mip.model.n_cols, "rows": mip.model.n_rows, "n_binaries": mip.n_binaries}
    try:
        value, point, result = mip.max_gap(c, j)
    except UserError as e:
        too_big = "Community Edition" in str(e)
        return {"status": "too big" if too_big else "error", "message": str(e), "value": None, **size}
    wall = time.perf_counter() - encoded
    record = {"status": result.status, "value": value, "best_bound": result.best_bound, "nodes": result.nodes,
              "solve": result.seconds, "build": encoded - start + max(wall - result.seconds, 0.0),
              "message": result.message, "forward_gap": None, **size}
    if point is not None:
        record["forward_gap"] = -float(spec_row[0] @ net.forward(point[None, :])[0])
    return record


# ------------------------------------------------------------------------------------------------------
# report


def tolerance(value: float) -> float:
    return AGREE_RELATIVE * abs(value) + AGREE_ABSOLUTE


def check_case(runs: list[dict], gap_bounds: dict) -> list[str]:
    """Return the problems of one (model, image, box): values that disagree across bounds and backends,
    a value above a bound method's upper bound, a point whose forward pass does not give its value."""
    problems = []
    optimal = [r for r in runs if r["status"] == "optimal" and r["value"] is not None]
    if optimal:
        values = [r["value"] for r in optimal]
        reference = median(values)
        if max(values) - min(values) > tolerance(reference):
            spread = ", ".join(f"{r['bounds']}/{r['solver']} {r['value']:.6g}" for r in optimal)
            problems.append(f"values disagree: {spread}")
        for r in runs:
            if r["status"] in ("optimal", "too big", "error"):
                continue
            if r["value"] is not None and r["value"] > reference + tolerance(reference):
                problems.append(f"{r['bounds']}/{r['solver']} ({r['status']}) found {r['value']:.6g} > optimum")
            if r.get("best_bound") is not None and r["best_bound"] < reference - tolerance(reference):
                problems.append(f"{r['bounds']}/{r['solver']} ({r['status']}) proved bound "
                                f"{r['best_bound']:.6g} < optimum")
        for method, bound in gap_bounds.items():
            if reference > bound + tolerance(bound):
                problems.append(f"{method} bound on the gap {bound:.6g} < exact {reference:.6g}")
    for r in runs:
        if r.get("forward_gap") is not None and abs(r["forward_gap"] - r["value"]) > tolerance(r["value"]) * 10:
            problems.append(f"{r['bounds']}/{r['solver']}: forward pass {r['forward_gap']:.6g} at its point, "
                            f"solver value {r['value']:.6g}")
    return problems


def exact_value(runs: list[dict]) -> float | None:
    values = [r["value"] for r in runs if r["status"] == "optimal" and r["value"] is not None]
    return median(values) if values else None


def fmt(value: float, digits: int = 2) -> str:
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}" if value >= 0.01 or value == 0 else f"{value:.3f}"


def backend_cell(runs: list[dict]) -> str:
    """Return 'build s / solve s (nodes)' medians over the images, with the statuses that were not optimal."""
    if not runs:
        return "skipped"
    if all(r["status"] == "too big" for r in runs):
        return "too big"
    timed = [r for r in runs if "solve" in r]
    cell = (f"{fmt(median(r['build'] for r in timed))} / {fmt(median(r['solve'] for r in timed))} "
            f"({median(r['nodes'] for r in timed):g})") if timed else ""
    others = defaultdict(int)
    for r in runs:
        if r["status"] != "optimal":
            others[r["status"]] += 1
    if others:
        cell += " " + ", ".join(f"**{n} {status}**" for status, n in sorted(others.items()))
    return cell.strip()


def report(records, bound_records, solvers, args, n_images):
    by_case = defaultdict(list)
    for r in records:
        by_case[(r["model"], r["image"], r["box"])].append(r)
    bounds_by_case = defaultdict(dict)
    for b in bound_records:
        bounds_by_case[(b["model"], b["image"], b["box"])][b["bounds"]] = b["gap_bound"]
    problems = {key: check_case(runs, bounds_by_case[key]) for key, runs in by_case.items()}
    unstable = {(b["model"], b["image"], b["box"], b["bounds"]): b["binaries"] for b in bound_records}
    for r in records:
        expected = unstable[(r["model"], r["image"], r["box"], r["bounds"])]
        if r["n_binaries"] != expected:
            problems[(r["model"], r["image"], r["box"])].append(
                f"{r['bounds']}/{r['solver']}: the MIP has {r['n_binaries']} binaries, the bounds {expected} unstable")

    command = "python benchmarks/bench_core.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:])
    lines = [f"## Core: bounds, MIP build and max-gap solve per backend ({n_images} image"
             f"{'s' if n_images > 1 else ''} per model)", "", machine_line(),
             f"Command: `{command}`, time limit {args.time_limit:g} s per solve, 1 thread.", "",
             "Query: `max_gap(c, j)` = the largest `logit_j - logit_c` over the box (c = predicted class, j = runner-up; "
             "negative = class j unreachable). Boxes: the full `[0,1]^784`, and 90 % of the pixels fixed to the image "
             f"(seeded RNG), 10 % free in [0,1]. Test images 0..{n_images - 1} for every model (twoclass, digits 1 vs 3, "
             "predicts its own class for them). "
             "Medians over the images; a backend cell is `build s / solve s (B&B nodes)`, build = encoding + loading "
             "into the solver; `too big` = over the CPLEX Community Edition limit (1000 variables and 1000 rows). "
             "`binaries` before = hidden neurons, after = unstable neurons left by the bounds; `gap bound` = the "
             "bound method's own upper bound on the max gap; `MIP cols x rows` = the size of the encoding "
             "(pixels that are fixed or have no weight get no column).", "",
             "| model | box | bounds | binaries before | binaries after | MIP cols x rows | bound s | gap bound | "
             + " | ".join(solvers) + " | check |",
             "|---|---|---|---|---|---|---|---|" + "---|" * len(solvers) + "---|"]
    for name in SHIPPED_MODELS:
        for box in BOXES:
            case_problems = [p for (m, _, b), ps in problems.items() if m == name and b == box for p in ps]
            for method in BOUND_METHODS:
                bs = [b for b in bound_records if b["model"] == name and b["box"] == box and b["bounds"] == method]
                if not bs:
                    continue
                cells = []
                for solver in solvers:
                    runs = [r for r in records if r["model"] == name and r["box"] == box and r["bounds"] == method
                            and r["solver"] == solver]
                    cells.append(backend_cell(runs))
                check = f"**FAIL ({len(case_problems)})**" if case_problems else "ok"
                sized = [r for r in records if r["model"] == name and r["box"] == box and r["bounds"] == method]
                mip_size = (f"{median(r['cols'] for r in sized):g} x {median(r['rows'] for r in sized):g}"
                            if sized else "")
                lines.append(f"| {name} | {box} | {method} | {bs[0]['neurons']} | "
                             f"{median(b['binaries'] for b in bs):g} | {mip_size} | "
                             f"{fmt(median(b['seconds'] for b in bs), 3)} | "
                             f"{median(b['gap_bound'] for b in bs):.3g} | " + " | ".join(cells) + f" | {check} |")
    all_problems = [f"{m} image {i} {b}: {p}" for (m, i, b), ps in sorted(problems.items()) for p in ps]
    lines += ["", "Exact max gaps (c -> j: value) per image: " + "; ".join(
        f"{name} {box}: " + ", ".join(
            f"#{i} {runs[0]['c']}->{runs[0]['j']}: {v:.3g}" if (v := exact_value(runs)) is not None
            else f"#{i} {runs[0]['c']}->{runs[0]['j']}: unsolved"
            for (m, i, b), runs in sorted(by_case.items()) if m == name and b == box)
        for name in SHIPPED_MODELS for box in BOXES
        if any(m == name and b == box for (m, _, b) in by_case)) + "."]
    if all_problems:
        lines += ["", f"**{len(all_problems)} CHECK FAILURES** (values across bounds/backends, bounds, forward pass):", ""]
        lines += [f"- **{p}**" for p in all_problems]
    else:
        lines += ["", "Checks: every backend and every bound method gave the same exact value per image (within the "
                  "solvers' gaps), no value exceeded a bound method's gap bound, every returned point's forward pass "
                  "matched its value, every MIP had one binary per unstable neuron."]
    lines += ["", "Observations (computed from the rows above):", ""] + observations(records, bound_records, solvers)
    publish(args, "core", "\n".join(lines))


def observations(records, bound_records, solvers) -> list[str]:
    """Return bullet lines: the fastest backend per (model, box), and what CROWN and LP bounds save."""
    out = []
    for name in SHIPPED_MODELS:
        for box in BOXES:
            bs = {m: [b for b in bound_records if b["model"] == name and b["box"] == box and b["bounds"] == m]
                  for m in BOUND_METHODS}
            if not bs["interval"]:
                continue
            totals = {}
            for method in BOUND_METHODS:
                for solver in solvers:
                    runs = [r for r in records if r["model"] == name and r["box"] == box and r["bounds"] == method
                            and r["solver"] == solver]
                    if runs and all(r["status"] == "optimal" for r in runs):
                        totals[(method, solver)] = median(r["build"] + r["solve"] for r in runs)
            binaries = {m: median(b["binaries"] for b in bs[m]) for m in BOUND_METHODS}
            text = f"- {name}, {box}: binaries interval {binaries['interval']:g} -> crown {binaries['crown']:g} -> " \
                   f"lp {binaries['lp']:g}"
            if binaries["interval"] > 0:
                text += f" ({100 * (1 - binaries['lp'] / binaries['interval']):.0f} % fewer with lp)"
            if totals:
                (method, solver), best = min(totals.items(), key=lambda kv: kv[1])
                text += f"; fastest build+solve: {solver} on {method} bounds, {fmt(best)} s"
                per_solver = []
                for s in solvers:
                    if ("interval", s) in totals and ("lp", s) in totals:
                        lp_total = totals[("lp", s)] + median(b["seconds"] for b in bs["lp"])
                        per_solver.append(f"{s} {fmt(totals[('interval', s)])} -> {fmt(lp_total)} s")
                if per_solver:
                    text += "; interval -> lp bounds (incl. bound time): " + ", ".join(per_solver)
            unsolved = {r["solver"] for r in records if r["model"] == name and r["box"] == box
                        and r["status"] not in ("optimal", "too big")}
            if unsolved:
                text += f"; not always solved by {', '.join(sorted(unsolved))}"
            out.append(text + ".")
    return out


if __name__ == "__main__":
    main()
