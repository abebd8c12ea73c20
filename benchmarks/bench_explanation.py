"""Formal explanations (issue 13): seconds, oracle calls and sizes per image, against one-pixel-at-a-time loops.

    python benchmarks/bench_explanation.py [--settings twoclass,multiclass_eps0.05] [--images 20] [--limit 60]
                                           [--baseline-images 5] [--baseline-limit 120] [--mip-images 1]
                                           [--mip-limit 120] [--batch-images 0] [--batch-settings ...] [--batch-repeats 1]
                                           [--smallest-images 0] [--add] [--batch-only]
                                           [--report]
                                           [--update-results]

Settings: ``twoclass`` (full [0, 1] domain, the first --images test images that are a 1 or a 3),
``multiclass_eps0.05`` (L-inf ball of 0.05, the first --images test images), ``multiclass`` and ``cnn_simple``
(full domain). Per image: ours (`explanation.subset_minimal`, sensitivity order, --limit seconds) with its size,
status, oracle calls and how they were decided, every witness checked by the forward pass. In the same run, on
the first --baseline-images of each setting, the plain deletion loop with the same verifier: pixels in index
order, one verifier query per pixel (784 queries; a fresh `Verifier` per image, --baseline-limit seconds per
image, then the pixels not reached are counted as not done). And on the first --mip-images, the plain MIP loop of
the original: one MIP per pixel (`mip.NetworkMIP` built once over [0, 1]^784 with interval bounds, the box set per
pixel, `counterexample`), for at most --mip-limit seconds: its per-image time is the mean seconds per pixel times
784, an extrapolation, marked as such. --batch-images N: min_explanation.py --indices 0:N --jobs 1 and then
--jobs 2 on each of --batch-settings (multiclass eps 0.05, twoclass / multiclass / cnn_simple full domain), wall
seconds of each (fresh out-dirs), --batch-repeats times alternating; --batch-only re-measures only that (the
rows of the settings it does not name are kept). --smallest-images N: `explanation.smallest` on the first N test
images (multiclass, each of --smallest-epsilons, --limit s).
--add keeps the settings already in the JSON file and adds (or replaces) those of --settings.
With --update-results writes benchmarks/explanation.json and the section "explanation" of benchmarks/RESULTS.md.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import (HelpFormatter, add_output_flags, machine_line, output_json, publish,  # noqa: E402
                               saved_json)
from explain_mnist import explanation as ex  # noqa: E402
from explain_mnist.data import load_test_set  # noqa: E402
from explain_mnist.models import load_network  # noqa: E402
from explain_mnist.results import read_json, write_json  # noqa: E402
from explain_mnist.verifier import Verifier  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
JSON = REPO / "benchmarks" / "explanation.json"
SETTINGS = {"twoclass": ("twoclass", None), "multiclass_eps0.05": ("multiclass", 0.05),
            "multiclass": ("multiclass", None), "cnn_simple": ("cnn_simple", None)}
VERIX_PLUS = "VeriX+ (MNIST-FC 784-10-10-10, eps 0.05, first 100 test images, 16 CPUs): 168-179 pixels, 28-35 s"


def test_indices(test, model, n):
    """Return the benchmark's test images: for twoclass the first that are a 1 or a 3, else the first n."""
    if model == "twoclass":
        return [int(i) for i in np.flatnonzero(np.isin(test.y, (1, 3)))[:n]]
    return list(range(n))


def plain_verifier_loop(net, x0, epsilon, limit):
    """Return the one-pixel-at-a-time deletion loop's record (index order, one verifier query per pixel)."""
    start, cpu = time.perf_counter(), time.process_time()
    c = int(net.predict(x0))
    lo, hi = ex.pixel_ranges(x0, epsilon)
    verifier = Verifier(net)
    free = np.zeros(x0.size, dtype=bool)
    calls, done = 0, 0
    for p in range(x0.size):
        left = limit - (time.perf_counter() - start)
        if left <= 0:
            break
        trial = free.copy()
        trial[p] = True
        v = verifier.verify(np.where(trial, lo, x0), np.where(trial, hi, x0), c, time_limit=left)
        calls += 1
        if v.verdict == "unknown":
            break
        done += 1
        if v.verdict == "robust":
            free = trial
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu, "calls": calls,
            "pixels_done": done,
            "size": int(x0.size - free.sum()) if done == x0.size else None}


