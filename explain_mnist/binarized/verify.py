"""The questions of binary.py, answered by every method and re-checked by the integer forward pass.

Methods: ``search`` (our own exact branch-and-bound over flip sets, `search`) and the encodings ``mip``, ``ip``
and ``cnf``, each solved by its solver.

- `robustness`: can flipping at most k input bits change the label (to a target, if given)? Each method
  answers "robust" (no such flips) or "counterexample"; each counterexample is re-classified by the forward pass.
  The search and the SAT solver first take the beam attack's candidate (h <= k flips; a SAT solver checks it
  under assumptions in the CNF of budget h, whose models are models of the k-flip question: by default Minicard
  with native constraints, `Settings.check_with`) and search only if there is none; their times include the
  attack's. MIP and IP get no seed.
- `min_flips`: the fewest flips that change the label. The beam attack gives a verified upper bound U; the search
  and the SAT encoding are then asked for at most 1, 2, ... flips (for SAT a fresh encoding per budget: its own
  stable neurons make the encoding of budget j far smaller than that of U - 1), the MIP / IP minimise the number
  of flips under budget U.
- `check`: with the input fixed (every flip variable 0, the encoding built for a small budget so that the first
  layer's counters are not constant), every encoding must find that the label is the forward pass's and no other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from explain_mnist.binarized import cnf as cnf_mod
from explain_mnist.binarized import milp
from explain_mnist.binarized import search as search_mod
from explain_mnist.binarized.network import BinarizedNet, beats
from explain_mnist.binarized.query import Query, compile_query

ENCODINGS = ("search", "mip", "ip", "cnf")


@dataclass
class Settings:
    """How to solve: the encodings, the CNF's cardinality encoding and SAT solver, the MIP solver, a time limit."""

    encodings: tuple = ENCODINGS
    cardinality: str = cnf_mod.DEFAULT_CARDINALITY
    sat_solver: str = cnf_mod.DEFAULT_SAT_SOLVER
    solver: str = "highs"
    time_limit: float | None = None
    # (cardinality, SAT solver) that checks an attack's candidate: native constraints let Minicard confirm fixed
    # flips by propagation alone (benchmarks/RESULTS.md, section binary); None: the two above
    check_with: tuple | None = ("native", "minicard")
    threads: int = 1            # threads of the exact search


def is_counterexample(net: BinarizedNet, bits: np.ndarray, label: int, target: int | None) -> bool:
    """Return whether the forward pass gives ``bits`` a label other than ``label`` (the target, if given)."""
    predicted = int(net.predict_bits(np.asarray(bits)[None])[0])
    return predicted == target if target is not None else predicted != label


def encode(query: Query, encoding: str, settings: Settings):
    """Return the encoded query (an `milp.Encoded` or a `cnf.CNF`)."""
    if encoding == "cnf":
        return cnf_mod.encode(query, settings.cardinality)
    return milp.encode(query, encoding)


def sizes(encoded) -> dict:
    """Return the size of an encoded query."""
    return encoded.sizes() if isinstance(encoded, cnf_mod.CNF) else milp.sizes(encoded)


def solve(encoded, settings: Settings, fixed_flips=None, hint=None) -> milp.Answer:
    """Return the `Answer` of an encoded query (flips fixed to ``fixed_flips`` if given).

    ``hint`` (CNF only): candidate flips, tried first under assumptions (the solver checks them against the whole
    formula); the full search runs only if they do not satisfy it.
    """
    if isinstance(encoded, cnf_mod.CNF):
        solver = cnf_mod.SatSolver(encoded, settings.sat_solver)
        try:
            start = time.perf_counter()
            if hint is not None and fixed_flips is None:
                answer = solver.solve(solver.fixed(hint), settings.time_limit)
                if answer.status == "sat":
                    answer.seconds = time.perf_counter() - start
                    answer.detail = "the attack's candidate, checked by the SAT solver"
                    return answer
            assumptions = [] if fixed_flips is None else solver.fixed(fixed_flips)
            answer = solver.solve(assumptions, settings.time_limit)
            answer.seconds = time.perf_counter() - start
            return answer
        finally:
            solver.close()
    return milp.solve(encoded, settings.solver, settings.time_limit, fixed_flips=fixed_flips)


def _trivial(query: Query) -> milp.Answer | None:
    if query.trivially == "unsat":
        return milp.Answer("unsat", None, 0.0, "decided by bounds")
    if query.trivially == "sat":
        return milp.Answer("sat", np.zeros(query.n_flips, dtype=bool), 0.0, "decided by bounds")
    return None


