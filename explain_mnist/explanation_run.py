"""min_explanation.py's work: one image or a batch, results and witnesses written atomically, figures from them.

One image: `run_one` computes the explanation (`explanation.subset_minimal` or `explanation.smallest`),
re-classifies every witness with the model's own framework (`models.reference_classes`; a witness it does not
confirm makes its pixel undecided and the status ``time_limit``), writes the witnesses to an ``.npz`` beside the
JSON (arrays ``pixels``, ``witnesses``, ``classes``, ``image``), then the JSON, then the figure drawn from the
JSON. A batch (`run_batch`): test images A..B-1 computed in parallel processes (joblib; or on a Dask cluster
through joblib's Dask backend) that only compute; this process re-checks each result's witnesses as it arrives
(so only it starts TensorFlow) and writes one JSON + ``.npz`` per image under the out-dir, atomically; an image
whose JSON is there is skipped, so an interrupted batch resumes. Then ``summary.json`` and the grid figure drawn
from the saved JSONs.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from explain_mnist.errors import UserError

DASK_INSTALL = "pip install 'dask[distributed]'"
DASK_CONNECT_SECONDS = 10
GRID_COLUMNS = 8
GRID_MAX = 48
BACKGROUND = (0.55, 0.80, 1.0)   # the free pixels' colour in the figures (the explanation keeps its grey values)


# ----------------------------------------------------------------------------------------- arguments

def parse_indices(text: str, n: int) -> range:
    """Return the test indices of ``--indices A:B`` (A..B-1), checked against a test set of ``n`` images."""
    try:
        a, b = (int(part) for part in text.split(":"))
    except ValueError:
        raise UserError(f"--indices {text}: give A:B, two integers (test images A to B-1)") from None
    if not 0 <= a < b <= n:
        raise UserError(f"--indices {text}: the range must satisfy 0 <= A < B <= {n} (the test set has images "
                        f"0..{n - 1})")
    return range(a, b)


def check_arguments(args) -> None:
    """Raise UserError for flags that cannot work together or are out of range (before any work)."""
    if args.epsilon is not None and not (0 < args.epsilon <= 1):
        raise UserError(f"--epsilon must be in (0, 1], got {args.epsilon:g}")
    if args.indices is not None and args.image:
        raise UserError("--indices (a batch of test images) cannot be combined with --image; give one of them")
    if args.indices is not None and args.index is not None:
        raise UserError("--indices (a batch) cannot be combined with --index; give one of them")
    if args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.indices is None and (args.jobs != 1 or args.out_dir or args.dask_scheduler):
        raise UserError("--jobs, --out-dir and --dask-scheduler are for a batch: add --indices A:B")
    if args.indices is not None and args.json == "-":
        raise UserError("--json - with --indices: a batch writes one result per image under --out-dir and "
                        "its summary to --json FILE; give a file name")


def witness_path(json_path: str | os.PathLike) -> Path:
    """Return where the witnesses of a JSON result go: the same name with the suffix ``.npz``."""
    return Path(json_path).with_suffix(".npz")


# ----------------------------------------------------------------------------------------- one image

def explain(net, x0, args_like: dict):
    """Return the `explanation.Explanation` of ``x0`` for the settings of ``args_like`` (a dict of the flags)."""
    from explain_mnist import explanation as ex
    function = ex.smallest if args_like["smallest"] else ex.subset_minimal
    return function(net, x0, epsilon=args_like["epsilon"], order=args_like["order"],
                    time_limit=args_like["time_limit"], solver=args_like["solver"], threads=args_like["threads"])


def confirm_witnesses(net, result) -> list:
    """Return the classes the model's own framework gives the witnesses; pixels whose witness it does not confirm
    become undecided (status ``time_limit``)."""
    from explain_mnist.models import reference_classes
    if not result.witness_pixels:
        return []
    classes = [int(k) for k in reference_classes(net, result.witnesses)]
    bad = [i for i, k in enumerate(classes) if k == result.predicted]
    if bad:
        keep = [i for i in range(len(classes)) if i not in bad]
        result.undecided = sorted(set(result.undecided) | {result.witness_pixels[i] for i in bad})
        result.message = (result.message + "; " if result.message else "") + \
            f"{len(bad)} witness(es) not confirmed by the model's own framework: those pixels are undecided"
        result.witness_pixels = [result.witness_pixels[i] for i in keep]
        result.witnesses = result.witnesses[keep]
        classes = [classes[i] for i in keep]
        result.status = "time_limit"
    return classes


def result_dict(result, net, model: str, image_input: dict, label, x0, classes: list, witnesses_file) -> dict:
    """Return the JSON result of one image (issue 13's keys and the details)."""
    from explain_mnist.models import class_name
    from explain_mnist.threads import blas_threads
    names = net.meta.get("class_names")
    return {"model": model, "input": image_input, "label": label, "predicted": result.predicted,
            "predicted_name": class_name(result.predicted, names), "class_names": names,
            "epsilon": result.epsilon, "order": result.order, "explanation": result.explanation, "size": result.size,
            "status": result.status, "lower_bound": result.lower_bound,
            "witnesses": None if witnesses_file is None else Path(witnesses_file).name,
            "witness_pixels": result.witness_pixels, "witness_classes": classes,
            "witnesses_verified": len(classes) == len(result.witness_pixels),
            "undecided": result.undecided, "oracle_calls": result.oracle_calls, "decided_by": result.decided_by,
            "pixels_by": result.pixels_by, "batch_attacks": result.batch_attacks,
            "hitting_sets": result.hitting_sets, "subset_size": result.subset_size,
            "seconds": round(result.seconds, 4), "message": result.message, "image": x0,
            "blas_threads": blas_threads()}


def write_witnesses(path, result, classes: list, x0) -> None:
    """Write the witnesses as an ``.npz`` (atomically): pixels, witnesses, their classes, the image."""
    from explain_mnist.results import write_atomic

    def write(f):
        buffer = io.BytesIO()
        np.savez_compressed(buffer, pixels=np.asarray(result.witness_pixels, dtype=np.int64),
                            witnesses=np.asarray(result.witnesses, dtype=np.float64),
                            classes=np.asarray(classes, dtype=np.int64), image=np.asarray(x0, dtype=np.float64))
        f.write(buffer.getvalue())
    write_atomic(path, write)


def run_one(args) -> dict:
    """Return the JSON result of one image for parsed arguments, with witnesses and JSON written."""
    from explain_mnist.cli import load_input, load_model, save_outputs
    from explain_mnist.results import STDOUT, check_output
    image = load_input(args)
    net = load_model(args)
    image.announce()
    npz = None
    if args.json and args.json != STDOUT:
        npz = witness_path(args.json)
        check_output(npz, f"the witnesses {npz}")
    result = explain(net, image.x, settings(args))
    classes = confirm_witnesses(net, result)
    plain = result_dict(result, net, args.model, {"index": image.index, "image_file": args.image}, image.label,
                        image.x, classes, npz)
    try:
        if npz is not None:
            write_witnesses(npz, result, classes, image.x)
    except OSError as exc:
        raise UserError(f"{npz}: cannot write the witnesses ({exc.strerror or exc})") from None
    save_outputs(args, plain)
    if args.figure and not args.no_figure:
        draw(explanation_figure, plain, args.figure)
    return plain


def settings(args) -> dict:
    """Return the flags an explanation depends on, as a plain dict (sent to batch workers)."""
    return {"epsilon": args.epsilon, "order": args.order, "smallest": args.smallest, "time_limit": args.time_limit,
            "solver": args.solver, "threads": args.threads}


def describe(result: dict) -> str:
    """Return one line about a result for the screen."""
    from explain_mnist.models import class_label
    what = {"minimal": "subset-minimal (proved)", "cardinality_minimal": "cardinality-minimal (proved)",
            "time_limit": f"TIME LIMIT ({len(result['undecided'])} pixels undecided; sufficient, not proven "
                          f"minimal)"}[result["status"]]
    bound = "" if result["lower_bound"] is None else f", proven lower bound {result['lower_bound']}"
    where = "all of [0, 1]" if result["epsilon"] is None else f"eps {result['epsilon']:g}"
    checked = "every witness re-checked by the model" if result["witnesses_verified"] else "witnesses NOT confirmed"
    return (f"{class_label(result['predicted'], result['class_names'])}: explanation of {result['size']} pixels, "
            f"{what}{bound}; free pixels over {where}; {result['oracle_calls']} oracle calls, "
            f"{result['seconds']:.2f} s; {checked}")


# ----------------------------------------------------------------------------------------- figures

def explanation_panel(ax, x0, pixels, title: str) -> None:
    """Draw the explanation's pixels (grey values of the image) over the `BACKGROUND` colour of the free pixels."""
    x0 = np.asarray(x0, dtype=np.float64)
    rgb = np.tile(np.array(BACKGROUND), (x0.size, 1))
    pixels = np.asarray(pixels, dtype=int)
    rgb[pixels] = x0[pixels, None]
    ax.imshow(rgb.reshape(28, 28, 3), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def explanation_figure(result: dict):
    """Return the figure of one result: the image, and the explanation over a contrasting background."""
    import matplotlib.pyplot as plt

    from explain_mnist.models import class_label
    from explain_mnist.plots import show_image
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.6))
    where = "free pixels in [0, 1]" if result["epsilon"] is None else f"eps = {result['epsilon']:g}"
    show_image(axes[0], result["image"], f"{Path(str(result['model'])).stem}: "
                                         f"{class_label(result['predicted'], result.get('class_names'))}")
    status = {"minimal": "subset-minimal", "cardinality_minimal": "cardinality-minimal",
              "time_limit": "time limit: not proven minimal"}[result["status"]]
    explanation_panel(axes[1], result["image"], result["explanation"],
                      f"explanation: {result['size']} pixels ({status})\n{where}, "
                      f"{result['oracle_calls']} oracle calls")
    return fig