def plain_mip_loop(net, x0, epsilon, limit):
    """Return the plain MIP loop's record: one MIP per pixel (index order) for at most ``limit`` seconds."""
    from explain_mnist.mip import NetworkMIP
    start, cpu = time.perf_counter(), time.process_time()
    c = int(net.predict(x0))
    lo, hi = ex.pixel_ranges(x0, epsilon)
    mip = NetworkMIP(net, lo, hi)
    free = np.zeros(x0.size, dtype=bool)
    done = 0
    for p in range(x0.size):
        left = limit - (time.perf_counter() - start)
        if left <= 0:
            break
        trial = free.copy()
        trial[p] = True
        mip.set_box(np.where(trial, lo, x0), np.where(trial, hi, x0))
        mip.time_limit = left
        x, result = mip.counterexample(c)
        if x is None and result.status != "infeasible":
            break
        done += 1
        if x is None:
            free = trial
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": time.process_time() - cpu, "pixels_done": done, "per_pixel": seconds / max(done, 1),
            "extrapolated_seconds": seconds / max(done, 1) * x0.size, "solver": mip.solver_choices.get(
                "counterexample", ("?", ""))[0]}


def run_setting(name, args, pbar):
    model, epsilon = SETTINGS[name]
    net = load_network(model)
    test = load_test_set(verbose=False)
    rows = []
    for k, index in enumerate(test_indices(test, model, args.images)):
        x0 = test.x[index].astype(np.float64)
        cpu = time.process_time()
        r = ex.subset_minimal(net, x0, epsilon=epsilon, time_limit=args.limit)
        cpu = time.process_time() - cpu
        problems = ex.check_witnesses(net, x0, r)
        row = {"index": index, "seconds": r.seconds, "cpu_seconds": cpu, "size": r.size, "status": r.status,
               "undecided": len(r.undecided), "oracle_calls": r.oracle_calls, "decided_by": r.decided_by,
               "pixels_by": r.pixels_by, "batch_attacks": r.batch_attacks, "witness_problems": problems}
        if k < args.baseline_images:
            row["plain_verifier"] = plain_verifier_loop(net, x0, epsilon, args.baseline_limit)
        if k < args.mip_images:
            row["plain_mip"] = plain_mip_loop(net, x0, epsilon, args.mip_limit)
        rows.append(row)
        pbar.update(1)
    return {"setting": name, "model": model, "epsilon": epsilon, "rows": rows}


def smallest_runs(n, limit, epsilons):
    """Return `explanation.smallest` records on the first ``n`` test images, multiclass, for each epsilon
    (``limit`` s each)."""
    net = load_network("multiclass")
    test = load_test_set(verbose=False)
    rows = []
    for epsilon, index in ((e, i) for e in epsilons for i in range(n)):
        cpu = time.process_time()
        r = ex.smallest(net, test.x[index].astype(np.float64), epsilon=epsilon, time_limit=limit)
        rows.append({"epsilon": epsilon, "index": index, "seconds": r.seconds,
                     "cpu_seconds": time.process_time() - cpu, "size": r.size, "subset_size": r.subset_size,
                     "lower_bound": r.lower_bound, "status": r.status, "hitting_sets": r.hitting_sets,
                     "oracle_calls": r.oracle_calls})
    return {"limit": limit, "rows": rows}


BATCH_SETTINGS = {"multiclass eps 0.05": ["--model", "multiclass", "--epsilon", "0.05"],
                  "twoclass full [0, 1]": ["--model", "twoclass"],
                  "multiclass full [0, 1]": ["--model", "multiclass"],
                  "cnn_simple full [0, 1]": ["--model", "cnn_simple"]}