@dataclass
class Robustness:
    """The answer of every encoding to one k-flip question."""

    label: int
    flips: int
    target: int | None
    answers: dict                 # encoding -> "robust" | "counterexample" | "unknown"
    seconds: dict                 # encoding -> seconds (encoding and solving)
    sizes: dict                   # encoding -> size of its model
    counterexample: np.ndarray | None
    verified: bool                # every counterexample found is one for the forward pass (True if none)
    agree: bool                   # all decided answers are equal
    notes: list = field(default_factory=list)


def robustness(net: BinarizedNet, x0_bits: np.ndarray, k: int, target: int | None = None,
               settings: Settings | None = None, label: int | None = None) -> Robustness:
    """Return the `Robustness` answer of every encoding in ``settings`` for at most ``k`` flips of ``x0_bits``."""
    settings = settings or Settings()
    start = time.perf_counter()
    query = compile_query(net, x0_bits, k, target, label)
    compile_seconds = time.perf_counter() - start
    answers, seconds, size = {}, {}, {}
    found, verified, notes = None, True, []
    hint, hint_seconds, problem = None, 0.0, None
    if {"cnf", "search"} & set(settings.encodings) and query.trivially is None and k > 0:
        start = time.perf_counter()
        problem = search_mod.FlipProblem(net, query.x0, query.label, target)
        attack = search_mod.beam_attack(problem, k)
        hint = None if attack is None else (attack != query.x0)[query.free]
        hint_seconds = time.perf_counter() - start
    for name in settings.encodings:
        start = time.perf_counter()
        answer = _trivial(query)
        if answer is None and name == "search":
            start -= hint_seconds
            if hint is not None:
                answer = milp.Answer("sat", hint, 0.0, "the beam attack")
            else:
                answer = search_mod.exact_search(problem, k, settings.time_limit, settings.threads)
        elif answer is None:
            if name == "cnf" and hint is not None:
                answer = _check_candidate(net, query, hint, settings, size)
            if answer is None:
                encoded = encode(query, name, settings)
                size[name] = sizes(encoded)
                answer = solve(encoded, settings, hint=hint if name == "cnf" else None)
            if name == "cnf":
                start -= hint_seconds
        seconds[name] = time.perf_counter() - start + compile_seconds
        if answer.status == "sat":
            bits = query.counterexample(answer.flips)
            ok = is_counterexample(net, bits, query.label, target) and int(answer.flips.sum()) <= k
            verified &= ok
            if not ok:
                notes.append(f"{name}: its counterexample is not one for the forward pass")
            if found is None and ok:
                found = bits
            answers[name] = "counterexample"
        else:
            answers[name] = "robust" if answer.status == "unsat" else "unknown"
    decided = {a for a in answers.values() if a != "unknown"}
    return Robustness(query.label, k, target, answers, seconds, size, found, verified, len(decided) <= 1, notes)


def _check_candidate(net: BinarizedNet, query: Query, hint: np.ndarray, settings: Settings,
                     size: dict) -> milp.Answer | None:
    """Return the SAT solver's check of the attack's flips in the CNF of their own budget h <= k (a model of it
    is one of the k-flip question, and that CNF is far smaller), or None if it does not confirm them."""
    small = compile_query(net, query.x0, int(hint.sum()), query.target, query.label)
    if small.trivially is not None or not np.array_equal(small.free, query.free):
        return None
    cardinality, sat_solver = settings.check_with or (settings.cardinality, settings.sat_solver)
    encoded = cnf_mod.encode(small, cardinality)
    solver = cnf_mod.SatSolver(encoded, sat_solver)
    try:
        answer = solver.solve(solver.fixed(hint), settings.time_limit)
    finally:
        solver.close()
    if answer.status != "sat":
        return None
    size["cnf"] = encoded.sizes()
    answer.detail = f"the attack's candidate, checked by {sat_solver} in the {cardinality} CNF of {hint.sum()} flips"
    return answer


@dataclass
class MinFlips:
    """The fewest flips found by one encoding (None if not proved), with a verified counterexample."""

    encoding: str
    min_flips: int | None
    counterexample: np.ndarray | None
    verified: bool
    seconds: float
    status: str                   # "optimal" | "none" (no flips change the label within the attack's reach) | "unknown"
    upper_bound: int | None = None
    sizes: dict = field(default_factory=dict)


