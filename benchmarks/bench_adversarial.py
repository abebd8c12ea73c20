"""Minimal adversarial examples (issue 12): seconds to a proven optimum per model x norm x target, against a plain MIP.

    python benchmarks/bench_adversarial.py [--models twoclass,multiclass,cnn_simple] [--norms l0,l2,l1,linf]
                                           [--images 5] [--targets N] [--limit S] [--plain-limit S]
                                           [--solver-limit S] [--no-plain]
                                           [--resume] [--report] [--update-results] [--out FILE]

Per query (model, test image, norm, target): ours (`adversarial.solve_target`, --solver auto: attack, bounds over
the region a better image lies in, the MIP with the attack's distance as cut-off), and in the same process the
plain encoding of the same problem on the same solver (`mip.min_distance` with interval bounds over [0, 1]^784:
big-M from interval arithmetic, no re-tightening, no cut-off), with --plain-limit seconds. For L2 also ours with
each of SCIP and CPLEX (the latter where the model fits the Community Edition's 1000 variables and rows), with
--solver-limit seconds. Every optimum is compared with the plain one where both are proved. Test images: the first
--images of the test set (twoclass: the first that are a 1 or a 3). With --update-results writes
benchmarks/adversarial.json and the section "adversarial" of benchmarks/RESULTS.md; without it prints the table and
writes the JSON under results/benchmarks/ (or --out), after every query; --resume keeps the queries already in it;
--report only re-renders the table.
"""
import argparse
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from statistics import median

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import (HelpFormatter, add_output_flags, machine_line, output_json, publish,  # noqa: E402
                               saved_json)
from explain_mnist import adversarial  # noqa: E402
from explain_mnist.bounds import interval_bounds  # noqa: E402
from explain_mnist.data import load_test_set  # noqa: E402
from explain_mnist.errors import UserError  # noqa: E402
from explain_mnist.mip import min_distance  # noqa: E402
from explain_mnist.models import load_network  # noqa: E402
from explain_mnist.results import read_json, write_json  # noqa: E402
from explain_mnist.solvers import available_solvers, choose_solver  # noqa: E402

JSON = Path(__file__).resolve().parent / "adversarial.json"
TWOCLASS_DIGITS = (1, 3)
L2_SOLVERS = ("scip", "cplex")     # L2: ours again with each of these (the open one and the Community Edition)
AGREE_RELATIVE = 1e-5              # two proved optima agree within this (solver tolerances)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--models", default="twoclass,multiclass,cnn_simple", help="comma-separated shipped models")
    p.add_argument("--norms", default="l0,l2,l1,linf", help="comma-separated norms")
    p.add_argument("--images", type=int, default=5, help="test images per model")
    p.add_argument("--targets", type=int, default=None, help="at most this many targets per image (default: all)")
    p.add_argument("--limit", type=float, default=300.0, help="time limit of ours per query, seconds")
    p.add_argument("--plain-limit", type=float, default=120.0, help="time limit of the plain MIP per query, seconds")
    p.add_argument("--solver-limit", type=float, default=60.0, help="time limit of ours per L2 query and solver")
    p.add_argument("--no-plain", action="store_true", help="skip the plain MIP (and the L2 solver comparison)")
    p.add_argument("--resume", action="store_true", help="keep the queries already in the JSON file, run the rest")
    p.add_argument("--report", action="store_true", help="only re-render the table from the JSON file")
    add_output_flags(p, "adversarial", "benchmarks/adversarial.json")
    args = p.parse_args()
    if args.report:
        run = read_json(saved_json(args, JSON))
        return report(run, args)
    out = output_json(args, JSON)
    run = read_json(out) if args.resume and out.exists() else {"rows": []}
    run.update(machine=machine_line(), command=command(args))
    done = {(r["model"], r["image"], r["norm"], r["target"]) for r in run["rows"]}
    test = load_test_set(verbose=False)
    queries = []
    for name in args.models.split(","):
        net = load_network(name)
        for index in images(name, test, args.images):
            x0 = test.x[index].astype(np.float64)
            c = int(net.predict(x0))
            for norm in args.norms.split(","):
                for t in adversarial.other_classes(net, c)[:args.targets]:
                    if (name, int(index), norm, t) not in done:
                        queries.append((name, net, int(index), x0, norm, t))
    for name, net, index, x0, norm, t in tqdm(queries, desc="adversarial", unit="query"):
        run["rows"].append(measure(net, name, index, x0, norm, t, args))
        r = run["rows"][-1]
        tqdm.write(f"{name} image {index} {norm} target {t}: {r['status']} {r['objective']} by {r['method']} in "
                   f"{r['seconds']:.2f} s ({r['solver']}); plain {r.get('plain_status')} {r.get('plain_seconds')}")
        write_json(out, run)
    report(run, args)


