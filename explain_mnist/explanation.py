"""Formal explanations: a minimal set of pixels that forces a network's prediction, each kept pixel with a witness.

Problem. For a `Network`, an image ``x0`` predicted ``c`` and a per-pixel range ``[lo_p, hi_p]`` (all of
[0, 1], or ``[x0_p - eps, x0_p + eps]`` clipped to [0, 1] with an epsilon), a pixel set ``E`` is *sufficient*
when every image that equals ``x0`` on ``E`` and lies in the ranges elsewhere keeps class ``c`` (ties count as a
change: the `Verifier`'s margin). Write ``F`` for the free pixels (the complement of ``E``) and ``box(F)`` for that
set of images: ``E`` is sufficient iff the `Verifier` proves ``box(F)`` robust. ``E`` is *subset-minimal* when
for every ``p`` in ``E`` some image of ``box(F + p)`` changes the class: its *witness*, which differs from ``x0``
only in ``p`` and pixels outside ``E``. ``E`` is *cardinality-minimal* when no sufficient set is smaller.

Subset-minimal search (`subset_minimal`), deletion over the pixels in an order (``"sensitivity"``: the pixels
whose change alone lowers the margin least come first, i.e. are freed first; ``"index"``: 0..n-1). ``F`` starts
empty (one first query with every pixel free: if that is robust, the explanation is empty) and only grows; every
pixel is freed, kept (with a witness) or, after a time limit, left undecided (kept in ``E``: still sufficient,
not proven minimal). Because ``F`` only grows, a counterexample found in ``box(F' + p)`` with ``F'`` a subset of
the current ``F`` stays a witness for ``p`` to the end. The loop:

1. Take the next ``k`` undecided pixels ``S`` (a chunk) and ask the verifier about ``box(F + S)``.
   Robust: free them all, double ``k``. Not robust: the counterexample ``x`` is *shrunk* (`shrink`): pixels of
   ``S`` are put back to ``x0`` one at a time, least sensitive first, while the image still changes the class.
   If one pixel ``p`` of ``S`` is left, ``x`` is a witness for ``p``: kept. Then ``k`` is halved; at ``k = 1`` a
   counterexample always shrinks to the one pixel (``box(F)`` is robust), so the loop always progresses (the
   binary search of VeriX+ over the ordered sequence, with the answer often read off the counterexample).
2. After a counterexample, if ``F`` has grown since the last time (or the counterexample came from
   branch-and-bound or the MIP, a new seed, and the last batched attack settled something), a *batched attack*
   on ``box(F + p)`` for every undecided ``p`` (`extension_candidates`); each ``p`` it breaks is kept with that
   witness, no verifier call needed: base points of ``box(F)`` (``x0``, the latest counterexamples clipped into
   it, the corners minimising each margin's linearisation at those) with the one pixel ``p`` moved to either end
   of its range, all pixels at once through the first layer (base pre-activations plus ``p``'s column times the
   move). Most kept pixels are settled so; the verifier's calls go mostly to the robust chunks, which free many
   pixels each. And once single pixels are queried, a pixel the attack keeps starts one attack over the next
   `SINGLES_BATCH` undecided pixels together, one ``box(F + p)`` each (`attack_singles`): each it breaks is
   kept, as its own query's attack would have kept it (``F`` only grows, so the witness stays valid).
3. Per-query budgets: a chunk that the verifier cannot decide within ``query_seconds`` (a verifier without
   refinement of intermediate bounds) is split; a single pixel it cannot decide goes at once to the *decisive*
   verifier (branch-and-bound for `FINAL_NODES` nodes, then the MIP, only the overall time limit as a limit),
   since either answer helps (a freed pixel, or a counterexample that seeds the next batched attack); while
   single pixels keep needing it (longer than ``query_seconds``), the next ones go to it directly. Only if that
   too is stopped by the time limit does a pixel stay undecided. A time limit (`time_limit`) leaves the
   pixels not yet decided in ``E`` with status ``time_limit``: nothing is silently given up.

Cardinality-minimal search (`smallest`, implicit hitting sets): every counterexample ``x`` (in the ranges,
class other than ``c``) with changed pixels ``D`` must be hit by any sufficient set (else ``x`` agrees with ``x0``
on it). A minimum hitting set ``H`` of the sets found so far (PySAT's RC2 MaxSAT solver: a hard clause per set,
a soft unit clause ``not p`` per pixel) has size ``|H|``, a lower bound on every explanation. Ask the verifier
about ``box(complement of H)``: robust means ``H`` is a smallest explanation; a counterexample is shrunk
(over every changed pixel, twice: least and most sensitive pixels put back first) to smaller sets and added.
The sets start from the subset-minimal run's witnesses (each shrunk), whose explanation is also the first upper
bound, and from pairwise disjoint sets: the verifier asked about the box that frees every pixel outside the
disjoint sets found so far gives one more with each counterexample, and their number is at once a lower bound
(every explanation hits each). On a time limit: the best explanation known and the proven lower bound.

Every witness is checked here by the forward pass (class other than ``c``, within the ranges, equal to ``x0`` on
``E`` but for its pixel); the script re-checks them with the model's own framework (`models.reference_classes`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from explain_mnist import attack
from explain_mnist.network import Network
from explain_mnist.verifier import Verifier

FIRST_CHUNK = 32            # pixels in the first chunk query
MAX_CHUNK = 512
QUERY_SECONDS = 1.0         # a verifier query's budget (then a chunk is split, a single pixel decided anyway)
FINAL_NODES = 100_000       # the decisive verifier: branch-and-bound nodes before its MIP (no time limit)
WITNESS_RELATIVE = 1e-7     # a witness's smallest margin must be below -this times the image's margin scale
BATCH_SEEDS = 4             # latest counterexamples seeding the batched attack
SINGLES_BATCH = 32          # single pixels attacked together after one that the attack kept
GALLOP_FACTOR = 3.0         # a decisive query over several pixels gets this many times the last single one's time


@dataclass
class Explanation:
    """A formal explanation of one image (see the module docstring); pixels row-major, 0..n-1."""

    predicted: int
    epsilon: float | None
    order: str
    explanation: list
    size: int
    status: str                 # "minimal", "cardinality_minimal" or "time_limit"
    lower_bound: int | None     # proven lower bound of any explanation's size (--smallest), else None
    witness_pixels: list        # the pixels of the explanation that have a witness (all, unless time_limit)
    witnesses: np.ndarray       # (len(witness_pixels), n): row i is the witness of witness_pixels[i]
    undecided: list             # pixels left in the explanation by a time limit (no witness)
    oracle_calls: int
    decided_by: dict            # verifier calls by the method that decided them ("unknown": undecided)
    pixels_by: dict             # how each pixel was settled (freed by a chunk, kept by a query / an extension)
    batch_attacks: int
    seconds: float
    hitting_sets: int = 0       # --smallest: counterexample sets collected
    subset_size: int | None = None   # --smallest: the size of the subset-minimal explanation it started from
    message: str = ""


def pixel_ranges(x0: np.ndarray, epsilon: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Return the range ``(lo, hi)`` a free pixel takes: [0, 1], or the epsilon ball around ``x0`` within it."""
    x0 = np.asarray(x0, dtype=np.float64)
    if epsilon is None:
        return np.zeros_like(x0), np.ones_like(x0)
    return np.clip(x0 - epsilon, 0.0, 1.0), np.clip(x0 + epsilon, 0.0, 1.0)