def min_flips(net: BinarizedNet, x0_bits: np.ndarray, encoding: str = "cnf", settings: Settings | None = None,
              target: int | None = None, max_flips: int = 100, label: int | None = None) -> MinFlips:
    """Return the `MinFlips` of one encoding: the fewest bit flips that change the label (to the target)."""
    settings = settings or Settings()
    start = time.perf_counter()
    x0 = np.asarray(x0_bits).astype(np.uint8)
    c = int(net.predict_bits(x0[None])[0]) if label is None else label
    problem = search_mod.FlipProblem(net, x0, c, target)
    attack = search_mod.beam_attack(problem, max_flips)
    if attack is None:
        return MinFlips(encoding, None, None, True, time.perf_counter() - start, "none")
    upper = int((attack != x0).sum())
    best, best_bits, status, size = upper, attack, "optimal", {}
    if upper > 1:
        if encoding in ("cnf", "search"):
            for j in range(1, upper):           # at most j flips; for SAT one small encoding per j
                left = None if settings.time_limit is None else settings.time_limit - (time.perf_counter() - start)
                if left is not None and left <= 0:
                    status = "unknown"
                    break
                if encoding == "search":
                    answer = search_mod.exact_search(problem, j, left, settings.threads)
                    bits = None if answer.flips is None else x0 ^ answer.flips.astype(np.uint8)
                else:
                    answer, bits, size = _sat_at_most(net, x0, j, target, c, settings, left, size)
                if answer.status == "unknown":
                    status = "unknown"
                    break
                if answer.status == "sat":
                    best, best_bits = int((bits != x0).sum()), bits
                    break
        else:
            query = compile_query(net, x0, upper, target, c)
            encoded = milp.encode(query, encoding)
            size = milp.sizes(encoded)
            answer = milp.solve(encoded, settings.solver, settings.time_limit, minimise=True)
            if answer.status == "sat":
                best, best_bits = int(answer.flips.sum()), query.counterexample(answer.flips)
            else:
                status = "unknown"
    verified = is_counterexample(net, best_bits, c, target) and int((best_bits != x0).sum()) == best
    return MinFlips(encoding, best if status == "optimal" else None, best_bits, verified,
                    time.perf_counter() - start, status, upper, size)


def _sat_at_most(net: BinarizedNet, x0: np.ndarray, j: int, target: int | None, label: int, settings: Settings,
                 time_limit: float | None, size: dict) -> tuple:
    """Return (the SAT answer to "at most j flips", its input bits or None, the CNF's size) on a fresh encoding."""
    query = compile_query(net, x0, j, target, label)
    answer = _trivial(query)
    if answer is None:
        encoded = cnf_mod.encode(query, settings.cardinality)
        size = encoded.sizes()
        solver = cnf_mod.SatSolver(encoded, settings.sat_solver)
        try:
            answer = solver.solve([], time_limit)
        finally:
            solver.close()
    return answer, None if answer.flips is None else query.counterexample(answer.flips), size


@dataclass
class CheckRow:
    """One fixed input: whether each encoding found the forward pass's label and no other."""

    index: int
    label: int
    agree: dict
    seconds: dict
    sizes: dict


def check_image(net: BinarizedNet, x0_bits: np.ndarray, settings: Settings, radius: int = 2,
                index: int = -1) -> CheckRow:
    """Return the `CheckRow` of one image: label c must be reachable and no other, with every flip fixed to 0."""
    x0 = np.asarray(x0_bits).astype(np.uint8)
    c = int(net.predict_bits(x0[None])[0])
    agree, seconds, size = {}, {}, {}
    for name in settings.encodings:
        start = time.perf_counter()
        ok = True
        if name == "search":            # its own arithmetic (first-layer counts, output rows) on the image itself
            for target in [None] + list(range(net.n_classes)):
                problem = search_mod.FlipProblem(net, x0, c, target)
                changed = bool(problem.margins(problem.m0[None, :])[0] >= 0)
                ok &= changed == (target == c)
            agree[name], seconds[name] = bool(ok), time.perf_counter() - start
            continue
        for target, want in ((None, "unsat"), (c, "sat")):
            query = compile_query(net, x0, radius, target, c)
            answer = _trivial(query)
            if answer is None:
                encoded = encode(query, name, settings)
                if target is None:
                    size[name] = sizes(encoded)
                answer = solve(encoded, settings, fixed_flips=np.zeros(query.n_flips, dtype=bool))
            ok &= answer.status == want
            if answer.status == "sat":
                ok &= not answer.flips.any()
        agree[name] = bool(ok)
        seconds[name] = time.perf_counter() - start
    return CheckRow(index, c, agree, seconds, size)


def beats_label(net: BinarizedNet, bits: np.ndarray, label: int) -> bool:
    """Return whether some class beats ``label`` on ``bits`` (the forward pass's scores)."""
    s = net.scores(np.asarray(bits)[None])[0]
    return any(beats(j, label, s[j], s[label]) for j in range(net.n_classes) if j != label)