def images(name: str, test, k: int) -> list[int]:
    """Return the first k test images (twoclass: the first k that are a 1 or a 3)."""
    if name == "twoclass":
        return [int(i) for i in np.flatnonzero(np.isin(test.y, TWOCLASS_DIGITS))[:k]]
    return list(range(k))


def command(args) -> str:
    parts = ["python benchmarks/bench_adversarial.py"]
    defaults = {"models": "twoclass,multiclass,cnn_simple", "norms": "l0,l2,l1,linf", "images": 5, "targets": None,
                "limit": 300.0, "plain_limit": 120.0, "solver_limit": 60.0}
    for key, default in defaults.items():
        value = getattr(args, key)
        if value != default:
            parts.append(f"--{key.replace('_', '-')} {value:g}" if isinstance(value, float) else f"--{key} {value}")
    if args.no_plain:
        parts.append("--no-plain")
    return " ".join(parts)


def measure(net, name, index, x0, norm, t, args) -> dict:
    """Return one query's record: ours (auto), the plain MIP on the same solver, and for L2 ours per solver."""
    start = time.perf_counter()
    ours = adversarial.solve_target(net, x0, t, norm, time_limit=args.limit)
    row = dict(model=name, image=index, norm=norm, target=t, status=ours.status, objective=ours.objective,
               bound=ours.bound, method=ours.method, seconds=round(time.perf_counter() - start, 3),
               solver=ours.solver.split(" ")[0] if ours.solver else "none", unstable=ours.stages.get("unstable"))
    if args.no_plain:
        return row
    solver = row["solver"] if row["solver"] != "none" else None
    plain = plain_mip(net, x0, norm, t, solver, args.plain_limit)
    row.update(plain)
    if ours.status == "optimal" and plain["plain_status"] == "optimal":
        row["agree"] = agree(ours.objective, plain["plain_objective"], norm)
    if norm == "l2":
        for solver_name in L2_SOLVERS:
            if solver_name not in available_solvers():
                continue
            start = time.perf_counter()
            try:
                other = adversarial.solve_target(net, x0, t, norm, solver=solver_name, time_limit=args.solver_limit)
                row[f"{solver_name}_seconds"] = round(time.perf_counter() - start, 3)
                row[f"{solver_name}_status"] = other.status
            except UserError as exc:          # CPLEX Community Edition: over 1000 variables or rows
                row[f"{solver_name}_status"] = "too big" if "Community Edition" in str(exc) else f"error: {exc}"
    return row


def plain_mip(net, x0, norm, t, solver, limit) -> dict:
    """Return the plain MIP's record: interval bounds over [0, 1]^n, no cut-off, the given solver (auto if None)."""
    zeros, ones = np.zeros_like(x0), np.ones_like(x0)
    start = time.perf_counter()
    bounds = interval_bounds(net, zeros, ones)
    name = solver
    try:
        solve = min_distance(net, x0, zeros, ones, bounds, norm, net.spec_matrix(t), adversarial.MARGIN,
                             solver=solver or "auto", time_limit=limit, mip_gap=adversarial.MIP_GAP, abs_gap=0.0)
    except UserError as exc:
        if solver == "cplex" and "Community Edition" in str(exc):   # ours fitted CPLEX, the plain model does not
            name, _ = choose_solver(f"min_{norm}", 10 ** 6, 10 ** 6, quadratic=norm == "l2")
            solve = min_distance(net, x0, zeros, ones, bounds, norm, net.spec_matrix(t), adversarial.MARGIN,
                                 solver=name, time_limit=limit, mip_gap=adversarial.MIP_GAP, abs_gap=0.0)
        else:
            return dict(plain_status=f"error: {exc}", plain_seconds=None, plain_objective=None, plain_solver=solver)
    result = solve.result
    seconds = round(time.perf_counter() - start, 3)
    objective = None
    if solve.x is not None and int(net.predict(solve.x)) == t:
        objective = adversarial.distance(solve.x, x0, norm)
    status = result.status if result.status != "gap_limit" else "optimal"
    return dict(plain_status=status, plain_seconds=seconds, plain_objective=objective, plain_solver=solve.solver,
                plain_binaries=solve.model_size)


