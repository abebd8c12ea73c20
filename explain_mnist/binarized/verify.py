"""The questions of binary.py, answered by every encoding and re-checked by the integer forward pass.

- `robustness`: can flipping at most k input bits change the label (to a target, if given)? Each encoding
  answers "robust" (no such flips) or "counterexample"; each counterexample is re-classified by the forward pass.
  The SAT solver first checks a greedy attack's candidate (at most k flips) under assumptions and searches only if
  there is none (CDCL alone took over 60 s to find a 2-flip counterexample HiGHS finds in 1.7 s); its time
  includes the attack's. MIP and IP get no such seed.
- `min_flips`: the fewest flips that change the label. A greedy attack (flip the bit that most raises the best
  other class's score margin, one at a time) gives a verified upper bound U; the SAT encoding
  is then asked for at most 1, 2, ... flips, each a fresh encoding for that budget (its own stable neurons: the
  encoding of budget j is far smaller than that of U - 1, measured), the MIP / IP minimise the number of flips
  under budget U.
- `check`: with the input fixed (every flip variable 0, the encoding built for a small budget so that the first
  layer's counters are not constant), every encoding must find that the label is the forward pass's and no other.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from explain_mnist.binarized import cnf as cnf_mod
from explain_mnist.binarized import milp
from explain_mnist.binarized.network import BinarizedNet, beats, matches
from explain_mnist.binarized.query import Query, compile_query

ENCODINGS = ("mip", "ip", "cnf")


@dataclass
class Settings:
    """How to solve: the encodings, the CNF's cardinality encoding and SAT solver, the MIP solver, a time limit."""

    encodings: tuple = ENCODINGS
    cardinality: str = cnf_mod.DEFAULT_CARDINALITY
    sat_solver: str = cnf_mod.DEFAULT_SAT_SOLVER
    solver: str = "highs"
    time_limit: float | None = None


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
    hint, hint_seconds = None, 0.0
    if "cnf" in settings.encodings and query.trivially is None and k > 0:
        start = time.perf_counter()
        attack = greedy_attack(net, query.x0, target, k, query.label)
        hint = None if attack is None else (attack != query.x0)[query.free]
        hint_seconds = time.perf_counter() - start
    for name in settings.encodings:
        start = time.perf_counter()
        answer = _trivial(query)
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


def greedy_attack(net: BinarizedNet, x0_bits: np.ndarray, target: int | None = None, max_flips: int = 60,
                  label: int | None = None) -> np.ndarray | None:
    """Return input bits with few flips that the forward pass labels differently (the target), or None."""
    x = np.asarray(x0_bits).astype(np.int32).copy()
    c = int(net.predict_bits(x[None])[0]) if label is None else label
    flipped = np.zeros(len(x), dtype=bool)
    W0 = np.asarray(net.weights[0], dtype=np.int32)
    d = np.arange(net.n_classes)
    for _ in range(max_flips):
        # first layer of every single-flip candidate at once: flipping p adds 1 to m_i if x_p misses W[i, p], else -1
        m0 = matches(x[None], W0)[0]
        delta = np.where((W0 > 0).astype(np.int32) != x[None, :], 1, -1).T          # (pixels, units)
        bits = ((m0[None, :] + delta) >= net.thresholds[0]).astype(np.int32)
        for W, K in zip(net.weights[1:], net.thresholds[1:]):
            bits = (matches(bits, W) >= K).astype(np.int32)
        scores = matches(bits, net.V).astype(np.int64)
        if target is None:
            # margin of the best other class over c, ties counted for the smaller index
            margin = scores - scores[:, [c]] - (d > c)[None, :]
            margin[:, c] = np.iinfo(np.int64).min
            value = margin.max(axis=1)
        else:
            margin = scores[:, [target]] - scores - (target > d)[None, :]
            margin[:, target] = np.iinfo(np.int64).max
            value = margin.min(axis=1)
        value = np.where(flipped, np.iinfo(np.int64).min, value)
        best = int(np.argmax(value))
        x[best] ^= 1
        flipped[best] = True
        if is_counterexample(net, x, c, target):
            return x.astype(np.uint8)
    return None


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
    attack = greedy_attack(net, x0, target, max_flips, c)
    if attack is None:
        return MinFlips(encoding, None, None, True, time.perf_counter() - start, "none")
    upper = int((attack != x0).sum())
    best, best_bits, status, size = upper, attack, "optimal", {}
    if upper > 1:
        if encoding == "cnf":
            for j in range(1, upper):           # at most j flips, one small encoding per j (its own stable neurons)
                left = None if settings.time_limit is None else settings.time_limit - (time.perf_counter() - start)
                if left is not None and left <= 0:
                    status = "unknown"
                    break
                query = compile_query(net, x0, j, target, c)
                answer = _trivial(query)
                if answer is None:
                    encoded = cnf_mod.encode(query, settings.cardinality)
                    size = encoded.sizes()
                    solver = cnf_mod.SatSolver(encoded, settings.sat_solver)
                    try:
                        answer = solver.solve([], left)
                    finally:
                        solver.close()
                if answer.status == "unknown":
                    status = "unknown"
                    break
                if answer.status == "sat":
                    best, best_bits = int(answer.flips.sum()), query.counterexample(answer.flips)
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
