"""What verify.py runs: build the box, ask the `Verifier`, re-check the answer with the model's own framework."""
from __future__ import annotations

import numpy as np

from explain_mnist.errors import UserError
from explain_mnist.threads import blas_threads
from explain_mnist.verifier import Verifier


def linf_box(x0: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-pixel box ``[max(0, x0 - eps), min(1, x0 + eps)]``."""
    return np.clip(x0 - epsilon, 0.0, 1.0), np.clip(x0 + epsilon, 0.0, 1.0)


def verify_box(net, lo, hi, c, time_limit=None, node_limit=200_000, solver="auto", threads=1,
               progress=None) -> dict:
    """Return verify.py's result for the box ``[lo, hi]`` and class ``c``, the counterexample re-checked by the model.

    ``progress``, if given, is the `Verifier`'s ``progress(stage, nodes, lower_bound, elapsed)`` callback. A
    search stopped by Ctrl-C comes back ``unknown`` with ``interrupted`` True and the best bound proven so far.
    """
    from explain_mnist.models import reference_classes

    verdict = Verifier(net, time_limit=time_limit, node_limit=node_limit, solver=solver, threads=threads,
                       progress=progress).verify(lo, hi, c)
    verified = verdict.verdict == "robust"
    message = verdict.message
    if verdict.verdict == "not_robust":
        own_class = int(reference_classes(net, verdict.counterexample[None])[0])
        verified = own_class != c and own_class == verdict.counterexample_class
        if not verified:
            verdict.verdict = "unknown"
            message = (f"the counterexample found by {verdict.method} is classified {own_class} by the model's own "
                       f"framework (numpy network: {verdict.counterexample_class}); not reported as a counterexample")
    return {
        "predicted": int(c),
        "verdict": verdict.verdict,
        "counterexample": verdict.counterexample if verdict.verdict == "not_robust" else None,
        "counterexample_class": verdict.counterexample_class if verdict.verdict == "not_robust" else None,
        "verified": bool(verified),
        "method": verdict.method,
        "nodes": int(verdict.nodes),
        "seconds": round(float(verdict.seconds), 4),
        "lower_bound": None if verdict.verdict == "not_robust" else float(verdict.lower_bound),
        "tolerance": float(verdict.tolerance),
        "message": message,
        "stages": verdict.stages,
        "interrupted": bool(verdict.interrupted),
    }


def robustness_property(prop, net, path) -> tuple[np.ndarray, np.ndarray, int]:
    """Return ``(lo, hi, c)`` of a VNN-LIB robustness property for ``net``, or raise UserError saying why not."""
    if prop.n_inputs != net.n_inputs or prop.n_outputs != net.n_outputs:
        raise UserError(f"{path} has {prop.n_inputs} inputs and {prop.n_outputs} outputs, the model "
                        f"{net.n_inputs} and {net.n_outputs}")
    if prop.label is None or len(prop.disjuncts) != net.n_outputs - 1:
        raise UserError(f"{path} is not a robustness property (a disjunction of Y_j >= Y_c over every "
                        f"other class j, for one class c); only those are supported")
    return prop.lo, prop.hi, prop.label


def run_verify(args, progress=None) -> dict:
    """Return the result of verify.py for parsed arguments (see verify.py --help); ``progress`` as in `verify_box`."""
    from explain_mnist.cli import load_input, load_model
    from explain_mnist.data import log
    from explain_mnist.models import class_name, label_in_classes

    image = None if args.vnnlib else load_input(args)
    net = load_model(args)
    if image is not None:
        image.announce()
    if args.vnnlib:
        from explain_mnist.vnnlib import read_vnnlib
        lo, hi, c = robustness_property(read_vnnlib(args.vnnlib), net, args.vnnlib)
        x0 = (lo + hi) / 2.0
        source, epsilon, label, index = f"VNN-LIB {args.vnnlib}", None, c, None
    else:
        x0, source, label, index, epsilon = image.x, image.source, image.label, image.index, args.epsilon
        c = int(net.predict(x0))
        lo, hi = linf_box(x0, epsilon)
    names = net.meta.get("class_names")
    in_classes = None
    if index is not None:   # an MNIST test image: its label is a digit, which the model may not know
        in_classes = label_in_classes(label, names, net.n_classes)
        if in_classes is False:
            known = ", ".join(f"class {k} = {class_name(k, names)}" for k in range(net.n_classes))
            log(f"note: {source} is a {label}, not one of the model's classes ({known}); the verdict is about the "
                f"class the model gives it")
    result = verify_box(net, lo, hi, c, args.time_limit, args.node_limit, args.solver, args.threads, progress)
    return {"model": args.model, "input": source, "index": index, "label": label,
            "label_in_model_classes": in_classes, "epsilon": epsilon, "class_names": names, **result,
            "predicted_name": class_name(c, names),
            "counterexample_name": class_name(result["counterexample_class"], names),
            "image": x0, "time_limit": args.time_limit, "blas_threads": blas_threads()}


def save_outputs(args, result: dict, figure: bool = True) -> None:
    """Write verify.py's JSON result and (if ``figure``, unless --no-figure) its figure (`cli.save_outputs`)."""
    from explain_mnist.cli import save_outputs as write_outputs

    write_outputs(args, result, "verify_figure" if figure else None)