def batch_timing(n, names, repeats=1):
    """Return, per setting of `BATCH_SETTINGS` named in ``names``, the wall seconds of min_explanation.py
    --indices 0:n with --jobs 1 and --jobs 2, ``repeats`` times, alternating: the whole process, and its batch phase
    (the summary's ``wall_seconds_batch``: from the first task to the last result checked and saved; it includes
    TensorFlow's start for the first Keras re-check). The speedup is the ratio of the medians. The converted
    networks are cached before (`models.load_network`), as after any first run."""
    rows = []
    for name in names:
        flags = BATCH_SETTINGS[name]
        load_network(flags[1])
        out, phase = {1: [], 2: []}, {1: [], 2: []}
        for _ in range(repeats):
            for jobs in (1, 2):
                with tempfile.TemporaryDirectory() as folder:
                    start = time.perf_counter()
                    subprocess.run([sys.executable, "min_explanation.py", *flags, "--indices", f"0:{n}", "--jobs",
                                    str(jobs), "--out-dir", folder, "--no-figure"], cwd=REPO, check=True,
                                   capture_output=True)
                    out[jobs].append(time.perf_counter() - start)
                    summary = json.loads((Path(folder) / "summary.json").read_text())
                    phase[jobs].append(summary["wall_seconds_batch"])
        mid = {key: {jobs: median(v) for jobs, v in d.items()} for key, d in (("out", out), ("phase", phase))}
        rows.append({"setting": name, "images": n, "repeats": repeats,
                     "jobs1_seconds": mid["out"][1], "jobs2_seconds": mid["out"][2],
                     "speedup": mid["out"][1] / mid["out"][2],
                     "jobs1_batch_seconds": mid["phase"][1], "jobs2_batch_seconds": mid["phase"][2],
                     "batch_speedup": mid["phase"][1] / mid["phase"][2],
                     "jobs1_runs": out[1], "jobs2_runs": out[2],
                     "jobs1_batch_runs": phase[1], "jobs2_batch_runs": phase[2]})
    return {"rows": rows}


def batch_names(args):
    """Return the batch settings named by --batch-settings (an error naming the known ones otherwise)."""
    names = [name.strip() for name in args.batch_settings.split(";") if name.strip()]
    unknown = [name for name in names if name not in BATCH_SETTINGS]
    if unknown:
        raise SystemExit(f"error: unknown batch setting {unknown[0]!r}; known: {'; '.join(BATCH_SETTINGS)}")
    if args.batch_repeats < 1:
        raise SystemExit(f"error: --batch-repeats must be at least 1, got {args.batch_repeats}")
    return names


def add_batch_timing(run: dict, args, own_machine_line: bool = False) -> None:
    """Measure the batch settings of ``args`` and merge them into ``run["batch"]`` (with their own machine line when
    the run's is from an earlier measurement)."""
    fresh = batch_timing(args.batch_images, batch_names(args), args.batch_repeats)
    if own_machine_line:
        fresh["machine"] = machine_line()
    run["batch"] = merged_batch(run.get("batch"), fresh)