def grid_figure(results: list):
    """Return a grid of explanations (at most `GRID_MAX`), each titled with its test index, class and size."""
    import matplotlib.pyplot as plt
    shown = results[:GRID_MAX]
    cols = min(GRID_COLUMNS, max(1, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, 1.7 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, r in zip(axes.ravel(), shown):
        ax.axis("on")
        mark = "" if r["status"] != "time_limit" else "*"
        explanation_panel(ax, r["image"], r["explanation"], f"#{r['input']['index']}: {r['predicted']}, "
                                                             f"{r['size']}{mark}")
    where = "free pixels in [0, 1]" if results and results[0]["epsilon"] is None else \
        f"eps = {results[0]['epsilon']:g}" if results else ""
    model = Path(str(results[0]["model"])).stem if results else ""
    fig.suptitle(f"{model}: explanations ({where}); #index: class, size (* time limit)", fontsize=9)
    return fig


def draw(figure, data, path) -> None:
    """Draw ``figure(data)`` to ``path`` (`plots.save_figure`), with a one-line error if it cannot be written."""
    from explain_mnist import plots
    try:
        plots.save_figure(figure(data), path)
    except OSError as exc:
        raise UserError(f"--figure {path}: cannot write the figure ({exc.strerror or exc})") from None


# ----------------------------------------------------------------------------------------- batch

def image_result_path(out_dir, model: str, index: int) -> Path:
    """Return the JSON of test image ``index`` in a batch's out-dir."""
    return Path(out_dir) / f"explanation_{Path(model).stem}_{index}.json"


def done_result(path: Path) -> dict | None:
    """Return a finished per-image result at ``path``, or None if there is none (or it is unreadable)."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or "explanation" not in result:
        return None
    if result.get("witnesses") and not (path.parent / result["witnesses"]).is_file():
        return None
    return result


def explain_test_image(net, x0: np.ndarray, index: int, options: dict):
    """Return ``(index, Explanation of x0)``: a batch worker's work, computation only (no files, no TensorFlow)."""
    from explain_mnist.threads import limit_threads
    limit_threads(options["threads"])
    return index, explain(net, x0, options)


def save_test_image(net, model: str, test, index: int, result, out_dir) -> dict:
    """Check a worker's result with the model's own framework, write its ``.npz`` and JSON (atomically, in that
    order); return its summary row."""
    from explain_mnist.results import write_json
    x0 = test.x[index].astype(np.float64)
    classes = confirm_witnesses(net, result)
    path = image_result_path(out_dir, model, index)
    npz = path.with_suffix(".npz")
    plain = result_dict(result, net, model, {"index": index, "image_file": None}, int(test.y[index]), x0,
                        classes, npz)
    write_witnesses(npz, result, classes, x0)
    write_json(path, plain)
    return summary_row(plain)


def summary_row(result: dict) -> dict:
    """Return the few numbers of a result that the batch summary lists."""
    return {"index": result["input"]["index"], "predicted": result["predicted"], "size": result["size"],
            "status": result["status"], "seconds": result["seconds"], "oracle_calls": result["oracle_calls"],
            "lower_bound": result["lower_bound"]}


def require_dask() -> None:
    """Raise UserError naming the install command if dask.distributed is not installed."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise UserError(f"--dask-scheduler needs dask.distributed, which is not installed; install it with "
                        f"{DASK_INSTALL}") from None


def connect_dask(address: str):
    """Return a dask.distributed Client connected to ``address``, or raise UserError saying what is wrong."""
    require_dask()
    from dask.distributed import Client
    try:
        return Client(address, timeout=DASK_CONNECT_SECONDS)
    except (OSError, TimeoutError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise UserError(f"--dask-scheduler {address}: cannot reach the Dask scheduler ({detail})") from None


def distribution(values) -> dict:
    """Return min / median / mean / max of ``values`` (None for an empty list)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"min": None, "median": None, "mean": None, "max": None}
    return {"min": float(values.min()), "median": float(np.median(values)), "mean": float(values.mean()),
            "max": float(values.max())}


def run_batch(args) -> dict:
    """Run a batch for parsed arguments; return its summary (also written to ``<out-dir>/summary.json``)."""
    import joblib
    from tqdm import tqdm

    from explain_mnist.cli import load_model
    from explain_mnist.data import load_test_set, log
    from explain_mnist.results import check_output, write_json
    if args.dask_scheduler:
        require_dask()
    test = load_test_set(args.data, verbose=False)
    indices = parse_indices(args.indices, len(test))
    out_dir = Path(args.out_dir or f"results/explanations_{Path(args.model).stem}")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out-dir {out_dir} is a file, not a folder; choose another place")
    check_output(out_dir / "summary.json", f"--out-dir {out_dir}")
    figure = None if args.no_figure else (args.figure or str(out_dir / "explanations_grid.png"))
    if figure:
        check_output(figure, f"--figure {figure}")
    net = load_model(args)    # a bad model: one error line before any worker starts
    client = connect_dask(args.dask_scheduler) if args.dask_scheduler else None
    log(f"data: {test.source}, {len(test)} images")
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [i for i in indices if done_result(image_result_path(out_dir, args.model, i)) is None]
    if len(todo) < len(indices):
        log(f"{len(indices) - len(todo)} of {len(indices)} images already done in {out_dir}: skipped")
    start = time.perf_counter()
    options = settings(args)
    tasks = (joblib.delayed(explain_test_image)(net, test.x[i].astype(np.float64), i, options) for i in todo)
    backend = joblib.parallel_config(backend="dask") if client is not None else contextlib.nullcontext()
    try:
        with backend:
            parallel = joblib.Parallel(n_jobs=None if client is not None else args.jobs,
                                       return_as="generator_unordered")
            for index, result in tqdm(parallel(tasks), total=len(todo), desc="explanations", unit="image",
                                      file=sys.stderr, disable=not todo):
                save_test_image(net, args.model, test, index, result, out_dir)
    finally:
        if client is not None:
            client.close()
    seconds = time.perf_counter() - start
    results = [done_result(image_result_path(out_dir, args.model, i)) for i in indices]
    missing = [i for i, r in zip(indices, results) if r is None]
    if missing:
        raise UserError(f"{len(missing)} images have no result in {out_dir} (first: {missing[0]}); rerun to resume")
    rows = [summary_row(r) for r in results]
    statuses = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    summary = {"model": args.model, "indices": [indices.start, indices.stop], "epsilon": args.epsilon,
               "order": args.order, "smallest": args.smallest, "jobs": args.jobs,
               "dask_scheduler": args.dask_scheduler, "out_dir": str(out_dir), "computed": len(todo),
               "skipped": len(indices) - len(todo), "wall_seconds_batch": round(seconds, 2),
               "size": distribution([r["size"] for r in rows]),
               "seconds": distribution([r["seconds"] for r in rows]),
               "oracle_calls": distribution([r["oracle_calls"] for r in rows]), "statuses": statuses,
               "images": rows}
    write_json(out_dir / "summary.json", summary)
    if args.json:
        write_json(args.json, summary)
    if figure:
        draw(grid_figure, results, figure)
    summary["figure"] = figure
    return summary
