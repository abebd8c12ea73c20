"""What binary.py's commands do: argument checks, the questions of `verify`, progress, JSON, figure, Keras re-check."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from explain_mnist.errors import UserError

DEFAULT_MODEL = "models/binary_net.npz"


def _settings(args):
    from explain_mnist.binarized import cnf, verify
    names = [e.strip() for e in args.encodings.split(",") if e.strip()]
    unknown = [e for e in names if e not in verify.ENCODINGS]
    if unknown or not names:
        raise UserError(f"unknown encoding {', '.join(unknown) or '(none)'} in --encodings; "
                        f"supported: {', '.join(verify.ENCODINGS)}")
    cardinality, sat_solver = cnf.check_names(args.cardinality, args.sat_solver)
    solver = "highs" if args.solver == "auto" else args.solver
    if any(e != "cnf" for e in names):
        from explain_mnist.solvers import require
        require(solver)
    if args.time_limit is not None and not (args.time_limit > 0 and np.isfinite(args.time_limit)):
        raise UserError(f"--time-limit must be a positive, finite number of seconds, got {args.time_limit:g}")
    chosen = args.cardinality is not None or args.sat_solver is not None      # then candidates are checked alike
    threads = getattr(args, "threads", 1)
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    return verify.Settings(tuple(dict.fromkeys(names)), cardinality, sat_solver, solver, args.time_limit,
                           None if chosen else verify.Settings.check_with, threads)


def _image(args, net):
    from explain_mnist.binarized.network import binarize
    from explain_mnist.data import load_test_set
    test = load_test_set(getattr(args, "data", None), verbose=False)
    if not 0 <= args.index < len(test):
        raise UserError(f"--index {args.index} is out of range; the test set has images 0..{len(test) - 1}")
    if net.n_inputs != 784:
        raise UserError(f"the network takes {net.n_inputs} inputs; MNIST images have 784 pixels")
    return binarize(test.x[args.index]), int(test.y[args.index])


def _keras_labels(args, net, images) -> list | None:
    """Return the Keras model's labels of the bit images, or None when the .npz names no Keras model beside it."""
    if not net.keras_file:
        return None
    path = Path(args.model).parent / net.keras_file
    if not path.is_file():
        return None
    from explain_mnist.binarized import keras_model
    model = keras_model.load(str(path))
    return keras_model.predict(model, np.asarray(images, dtype=np.float32)).tolist()


def _prepare(args):
    from explain_mnist.binarized import network
    from explain_mnist.cli import check_outputs
    settings = _settings(args)
    check_outputs(args)
    return network.load(args.model), settings


def _save(args, result, figure: bool = False) -> None:
    """Write the JSON (`cli.save_outputs`) and, with ``figure``, the figure drawn from the saved result."""
    from explain_mnist.cli import save_outputs
    from explain_mnist.results import read_json, to_jsonable
    save_outputs(args, result)
    if figure and getattr(args, "figure", None) and not args.no_figure:
        from explain_mnist.binarized.figure import flips_figure
        from explain_mnist.plots import save_figure
        plain = read_json(args.json) if args.json and args.json != "-" else to_jsonable(result)
        try:
            save_figure(flips_figure(plain), args.figure)
        except OSError as exc:
            raise UserError(f"--figure {args.figure}: cannot write the figure ({exc.strerror or exc})") from None


def train(args) -> None:
    from explain_mnist.binarized import keras_model
    from explain_mnist.results import check_output, write_json
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    for path in (args.out, args.npz, str(Path(args.out).with_suffix(".json"))):
        check_output(path, path)
    card = keras_model.train_and_save(args.epochs, args.seed, args.data, args.out, args.npz)
    write_json(Path(args.out).with_suffix(".json"), card)
    print(f"binary: test accuracy {card['test_accuracy']:.4f}; integer form and Keras agree on {card['agree']} of "
          f"{card['test_size']} test images; saved {args.out}, {args.npz} and {Path(args.out).with_suffix('.json')}")


def check(args) -> None:
    from tqdm import tqdm

    from explain_mnist.binarized import network, verify
    from explain_mnist.data import load_test_set
    if args.count < 1:
        raise UserError(f"--count must be at least 1, got {args.count}")
    if args.radius < 1:
        raise UserError(f"--radius must be at least 1, got {args.radius}")
    net, settings = _prepare(args)
    test = load_test_set(args.data, verbose=False)
    if args.count > len(test):
        raise UserError(f"--count {args.count}: the test set has {len(test)} images")
    count = args.count
    agree = {e: 0 for e in settings.encodings}
    seconds = {e: 0.0 for e in settings.encodings}
    sizes, failures = {e: [] for e in settings.encodings}, []
    for i in tqdm(range(count), desc="check", unit="image", disable=None, file=sys.stderr):
        row = verify.check_image(net, network.binarize(test.x[i]), settings, args.radius, i)
        for e in settings.encodings:
            agree[e] += row.agree[e]
            seconds[e] += row.seconds[e]
            if e in row.sizes:
                sizes[e].append(row.sizes[e])
            if not row.agree[e]:
                failures.append({"index": i, "encoding": e})
    mean_sizes = {e: {key: round(float(np.mean([s[key] for s in rows])), 1) for key in rows[0]} if rows else {}
                  for e, rows in sizes.items()}
    result = {"checked": count, "agree": agree, "sizes": mean_sizes, "seconds": {e: round(s, 3) for e, s in
                                                                                  seconds.items()},
              "radius": args.radius, "failures": failures, "model": args.model, "cardinality": settings.cardinality,
              "sat_solver": settings.sat_solver, "solver": settings.solver}
    _save(args, result)
    print(f"checked {count} test images (inputs fixed, encodings built for {args.radius} flips): " +
          ", ".join(f"{e} {agree[e]}/{count} agree ({seconds[e]:.1f} s)" for e in settings.encodings))