def agree(a: float | None, b: float | None, norm: str) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a == b if norm == "l0" else abs(a - b) <= AGREE_RELATIVE * max(abs(a), abs(b), 1e-12)


def report(run: dict, args) -> None:
    rows = run["rows"]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["norm"], r["target"])].append(r)
    lines = ["## Minimal adversarial examples (min_adv_card.py, min_adv_sum.py)", "", run["machine"],
             f"Command: `{run['command']}`, 1 thread. Ours: attack, bounds over the region a better image lies in, "
             "the MIP with the attack's distance as cut-off (solver chosen by --solver auto). Plain: the same MIP "
             "with interval big-M over [0, 1]^784, no re-tightening, no cut-off, on the same solver, in the same "
             "process, with the plain limit; ratio = plain / ours seconds ('>' where the plain MIP hit its limit).",
             ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        for norm in dict.fromkeys(r["norm"] for r in rows):
            sub = [r for r in rows if r["model"] == model and r["norm"] == norm]
            if not sub:
                continue
            seconds = [r["seconds"] for r in sub]
            proved = sum(r["status"] in ("optimal", "infeasible") for r in sub)
            lines.append(f"- {model} {norm}: {proved} of {len(sub)} proved; median {median(seconds):.2f} s, "
                         f"max {max(seconds):.2f} s; methods {dict(Counter(r['method'] for r in sub))}"
                         + ratio_text(sub))
    disagree = [r for r in rows if r.get("agree") is False]
    lines += ["", f"Optima compared with the plain MIP where both are proved: "
              f"{sum(r.get('agree') is True for r in rows)} agree, {len(disagree)} disagree"
              + "".join(f" ({r['model']} image {r['image']} {r['norm']} target {r['target']}: {r['objective']} "
                        f"against {r['plain_objective']})" for r in disagree) + "."]
    l2 = [r for r in rows if r["norm"] == "l2" and "scip_seconds" in r]
    if l2:
        fits = [r for r in l2 if "cplex_seconds" in r]
        scip_proved = sum(r["scip_status"] == "optimal" for r in l2)
        scip_median = median(r["scip_seconds"] for r in l2)
        lines += ["", f"L2 per solver (ours, --solver-limit each): SCIP median {scip_median:.2f} s over {len(l2)} "
                  f"queries ({scip_proved} proved); on the {len(fits)} whose model fits the CPLEX "
                  "Community Edition, SCIP "
                  + (f"{median(r['scip_seconds'] for r in fits):.2f} s against CPLEX "
                     f"{median(r['cplex_seconds'] for r in fits):.2f} s (medians)" if fits else "n/a") + "."]
    lines += ["", "| model | norm | target | queries | proved | median s | max s | methods | solver | plain median s "
              "| ratio (median) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, norm, target), sub in groups.items():
        seconds = [r["seconds"] for r in sub]
        plain = [r["plain_seconds"] for r in sub if r.get("plain_seconds") is not None]
        cells = [model, norm, target, len(sub), sum(r["status"] in ("optimal", "infeasible") for r in sub),
                 f"{median(seconds):.2f}", f"{max(seconds):.2f}", ", ".join(sorted({r["method"] for r in sub})),
                 ", ".join(sorted({r["solver"] for r in sub})), f"{median(plain):.2f}" if plain else "-",
                 ratio_cell(sub)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    publish(args, "adversarial", "\n".join(lines))


def ratios(sub: list) -> tuple[list, bool]:
    values, capped = [], False
    for r in sub:
        if r.get("plain_seconds") is None:
            continue
        values.append(r["plain_seconds"] / max(r["seconds"], 1e-3))
        capped |= r["plain_status"] != "optimal" and r["plain_status"] != "infeasible"
    return values, capped


def ratio_text(sub: list) -> str:
    values, capped = ratios(sub)
    return f"; plain / ours median {'>' if capped else ''}{median(values):.1f}x" if values else ""


def ratio_cell(sub: list) -> str:
    values, capped = ratios(sub)
    return f"{'>' if capped else ''}{median(values):.1f}x" if values else "-"


if __name__ == "__main__":
    main()