def sensitivity_order(net: Network, x0: np.ndarray, c: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Return the pixels, least sensitive first: by the smallest margin with that pixel alone at ``lo`` or ``hi``.

    Ties (pixels whose change alone does nothing) by ``|gradient| * range width``, smallest first.
    """
    n = x0.size
    X = np.repeat(x0[None], 2 * n, axis=0)
    idx = np.arange(n)
    X[idx, idx] = lo
    X[n + idx, idx] = hi
    worst = net.margins(X, c).min(axis=1)
    score = np.minimum(worst[:n], worst[n:])
    grad = attack.margin_gradients(net, x0[None], net.spec_matrix(c))[0]
    reach = (np.abs(grad) * (hi - lo)).max(axis=0)
    return np.lexsort((reach, -score))


def image_scale(net: Network, x0: np.ndarray, c: int) -> float:
    """Return the scale of the image's margins (the largest |margin| at ``x0``, at least 1e-12)."""
    return max(float(np.abs(net.margins(x0, c)).max()), 1e-12)


def changes_class(net: Network, x: np.ndarray, c: int, slack: float):
    """Return True iff the forward pass classifies ``x`` other than ``c`` with its smallest margin below ``-slack``
    (for a batch of rows ``x``: that per row, as a boolean array)."""
    changed = logits_change_class(net, net.forward(x), c, slack)
    return bool(changed) if np.ndim(changed) == 0 else changed


def logits_change_class(net: Network, logits: np.ndarray, c: int, slack: float) -> np.ndarray:
    """Return, per row of ``logits``, whether they give a class other than ``c`` with the smallest margin below
    ``-slack``: `changes_class` for logits already computed."""
    return (net.classify_logits(logits) != c) & ((logits @ net.spec_matrix(c).T).min(axis=-1) < -slack)


def shrink(net: Network, x: np.ndarray, x0: np.ndarray, c: int, candidates, slack: float) -> tuple[np.ndarray, list]:
    """Return ``(x', D)``: ``x`` with pixels of ``candidates`` put back to ``x0`` in turn while it still changes
    the class, and ``D`` the candidates still changed (in the order given).

    Each trial updates the first layer's outputs by one column; the result is re-checked by a full forward
    pass, and redone one full pass per trial in the rare case that rounding made the two disagree."""
    start = np.array(x, dtype=np.float64)
    x = start.copy()
    first = net.affines[0]
    z = first.apply(x[None])
    kept = []
    for p in candidates:
        if x[p] == x0[p]:
            continue
        trial = z + (x0[p] - x[p]) * _columns(first.W, [p])
        if logits_change_class(net, net.logits_from_first(trial), c, slack)[0]:
            x[p], z = x0[p], trial
        else:
            kept.append(int(p))
    if not changes_class(net, x, c, slack):
        return _shrink_exactly(net, start, x0, c, candidates, slack)
    return x, kept


def _shrink_exactly(net, x, x0, c, candidates, slack):
    """Return `shrink`'s result computed with one full forward pass per trial."""
    x = np.array(x, dtype=np.float64)
    kept = []
    for p in candidates:
        if x[p] == x0[p]:
            continue
        old = x[p]
        x[p] = x0[p]
        if not changes_class(net, x, c, slack):
            x[p] = old
            kept.append(int(p))
    return x, kept


def _columns(W, pixels) -> np.ndarray:
    """Return the columns ``pixels`` of a dense or sparse ``W`` as dense rows ``(len(pixels), n_out)``."""
    columns = W[:, pixels]
    return np.asarray(columns.toarray() if sp.issparse(columns) else columns).T


class _Search:
    """State of one explanation search: free pixels, kept pixels with witnesses, counts, the clock."""

    def __init__(self, net: Network, x0: np.ndarray, c: int, epsilon: float | None, order: str,
                 verifier: Verifier, time_limit: float | None, query_seconds: float):
        self.net, self.x0, self.c, self.epsilon = net, np.asarray(x0, dtype=np.float64), c, epsilon
        self.n = self.x0.size
        self.C = net.spec_matrix(c)
        self.lo, self.hi = pixel_ranges(self.x0, epsilon)
        self.verifier = verifier
        self.decisive = Verifier(verifier.net, node_limit=FINAL_NODES, solver=verifier.solver, threads=verifier.threads)
        self.decisive.seeds = verifier.seeds      # one memory of counterexamples (both update it in place)
        self.start = time.perf_counter()
        self.deadline = None if time_limit is None else self.start + time_limit
        self.query_seconds = query_seconds
        self.slack = WITNESS_RELATIVE * image_scale(net, self.x0, c)
        if order == "sensitivity":
            self.order = sensitivity_order(net, self.x0, c, self.lo, self.hi)
        elif order == "index":
            self.order = np.arange(self.n)
        else:
            raise ValueError(f"unknown order {order!r}; supported: sensitivity, index")
        self.rank = np.empty(self.n, dtype=int)
        self.rank[self.order] = np.arange(self.n)
        self.free = np.zeros(self.n, dtype=bool)
        self.fixed_pixels = self.lo == self.hi     # nothing to free: such a pixel is never in an explanation
        self.free[self.fixed_pixels] = True
        self.witness: dict[int, np.ndarray] = {}
        self.calls = 0
        self.decided_by: dict[str, int] = {}
        self.pixels_by = {"freed_by_chunk": 0, "kept_by_query": 0, "kept_by_extension": 0,
                          "no_range": int(self.fixed_pixels.sum())}
        self.batch_attacks = 0
        self.seeds: list[np.ndarray] = []
        self.attacked_at = -1          # free pixels when the last batched attack ran
        self.last_yield = 0            # pixels the last batched attack settled

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.perf_counter()

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def box(self, free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the box of images equal to ``x0`` outside ``free`` and in range on it."""
        return np.where(free, self.lo, self.x0), np.where(free, self.hi, self.x0)

    def query(self, pixels, budget: float | None, decisive: bool = False):
        """Return the verifier's `Verdict` on ``box(F + pixels)`` within ``budget`` seconds (and the time left);
        ``decisive``: the verifier that goes to the MIP after `FINAL_NODES` nodes."""
        trial = self.free.copy()
        trial[list(pixels)] = True
        left = self.remaining()
        if left is not None:
            budget = left if budget is None else min(budget, left)
        verifier = self.decisive if decisive else self.verifier
        verdict = verifier.verify(*self.box(trial), self.c, time_limit=None if budget is None
                                       else max(budget, 0.01))
        self.calls += 1
        key = verdict.method if verdict.verdict != "unknown" else "unknown"
        self.decided_by[key] = self.decided_by.get(key, 0) + 1
        if verdict.verdict == "not_robust":
            self.remember(verdict.counterexample)
        return verdict

    def remember(self, x: np.ndarray) -> None:
        self.seeds.append(np.asarray(x, dtype=np.float64))
        del self.seeds[:-BATCH_SEEDS]

    def keep(self, p: int, x: np.ndarray, how: str) -> None:
        """Keep pixel ``p`` with witness ``x`` (checked: in box(F + p), class changed)."""
        self.keep_many([p], np.asarray(x)[None], how)

    def single_pixel_boxes(self, pixels) -> tuple[np.ndarray, np.ndarray]:
        """Return the boxes ``box(F + p)`` of the pixels ``p``, stacked: ``lo`` and ``hi`` of shape ``(P, n)``."""
        pixels = np.asarray(pixels, dtype=np.int64)
        rows = np.arange(pixels.size)
        lo, hi = (np.repeat(bound[None], pixels.size, axis=0) for bound in self.box(self.free))
        lo[rows, pixels], hi[rows, pixels] = self.lo[pixels], self.hi[pixels]
        return lo, hi

    def keep_many(self, pixels, X: np.ndarray, how: str) -> None:
        """Keep each pixel of ``pixels`` with the witness in its row of ``X`` (each checked: in box(F + p), class
        changed)."""
        if not len(pixels):
            return
        pixels = np.asarray(pixels, dtype=np.int64)
        lo, hi = self.single_pixel_boxes(pixels)
        good = np.all(X >= lo, axis=1) & np.all(X <= hi, axis=1) & changes_class(self.net, X, self.c, self.slack)
        if not good.all():
            raise AssertionError(f"internal error: not a witness for pixel {int(pixels[np.argmin(good)])}")
        for p, x in zip(pixels, X):
            self.witness[int(p)] = np.array(x, dtype=np.float64)
        self.pixels_by[how] += pixels.size

    def extension_candidates(self, pending: list) -> set:
        """Return the pending pixels ``p`` broken by a base point of ``box(F)`` with ``p`` moved to an end of its
        range (each kept with that witness). Base points: ``x0``, the latest counterexamples clipped into
        ``box(F)``, and the corners of ``box(F)`` minimising each margin's linearisation at those. All pixels at
        once: the first layer's pre-activations of a base point plus the pixel's column times its move."""
        P = np.asarray(pending)
        lo, hi = self.box(self.free)
        B = np.array([self.x0] + [np.clip(s, lo, hi) for s in self.seeds])
        G = attack.margin_gradients(self.net, B, self.C)                      # (b, m, n)
        B = np.concatenate([B, attack.minimising_corner(G, lo[None], hi[None]).reshape(-1, self.n)])
        first = self.net.affines[0]
        Z0 = first.apply(B)                                                     # (b, h)
        columns = _columns(first.W, P)                                         # (P, h)
        broken = set()
        for ends in (self.lo[P], self.hi[P]):
            move = ends[None, :] - B[:, P]                                      # (b, P)
            H = Z0[:, None, :] + move[:, :, None] * columns[None, :, :]         # (b, P, h)
            H = self.net.logits_from_first(H.reshape(-1, H.shape[-1]))
            hit = logits_change_class(self.net, H, self.c, self.slack).reshape(B.shape[0], P.size)
            hit_columns = np.array([j for j in np.flatnonzero(hit.any(axis=0)) if int(P[j]) not in broken],
                                   dtype=np.int64)
            if not hit_columns.size:
                continue
            X = B[np.argmax(hit[:, hit_columns], axis=0)]
            X[np.arange(hit_columns.size), P[hit_columns]] = ends[hit_columns]
            confirmed = changes_class(self.net, X, self.c, self.slack)
            self.keep_many(P[hit_columns[confirmed]], X[confirmed], "kept_by_extension")
            broken.update(int(p) for p in P[hit_columns[confirmed]])
        return broken

    def batch_attack(self, pending: list) -> set:
        """Return the pending pixels the batched attack over every ``box(F + p)`` breaks (`extension_candidates`),
        each kept with its witness."""
        self.attacked_at = int(self.free.sum())
        if not pending:
            return set()
        self.batch_attacks += 1
        broken = self.extension_candidates(pending)
        self.last_yield = len(broken)
        return broken

    def attack_singles(self, pixels: list) -> set:
        """Return the pixels ``p`` of ``pixels`` for which one batched attack over every ``box(F + p)`` finds a
        witness (each kept with it): what their single-pixel queries' attacks would find, in one call."""
        if not pixels:
            return set()
        lo, hi = self.single_pixel_boxes(pixels)
        seeds = np.array(self.seeds) if self.seeds else None
        results = attack.attack_many(self.net, lo, hi, self.c, seeds=seeds, margin=self.slack)
        found = [(p, result.x) for p, result in zip(pixels, results) if result.x is not None]
        if not found:
            return set()
        X = np.array([x for _, x in found])
        confirmed = changes_class(self.net, X, self.c, self.slack)
        kept = [p for (p, _), ok in zip(found, confirmed) if ok]
        self.keep_many(kept, X[confirmed], "kept_by_query")
        return set(kept)

    def settle_counterexample(self, x: np.ndarray, chunk: list) -> int | None:
        """Return the pixel of ``chunk`` kept with the shrunk ``x`` as its witness, if ``x`` shrinks to one pixel."""
        candidates = sorted(chunk, key=lambda p: self.rank[p])
        x, left = shrink(self.net, x, self.x0, self.c, candidates, self.slack)
        if len(left) == 1:
            self.keep(left[0], x, "kept_by_query")
            return left[0]
        return None

    def release(self, chunk: list, pending: list) -> list:
        """Free the pixels of ``chunk`` (the first of ``pending``, proved robust together); return the rest."""
        self.free[chunk] = True
        self.pixels_by["freed_by_chunk"] += len(chunk)
        return pending[len(chunk):]

    def deletion(self, pending: list, budget: float | None) -> list:
        """Run the chunked deletion over ``pending`` (in order); return the pixels it could not decide in time."""
        deferred = []
        k = FIRST_CHUNK
        hard = False        # the last single pixel needed the decisive verifier, and more than a budget's time
        hard_seconds = 0.0  # ... that long
        gallop = 1          # while hard: pixels per decisive query (doubles after a proof, halves after an unknown)
        while pending and not self.out_of_time():
            if hard:
                chunk = pending[:gallop]
                single = len(chunk) == 1
                verdict = self.query(chunk, None if single else GALLOP_FACTOR * hard_seconds, decisive=True)
                if single:
                    hard, hard_seconds = budget is not None and verdict.seconds > budget, verdict.seconds
                if verdict.verdict == "robust":
                    pending = self.release(chunk, pending)
                    gallop = min(2 * gallop, MAX_CHUNK)
                    continue
                if verdict.verdict == "unknown":
                    if single:
                        deferred.append(chunk[0])
                        pending = pending[1:]
                    gallop = max(1, gallop // 2)
                    continue
                gallop = 1
            else:
                chunk = pending[:k]
                verdict = self.query(chunk, budget)
                if verdict.verdict == "robust":
                    pending = self.release(chunk, pending)
                    k = min(2 * k, MAX_CHUNK)
                    continue
                if len(chunk) == 1 and verdict.verdict == "unknown":
                    # a hard single pixel: decide it now (an answer either way helps: a freed pixel, or a
                    # counterexample that seeds the batched attack); only the overall time limit stops it. While
                    # single pixels keep needing it, go to it directly, galloping over the pixels that follow.
                    verdict = self.query(chunk, None, decisive=True)
                    hard, hard_seconds = budget is not None and verdict.seconds > budget, verdict.seconds
                    gallop = 2
                    if verdict.verdict == "robust":
                        pending = self.release(chunk, pending)
                        continue
                    if verdict.verdict == "unknown":
                        deferred.append(chunk[0])
                        pending = pending[1:]
                        continue
            if verdict.verdict == "unknown":      # a chunk the cheap query left open
                k = max(1, len(chunk) // 2)
                continue
            kept = self.settle_counterexample(verdict.counterexample, chunk)
            if kept is not None:
                pending = [p for p in pending if p != kept]
            if len(chunk) == 1 and verdict.method == "attack":
                # single pixels that the attack keeps: attack the next ones together, one box each
                broken = self.attack_singles(pending[:SINGLES_BATCH])
                if broken:
                    pending = [p for p in pending if p not in broken]
            if self.free.sum() > self.attacked_at or (verdict.method != "attack" and self.last_yield > 0):
                broken = self.batch_attack(pending)
                if broken:
                    pending = [p for p in pending if p not in broken]
            k = max(1, len(chunk) // 2)
        return deferred + pending

    def result(self, undecided: list, status: str | None = None) -> Explanation:
        """Return the `Explanation` of the current state (the undecided pixels stay in it)."""
        E = sorted(int(p) for p in np.flatnonzero(~self.free))
        pixels = sorted(self.witness)
        W = np.array([self.witness[p] for p in pixels]) if pixels else np.zeros((0, self.n))
        undecided = sorted(int(p) for p in undecided)
        if status is None:
            status = "time_limit" if undecided else "minimal"
        return Explanation(predicted=self.c, epsilon=self.epsilon, order="", explanation=E, size=len(E),
                           status=status, lower_bound=None, witness_pixels=pixels, witnesses=W,
                           undecided=undecided, oracle_calls=self.calls, decided_by=dict(self.decided_by),
                           pixels_by=dict(self.pixels_by), batch_attacks=self.batch_attacks,
                           seconds=time.perf_counter() - self.start)


def subset_minimal(net: Network, x0: np.ndarray, epsilon: float | None = None, order: str = "sensitivity",
                   time_limit: float | None = None, query_seconds: float = QUERY_SECONDS,
                   verifier: Verifier | None = None, solver: str = "auto", threads: int = 1) -> Explanation:
    """Return a subset-minimal `Explanation` of ``x0`` (status ``time_limit`` if the limit left pixels undecided)."""
    x0 = np.asarray(x0, dtype=np.float64)
    c = int(net.predict(x0))
    verifier = verifier or Verifier(net, solver=solver, threads=threads, refine=False)
    search = _Search(net, x0, c, epsilon, order, verifier, time_limit, query_seconds)
    pending = [int(p) for p in search.order if not search.free[p]]
    if pending and search.query(pending, query_seconds).verdict == "robust":   # nothing needs to stay fixed
        pending = search.release(pending, pending)
    left = search.deletion(pending, query_seconds)
    result = search.result(left)
    result.order = order
    return result


def check_witnesses(net: Network, x0: np.ndarray, result: Explanation) -> list[str]:
    """Return the problems of ``result``'s witnesses under the forward pass (empty if every one is valid)."""
    c = result.predicted
    lo, hi = pixel_ranges(x0, result.epsilon)
    E = np.zeros(x0.size, dtype=bool)
    E[result.explanation] = True
    problems = []
    for p, w in zip(result.witness_pixels, result.witnesses):
        others = E.copy()
        others[p] = False
        if np.any(w[others] != x0[others]):
            problems.append(f"pixel {p}: its witness changes other pixels of the explanation")
        elif np.any(w < lo) or np.any(w > hi):
            problems.append(f"pixel {p}: its witness leaves the pixel ranges")
        elif net.predict(w) == c:
            problems.append(f"pixel {p}: its witness keeps class {c}")
    if set(result.witness_pixels) | set(result.undecided) != set(result.explanation):
        problems.append("some pixel of the explanation has neither a witness nor the status undecided")
    return problems


# ------------------------------------------------------------------------------------- cardinality-minimal


def _hitting_set_solver(n: int):
    """Return an RC2 MaxSAT solver with a soft clause ``not p`` (weight 1) per pixel (variables 1..n)."""
    from pysat.examples.rc2 import RC2
    from pysat.formula import WCNF

    wcnf = WCNF()
    for p in range(n):
        wcnf.append([-(p + 1)], weight=1)
    return RC2(wcnf)


def smallest(net: Network, x0: np.ndarray, epsilon: float | None = None, order: str = "sensitivity",
             time_limit: float | None = None, query_seconds: float = QUERY_SECONDS,
             verifier: Verifier | None = None, solver: str = "auto", threads: int = 1) -> Explanation:
    """Return a cardinality-minimal `Explanation` (status ``cardinality_minimal``), or on a time limit the best
    explanation found with ``lower_bound`` the proven lower bound (status ``time_limit``)."""
    start = time.perf_counter()
    deadline = None if time_limit is None else start + time_limit
    x0 = np.asarray(x0, dtype=np.float64)
    c = int(net.predict(x0))
    verifier = verifier or Verifier(net, solver=solver, threads=threads)
    best = subset_minimal(net, x0, epsilon, order, time_limit, query_seconds, verifier)
    best.subset_size = subset_size = best.size
    search = _Search(net, x0, c, epsilon, order, verifier, None if deadline is None else
                     max(deadline - time.perf_counter(), 0.0), query_seconds)
    search.calls, search.decided_by = best.oracle_calls, dict(best.decided_by)
    rc2 = _hitting_set_solver(search.n)
    sets: set[tuple] = set()

    def add(x: np.ndarray) -> list:
        """Add the sets of the counterexample ``x`` to hit; return them."""
        changed = sorted(np.flatnonzero(x != x0), key=lambda p: search.rank[p])
        found = []
        for candidates in (changed, changed[::-1]):     # two shrinks: two (often different) sets to hit
            _, D = shrink(net, x, x0, c, candidates, search.slack)
            key = tuple(sorted(D))
            if key:
                found.append(key)
            if key and key not in sets:
                sets.add(key)
                rc2.add_clause([p + 1 for p in key])
        return found

    for w in best.witnesses:
        add(w)
    lower = 0
    status = "time_limit"
    try:
        # disjoint sets first: a counterexample that changes none of the pixels in the sets found so far gives
        # one more set, disjoint from them; every explanation hits each, so their number is a lower bound at once
        used = np.zeros(search.n, dtype=bool)
        while not search.out_of_time():
            search.free = np.zeros(search.n, dtype=bool)
            verdict = search.query(np.flatnonzero(~used | search.fixed_pixels), search.query_seconds)
            found = add(verdict.counterexample) if verdict.verdict == "not_robust" else []
            if not found:
                break
            used[list(min(found, key=len))] = True
            lower += 1
        while not search.out_of_time():
            model = rc2.compute()
            if model is None:       # cannot happen: the full pixel set hits every set
                break
            H = [v - 1 for v in model if v > 0]
            lower = max(lower, len(H))
            if len(H) >= best.size and best.status != "time_limit":
                status = "cardinality_minimal"
                break
            free = np.ones(search.n, dtype=bool)
            free[H] = False
            free |= search.fixed_pixels
            search.free = np.zeros(search.n, dtype=bool)
            verdict = search.query(np.flatnonzero(free), None)
            if verdict.verdict == "robust":
                search.free = free
                best = _with_witnesses(search, H)
                best.subset_size = subset_size
                status = "cardinality_minimal" if best.status == "minimal" else "time_limit"
                break
            if verdict.verdict == "unknown":
                break
            add(verdict.counterexample)
    finally:
        rc2.delete()
    proved = status == "cardinality_minimal" or best.size <= lower
    best.status = "cardinality_minimal" if proved and not best.undecided else "time_limit"
    if best.status == "cardinality_minimal":
        lower = best.size
    best.lower_bound = lower
    best.hitting_sets = len(sets)
    best.oracle_calls = search.calls
    best.decided_by = dict(search.decided_by)
    best.seconds = time.perf_counter() - start
    best.order = order
    return best


def _with_witnesses(search: _Search, H: list) -> Explanation:
    """Return the `Explanation` of the sufficient set ``H`` (``search.free`` its complement) with a witness per
    pixel: a batched attack, then the verifier for the rest (None if some pixel gets none in the time left)."""
    search.witness = {}
    pending = [int(p) for p in H]
    broken = search.batch_attack(pending)
    undecided = []
    for p in pending:
        if p in broken:
            continue
        verdict = search.query([p], search.remaining())
        if verdict.verdict == "not_robust":
            search.keep(p, verdict.counterexample, "kept_by_query")
        else:
            undecided.append(p)
    return search.result(undecided)