def verify_cmd(args) -> None:
    from explain_mnist.binarized import verify
    if args.flips is None:
        raise UserError("give the number of flips: --flips K")
    if args.flips < 0:
        raise UserError(f"--flips must be at least 0, got {args.flips}")
    net, settings = _prepare(args)
    x0, truth = _image(args, net)
    if args.target is not None and not 0 <= args.target < net.n_classes:
        raise UserError(f"--target {args.target} is not a class of the network (0..{net.n_classes - 1})")
    if args.target is not None and args.target == int(net.predict_bits(x0[None])[0]):
        raise UserError(f"--target {args.target} is already the predicted label of test image {args.index}")
    r = verify.robustness(net, x0, args.flips, args.target, settings)
    keras = None
    cex = r.counterexample
    if cex is not None:
        keras = _keras_labels(args, net, [cex])
    verified = r.verified and (keras is None or cex is None or
                               (keras[0] == args.target if args.target is not None else keras[0] != r.label))
    result = {"index": args.index, "flips": args.flips, "target": args.target, "predicted": r.label,
              "true_label": truth, "answers": r.answers,
              "counterexample": None if cex is None else cex.astype(int).tolist(),
              "counterexample_label": None if cex is None else int(net.predict_bits(cex[None])[0]),
              "keras_prediction": None if keras is None else keras[0], "verified": bool(verified),
              "agree": r.agree, "seconds": {k: round(v, 4) for k, v in r.seconds.items()}, "sizes": r.sizes,
              "notes": r.notes, "cardinality": settings.cardinality, "sat_solver": settings.sat_solver,
              "solver": settings.solver, "model": args.model, "image_bits": x0.astype(int).tolist()}
    _save(args, result, figure=True)
    # every method is exact: one proof (or one verified counterexample) answers the question
    what = "not robust" if cex is not None else "robust" if "robust" in r.answers.values() else "unknown"
    print(f"test image {args.index} (label {r.label}), at most {args.flips} flips: {what}; " +
          ", ".join(f"{e}: {a} ({r.seconds[e]:.2f} s)" for e, a in r.answers.items()) +
          ("" if r.agree else "; THE ENCODINGS DISAGREE") + ("" if verified else "; NOT VERIFIED"))
    return 0 if r.agree and verified else 1


def minflips(args) -> None:
    from explain_mnist.binarized import verify
    net, settings = _prepare(args)
    x0, truth = _image(args, net)
    start = time.perf_counter()
    runs = {e: verify.min_flips(net, x0, e, settings) for e in settings.encodings}
    proved = {e: r.min_flips for e, r in runs.items() if r.min_flips is not None}
    best = min(runs.values(), key=lambda r: (r.min_flips is None, r.min_flips or 0))
    cex = best.counterexample
    keras = _keras_labels(args, net, [cex]) if cex is not None else None
    label = int(net.predict_bits(x0[None])[0])
    verified = all(r.verified for r in runs.values()) and (keras is None or keras[0] != label)
    result = {"index": args.index, "min_flips": best.min_flips, "counterexample":
              None if cex is None else cex.astype(int).tolist(), "verified": bool(verified),
              "seconds": round(time.perf_counter() - start, 3), "predicted": label, "true_label": truth,
              "counterexample_label": None if cex is None else int(net.predict_bits(cex[None])[0]),
              "keras_prediction": None if keras is None else keras[0], "agree": len(set(proved.values())) <= 1,
              "encodings": {e: {"min_flips": r.min_flips, "status": r.status, "seconds": round(r.seconds, 3),
                                "upper_bound": r.upper_bound, "sizes": r.sizes} for e, r in runs.items()},
              "image_bits": x0.astype(int).tolist(), "cardinality": settings.cardinality,
              "sat_solver": settings.sat_solver, "solver": settings.solver, "model": args.model}
    _save(args, result, figure=True)
    print(f"test image {args.index} (label {label}): " + ", ".join(
        f"{e}: {r.min_flips if r.min_flips is not None else r.status} ({r.seconds:.2f} s)" for e, r in runs.items())
        + ("" if result["agree"] else "; THE ENCODINGS DISAGREE") + ("" if verified else "; NOT VERIFIED"))
    return 0 if result["agree"] and verified else 1