def merged_batch(old, new):
    """Return the batch timing ``new`` with the rows of ``old`` for the settings it did not measure kept."""
    measured = {row["setting"] for row in new["rows"]}
    kept = [row for row in (old or {}).get("rows", []) if row["setting"] not in measured]
    return {**new, "rows": kept + new["rows"]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--settings", default="twoclass,multiclass_eps0.05", help=f"comma-separated: {', '.join(SETTINGS)}")
    p.add_argument("--images", type=int, default=20, help="test images per setting")
    p.add_argument("--limit", type=float, default=60.0, help="time limit of ours per image, seconds")
    p.add_argument("--baseline-images", type=int, default=5, help="images per setting for the plain verifier loop")
    p.add_argument("--baseline-limit", type=float, default=120.0, help="seconds per image of the plain verifier loop")
    p.add_argument("--mip-images", type=int, default=1, help="images per setting for the plain MIP loop")
    p.add_argument("--mip-limit", type=float, default=120.0, help="seconds per image of the plain MIP loop")
    p.add_argument("--batch-images", type=int, default=0, help="images of the --jobs 1 / --jobs 2 batch timing")
    p.add_argument("--batch-settings", default="multiclass eps 0.05;twoclass full [0, 1]",
                   help=f"semicolon-separated settings of the batch timing: {'; '.join(BATCH_SETTINGS)}")
    p.add_argument("--batch-repeats", type=int, default=1,
                   help="runs of each --jobs count per batch setting, alternating (the medians are compared)")
    p.add_argument("--report", action="store_true", help="only re-render the table from the JSON file")
    p.add_argument("--smallest-images", type=int, default=0,
                   help="also run --smallest on the first N test images (multiclass, --limit s each)")
    p.add_argument("--smallest-epsilons", default="0.05", help="comma-separated epsilons of the --smallest runs")
    p.add_argument("--add", action="store_true",
                   help="keep the settings (and batch timing) already in the JSON file; run and add --settings")
    p.add_argument("--batch-only", action="store_true",
                   help="only (re-)measure the batch timing (--batch-images) into the JSON file, then re-render")
    add_output_flags(p, "explanation", "benchmarks/explanation.json")
    args = p.parse_args()
    if args.report:
        return report(read_json(saved_json(args, JSON)), args)
    if args.batch_only:
        run = read_json(saved_json(args, JSON))
        add_batch_timing(run, args, own_machine_line=True)
        write_json(output_json(args, JSON), run)
        return report(run, args)
    out = output_json(args, JSON)
    run = {"machine": machine_line(), "command": " ".join(["python benchmarks/bench_explanation.py"] + sys.argv[1:]),
           "settings": [], "batch": None, "smallest": None}
    names = [s for s in args.settings.split(",") if s]
    if args.add:
        old = read_json(saved_json(args, JSON))
        run["batch"] = old.get("batch")
        run["smallest"] = old.get("smallest")
        run["settings"] = [s for s in old["settings"] if s["setting"] not in names]
        run["command"] = old["command"] + "; then " + run["command"]
        run["machine"] = old["machine"] + " Added settings: " + run["machine"]
    with tqdm(total=len(names) * args.images, desc="images", unit="image") as pbar:
        for name in names:
            run["settings"].append(run_setting(name, args, pbar))
            write_json(out, run)
    if args.smallest_images:
        run["smallest"] = smallest_runs(args.smallest_images, args.limit,
                                        [float(e) for e in args.smallest_epsilons.split(",")])
        write_json(out, run)
    if args.batch_images:
        add_batch_timing(run, args)
        write_json(out, run)
    report(run, args)


def batch_runs(row) -> str:
    """Return the runs behind a batch row's medians, where it has more than one per --jobs count."""
    if row.get("repeats", 1) <= 1:
        return ""
    pairs = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(row["jobs1_runs"], row["jobs2_runs"]))
    phases = ", ".join(f"{a:.1f}/{b:.1f}" for a, b in zip(row.get("jobs1_batch_runs", []),
                                                           row.get("jobs2_batch_runs", [])))
    return (f" [medians of {row['repeats']} alternating runs, --jobs 1/--jobs 2 s: {pairs}"
            + (f"; batch phases {phases}" if phases else "") + "]")


def fmt(values, spec=".2f"):
    return "-" if not values else format(median(values), spec)


def report(run, args):
    lines = ["## Formal explanations (min_explanation.py)", "", run["machine"], f"Command: `{run['command']}`.",
             "Ours: `explanation.subset_minimal` (sensitivity order; chunked deletion, counterexample shrinking, "
             "batched single-pixel extensions, hard single pixels decided by the verifier that falls back to the MIP), one thread, "
             "every witness checked by the forward pass. Baselines in the same run: the plain verifier loop (index "
             "order, one query of the same `Verifier` per pixel, 784 queries) and the plain MIP loop of the "
             "original (one MIP per pixel on one model re-solved with the box changed; its per-image time is "
             "extrapolated from the pixels it did within its limit).", "",
             "| setting | images | median s | max s | median CPU s | max CPU s | median oracle calls | median size | min-max size | statuses | "
             "decided by (calls) | kept by extensions / query | plain verifier loop: median s (images) | "
             "plain MIP loop: s per pixel, extrapolated s per image |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in run["settings"]:
        rows = s["rows"]
        secs = [r["seconds"] for r in rows]
        cpus = [r.get("cpu_seconds", float("nan")) for r in rows]
        statuses, methods = {}, {}
        for r in rows:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
            for k, v in r["decided_by"].items():
                methods[k] = methods.get(k, 0) + v
        kept_ext = sum(r["pixels_by"].get("kept_by_extension", 0) for r in rows)
        kept_query = sum(r["pixels_by"]["kept_by_query"] for r in rows)
        plain = [r["plain_verifier"] for r in rows if "plain_verifier" in r]
        plain_text = "-"
        if plain:
            finished = [b for b in plain if b["size"] is not None]
            plain_text = (f"{fmt([b['seconds'] for b in plain])} (CPU {fmt([b.get('cpu_seconds', float('nan')) for b in plain])}; "
                          f"{len(plain)} images, {len(finished)} finished, "
                          f"{median([b['calls'] for b in plain]):.0f} calls)")
        mips = [r["plain_mip"] for r in rows if "plain_mip" in r]
        mip_text = "-" if not mips else "; ".join(
            f"{b['per_pixel']:.2f} s x 784 = {b['extrapolated_seconds']:.0f} s ({b['pixels_done']} pixels done, "
            f"{b['solver']})" for b in mips)
        eps = "full [0, 1]" if s["epsilon"] is None else f"eps {s['epsilon']:g}"
        lines.append(
            f"| {s['model']}, {eps} | {len(rows)} | {fmt(secs)} | {max(secs):.2f} | {fmt(cpus)} | {max(cpus):.2f} | "
            f"{fmt([r['oracle_calls'] for r in rows], '.0f')} | {fmt([r['size'] for r in rows], '.0f')} | "
            f"{min(r['size'] for r in rows)}-{max(r['size'] for r in rows)} | "
            + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())) + " | "
            + ", ".join(f"{k} {v}" for k, v in sorted(methods.items())) + f" | {kept_ext} / {kept_query} | "
            f"{plain_text} | {mip_text} |")
    lines += ["", "Per image (wall and CPU seconds, size, oracle calls, status; ours vs the plain verifier loop where "
                  "run). Wall seconds count the time the process waited for a core on a shared machine; the "
                  "verifier's per-query budgets and the time limit are wall-clock.", ""]
    for s in run["settings"]:
        eps = "full" if s["epsilon"] is None else f"eps {s['epsilon']:g}"
        items = []
        for r in s["rows"]:
            text = (f"{r['index']}: {r['seconds']:.2f} s (CPU {r.get('cpu_seconds', float('nan')):.2f}), {r['size']} px, "
                    f"{r['oracle_calls']} calls")
            if r["status"] != "minimal":
                text += f", {r['status']} ({r['undecided']} undecided)"
            if "plain_verifier" in r:
                b = r["plain_verifier"]
                text += f" [plain: {b['seconds']:.1f} s (CPU {b.get('cpu_seconds', float('nan')):.1f}), {b['calls']} calls" + (
                    f", {b['size']} px]" if b["size"] is not None else f", stopped after {b['pixels_done']} px]")
            items.append(text)
        lines.append(f"- {s['model']} {eps}: " + "; ".join(items) + ".")
    problems = sum(len(r["witness_problems"]) for s in run["settings"] for r in s["rows"])
    lines += ["", f"Witness problems found by the forward-pass check: {problems}. For scale: {VERIX_PLUS}."]
    if run.get("smallest"):
        sm = run["smallest"]
        lines += ["", f"Cardinality-minimal (`explanation.smallest`, implicit hitting sets with RC2, multiclass, "
                      f"{sm['limit']:g} s each): " + "; ".join(
                          f"eps {r.get('epsilon', 0.05):g} image {r['index']}: {r['status']}, size {r['size']} "
                          f"(subset-minimal {r['subset_size']}), "
                          f"proven lower bound {r['lower_bound']}, {r['hitting_sets']} sets, {r['oracle_calls']} calls, "
                          f"CPU {r['cpu_seconds']:.1f} s" for r in sm["rows"]) + "."]
    if run.get("batch"):
        b = run["batch"]
        if "rows" not in b:   # a run from before the twoclass batch: one multiclass eps 0.05 row
            b = {"machine": b.get("machine"), "rows": [{"setting": "multiclass eps 0.05", **b}]}
        lines += ["", "Batch (min_explanation.py --indices 0:N with --jobs 1 and --jobs 2, whole process wall time, "
                      "Keras re-checks included; the batch phase is from the first task to the last result checked "
                      "and written, TensorFlow's start for the first re-check included): " + "; ".join(
                          f"{r['setting']}, {r['images']} images: --jobs 1 {r['jobs1_seconds']:.1f} s, --jobs 2 "
                          f"{r['jobs2_seconds']:.1f} s, speedup {r['speedup']:.2f}x (batch phase "
                          f"{r['jobs1_batch_seconds']:.1f} s and {r['jobs2_batch_seconds']:.1f} s, "
                          f"{r['batch_speedup']:.2f}x)" + batch_runs(r) for r in b["rows"])
                      + (f" ({b['machine']})" if b.get("machine") else "") + "."]
    publish(args, "explanation", "\n".join(lines))


if __name__ == "__main__":
    main()
