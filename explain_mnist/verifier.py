"""The verifier loop: bound, attack, split, with the MIP as the last resort.

Question: does every input ``x`` in the box ``[lo, hi]`` keep class ``c``? With
``C = net.spec_matrix(c)`` that is ``min_x min_i (C f(x))_i > 0``: ties count as
a change of class.

Answers (`Verdict.verdict`):

- ``robust``: proved; the lower bound of every margin over the box is > 0.
- ``not_robust``: a counterexample ``x`` in the box that the numpy network
  classifies other than ``c`` (re-checked by a forward pass before it leaves here).
- ``unknown``: a time or node limit was hit; ``lower_bound`` is the best proven
  lower bound of the smallest margin.

Order of work, cheapest first:

1. CROWN bounds of the margins over the box (``method="bounds"``);
2. an attack seeded with earlier counterexamples and the minimiser of CROWN's
   linear lower bound (``"attack"``);
   then, on nets with two or more hidden layers, alpha-CROWN at the root
   (`bounds.alpha_tighten`: optimised lower slopes for every intermediate and
   margin bound, ``"bounds"`` if that proves it); its bounds are the root of
   what follows;
3. branch-and-bound over ReLU phases (``"bab"``, see `bab.py`) from those root
   bounds (every node inherits them, and so does the node LP's big-M). An
   LP-tightened root (`lp_bounds.lp_tighten`) was tried here too: on 256x4 mnistfc
   it was no tighter than alpha-CROWN's (one neuron in 160) and cost 15-20 s
   against 0.4 s, so it is not used. On nets with two or more hidden layers this
   first search is a probe of at most `PROBE_NODES` nodes and `PROBE_SHARE` of a
   time limit; if it leaves the question open, the root's intermediate bounds are
   refined by branch-and-bound per neuron (`refine.py`, with at most `REFINE_SHARE`
   of the time left) and branch-and-bound starts again from the refined root. Easy
   instances stay as fast as before (the probe decides them); the hard ones gain
   most: 256x4 mnistfc prop_9_0.03, open after 300 s of branch-and-bound, is proved
   at the refined root;
4. the MIP of "Exact core" for what branch-and-bound left open (``"mip"``), with
   the last quarter of a time limit (`BAB_SHARE`; only when that is at least
   `MIP_MIN_SECONDS`: a big MIP does nothing in less, and its solver overshoots a
   short limit) or, without one, once the node budget is spent. A small MIP (at most
   `SMALL_MIP_NEURONS` hidden neurons, so at most that many binaries) takes over
   after a probe of `SMALL_MIP_NODES` nodes, without refinement, with all the time
   left: on near-ties branch-and-bound can take far more nodes than such a net's MIP
   takes to decide. If that MIP leaves the question open, the bounds are refined,
   `SMALL_MIP_NODES` more nodes searched, and the MIP tried again on the refined
   bounds (on a net with one hidden layer, or without refinement, the search goes on
   alone).

A point counts as a counterexample only if it lies in the box and the forward
pass puts it in another class with a margin clear of rounding (below
``-ROUNDING_RELATIVE * T``). The verifier works on the network scaled layer by
layer by powers of two (`Network.power_of_two_scaled`: exact, same classes), so that
solvers see weights of one size, and its tolerances are relative to the problem:

- rounding: ``T`` (`term_scale`) bounds the size of every term summed when the
  margins are evaluated over the box; floating-point sums are off by far less than
  ``ROUNDING_RELATIVE * T``. Bounds and branch-and-bound prove a margin > 0 only
  above that (LP bounds are certified from their duals), and a point whose margin
  is within it of 0 is a tie, not a counterexample;
- the MIP: its answer holds up to its feasibility tolerance. Its ``robust`` says that
  no input has a margin below ``-MIP_RELATIVE * S``, ``S`` the largest |margin| among
  the box centre's margins and the root's CROWN lower bounds, and the verdict says
  so (`Verdict.tolerance`).

A search that ends on a leaf whose exact minimum is within the tolerance of 0 but
whose minimiser keeps the class is a tie: ``unknown``, with that said. Scaling a
network by any power of two changes only the numbers reported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from explain_mnist import attack, bab
from explain_mnist.bounds import ALPHA_STEPS, Bounds, alpha_tighten, compute_bounds
from explain_mnist.network import Network
from explain_mnist.refine import refine_bounds

SEED_MEMORY = 32
ROUNDING_RELATIVE = 1e-12   # of the term scale T: proofs and counterexamples must clear it (about 4,500 ulps)
MIP_RELATIVE = 1e-8     # the MIP's proof: no input with a margin <= -MIP_RELATIVE times the scale
PROGRESS_SECONDS = 0.5  # at most one progress report per this many seconds
BAB_SHARE = 0.75  # of a time limit for branch-and-bound; the MIP gets the rest of it ...
MIP_MIN_SECONDS = 10.0   # ... if that is at least this long or the MIP is small; else branch-and-bound gets it all
ALPHA_MAX_SECONDS = 20.0    # alpha-CROWN at the root of a net with 2+ hidden layers: at most this long ...
ALPHA_SHARE = 0.1           # ... and this share of a time limit
PROBE_NODES = 2000          # on nets with 2+ hidden layers, branch-and-bound before refinement: at most this many
PROBE_SHARE = 0.05          # ... nodes, and this share of a time limit
REFINE_SHARE = 0.5          # refinement of intermediate bounds: at most this share of the time left
SMALL_MIP_NEURONS = 64      # a net with at most this many hidden neurons goes to the MIP after a probe of
SMALL_MIP_NODES = 2000      # at most this many nodes


@dataclass
class Verdict:
    """The answer of one verification query (see the module docstring)."""

    verdict: str
    counterexample: np.ndarray | None = None
    counterexample_class: int | None = None
    method: str = "bounds"
    nodes: int = 0   # branch-and-bound nodes, the refinement's searches on cut networks included
    seconds: float = 0.0
    lower_bound: float = float("-inf")
    message: str = ""
    stages: dict = field(default_factory=dict)
    tolerance: float = 0.0      # > 0: robust only up to this margin (a MIP's proof), in the network's logit units
    interrupted: bool = False   # stopped by Ctrl-C: unknown, with the best lower bound proved until then


def is_counterexample(net: Network, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, c: int,
                      rounding: float = 0.0) -> bool:
    """Return True iff ``x`` lies in the box and the forward pass classifies it other than ``c``.

    With ``rounding`` > 0 its smallest margin must also be below ``-rounding`` (not a tie within rounding).
    """
    return bool(np.all(x >= lo) and np.all(x <= hi) and net.predict(x) != c
                and (rounding <= 0 or net.margins(x, c).min() < -rounding))


def term_scale(net: Network, lo: np.ndarray, hi: np.ndarray, C: np.ndarray) -> float:
    """Return a bound on |every term| summed when evaluating ``C @ logits`` on the box (absolute values forward)."""
    size = np.maximum(np.abs(lo), np.abs(hi))
    for affine in net.hidden:
        size = abs(affine.W) @ size + np.abs(affine.b)
    last = net.affines[-1]
    return float((np.abs(C) @ (abs(last.W) @ size + np.abs(last.b))).max())


def problem_scale(net: Network, lo: np.ndarray, hi: np.ndarray, c: int, root: Bounds) -> float:
    """Return the scale of a query: the largest |margin| among the box centre's and the root's lower bounds."""
    centre = net.margins((lo + hi) / 2.0, c)
    return float(max(np.abs(centre).max(), np.abs(root.spec_lower).max()))


@dataclass
class _Query:
    """One verification query in progress: its box, limits, and what has been proved so far (scaled units)."""

    lo: np.ndarray
    hi: np.ndarray
    c: int
    C: np.ndarray
    start: float
    limit: float | None
    stages: dict = field(default_factory=dict)
    scale: float = 0.0
    tolerance: float = 0.0
    lower: float = float("-inf")   # the best proven lower bound of the smallest margin
    nodes: int = 0
    reported: float = float("-inf")

    @property
    def deadline(self) -> float | None:
        return None if self.limit is None else self.start + self.limit

    def raise_lower(self, value: float) -> None:
        self.lower = max(self.lower, float(value))

    def proved(self) -> bool:
        return self.lower > self.tolerance


class Verifier:
    """Answers many verification queries on one network, remembering recent counterexamples as attack seeds.

    ``progress``, if given, is called as ``progress(stage, nodes, lower_bound, elapsed)`` at most every
    `PROGRESS_SECONDS` during a query (the lower bound in the network's logit units).
    """

    def __init__(self, net: Network, time_limit: float | None = None, node_limit: int = 200_000,
                 solver: str = "auto", threads: int = 1, mip_fallback: bool = True, bound_method: str = "crown",
                 alpha_steps: int = ALPHA_STEPS, node_bound: str = "beta", rows_apart: bool = True,
                 refine: bool = True, progress=None):
        self.net = net
        self.scaled, self.logit_scale = net.power_of_two_scaled()
        self.time_limit = time_limit
        self.node_limit = node_limit
        self.solver = solver
        self.threads = threads
        self.mip_fallback = mip_fallback
        self.bound_method = bound_method
        self.alpha_steps = alpha_steps
        self.node_bound = node_bound
        self.rows_apart = rows_apart
        self.refine = refine
        self.progress = progress
        self.seeds: list[np.ndarray] = []

    def _remember(self, x: np.ndarray) -> None:
        self.seeds.append(np.asarray(x, dtype=np.float64))
        del self.seeds[:-SEED_MEMORY]

    def _seed_array(self) -> np.ndarray | None:
        return np.array(self.seeds[::-1]) if self.seeds else None

    def _report(self, q: _Query, stage: str, nodes: int = 0, lower: float = float("-inf")) -> None:
        now = time.perf_counter()
        if self.progress is not None and now - q.reported >= PROGRESS_SECONDS:
            q.reported = now
            self.progress(stage, q.nodes + nodes, max(q.lower, lower) / self.logit_scale, now - q.start)

    def verify(self, lo: np.ndarray, hi: np.ndarray, c: int, time_limit: float | None = None) -> Verdict:
        """Return the `Verdict` on whether every input in ``[lo, hi]`` keeps class ``c``."""
        q = _Query(np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64), c,
                   self.net.spec_matrix(c), time.perf_counter(), self.time_limit if time_limit is None else time_limit)
        try:
            verdict = self._decide(q)
        except KeyboardInterrupt:
            verdict = self._unknown(q, "bab", "interrupted (Ctrl-C)", interrupted=True)
        verdict.seconds = time.perf_counter() - q.start
        verdict.nodes = q.nodes
        return verdict

    def _verdict(self, q: _Query, verdict: str, method: str, **fields) -> Verdict:
        """Return a `Verdict` with the query's proven lower bound and stages, in the network's logit units."""
        tolerance = fields.pop("tolerance", 0.0)
        # the bound less the rounding allowance: a bound computed in floating point may exceed the true one by that
        return Verdict(verdict, method=method, lower_bound=(q.lower - q.tolerance) / self.logit_scale, stages=q.stages,
                       tolerance=tolerance / self.logit_scale, **fields)

    def _unknown(self, q: _Query, method: str, why: str, interrupted: bool = False) -> Verdict:
        return self._verdict(q, "unknown", method, interrupted=interrupted,
                             message=f"{why} after {q.nodes} nodes; best proven lower bound of the margin "
                                     f"{(q.lower - q.tolerance) / self.logit_scale:.4g}")

    def _found(self, q: _Query, x: np.ndarray, method: str) -> Verdict | None:
        """Return the not_robust `Verdict` of ``x`` if it is a counterexample of the query, else None."""
        if x is None or not is_counterexample(self.scaled, x, q.lo, q.hi, q.c, q.tolerance):
            return None
        self._remember(x)
        return Verdict("not_robust", x, int(self.net.predict(x)), method, stages=q.stages)

    def _decide(self, q: _Query) -> Verdict:
        net, lo, hi, C = self.scaled, q.lo, q.hi, q.C
        root = compute_bounds(net, lo, hi, method=self.bound_method, C=C)
        q.stages["bounds_seconds"] = root.seconds
        q.raise_lower(root.spec_lower.min())
        q.scale = problem_scale(net, lo, hi, q.c, root)
        q.tolerance = ROUNDING_RELATIVE * term_scale(net, lo, hi, C)
        if q.proved():
            return self._verdict(q, "robust", "bounds")

        self._report(q, "attack")
        linear = None if root.spec_lower_A is None else (root.spec_lower_A[0], root.spec_lower_c[0])
        hit = attack.find_counterexample(net, lo, hi, q.c, seeds=self._seed_array(), linear_lower=linear)
        q.stages["attack_seconds"] = hit.seconds
        found = self._found(q, hit.x, "attack")
        if found is not None:
            return found

        if len(net.hidden) >= 2 and self.alpha_steps:
            self._report(q, "alpha-CROWN")
            seconds = ALPHA_MAX_SECONDS if q.limit is None else min(ALPHA_MAX_SECONDS, ALPHA_SHARE * q.limit)
            root = alpha_tighten(net, lo, hi, bounds=root, C=C, steps=self.alpha_steps, time_budget=seconds)
            q.stages["alpha_seconds"] = root.seconds
            q.raise_lower(root.spec_lower.min())
            if q.proved():
                return self._verdict(q, "robust", "bounds")

        small_mip = self._small_mip()
        use_mip = self.mip_fallback and (q.limit is None or small_mip or (1 - BAB_SHARE) * q.limit >= MIP_MIN_SECONDS)
        bab_deadline = q.start + BAB_SHARE * q.limit if use_mip and q.limit is not None else q.deadline
        # a small MIP comes right after the probe: refining its bounds costs more than it saves the MIP
        small_first = use_mip and small_mip
        probing = self.refine and len(net.hidden) >= 2
        refining = probing and not small_first
        node_budget = min(self.node_limit, SMALL_MIP_NODES) if small_first else self.node_limit
        search_deadline, node_limit = bab_deadline, node_budget
        if probing:
            node_limit = min(node_budget, PROBE_NODES)
            if q.limit is not None:
                search_deadline = min(bab_deadline, time.perf_counter() + PROBE_SHARE * q.limit)
        outcome = self._search(q, root, search_deadline, node_limit, "branch-and-bound")
        mip_root = None     # the bounds of the MIP tried last: the same MIP again would give the same answer
        if small_first and outcome.status == "unknown" and outcome.stopped_by != "interrupt" and self._mip_time(q):
            verdict, mip_root = self._mip(q, root), root
            if verdict is not None:
                return verdict
            # the MIP left it open (a point the forward pass does not confirm: loose bounds, big coefficients)
            if probing:     # refine, search on, and try the MIP again with the refined bounds
                refining = True
                node_budget = min(self.node_limit, outcome.nodes + SMALL_MIP_NODES)
            else:           # search on alone, within the user's limits
                use_mip, node_budget = False, self.node_limit
                if node_budget > outcome.nodes:
                    outcome = self._search(q, root, q.deadline, node_budget - outcome.nodes,
                                           "branch-and-bound (after the MIP)")
        refined_budget = node_budget - outcome.nodes
        if outcome.status == "unknown" and outcome.stopped_by != "interrupt" and refining and \
                refined_budget > 0 and (bab_deadline is None or time.perf_counter() < bab_deadline):
            self._report(q, "refining intermediate bounds")
            seconds = None if bab_deadline is None else REFINE_SHARE * (bab_deadline - time.perf_counter())
            refinement = refine_bounds(net, lo, hi, root, C=C, time_budget=seconds, tolerance=q.tolerance)
            root = refinement.bounds
            q.raise_lower(root.spec_lower.min())
            q.stages.update(refine_seconds=refinement.seconds, refine_searches=refinement.searches,
                            refine_layers=refinement.layers_refined, refine_nodes=refinement.nodes,
                            probe_nodes=outcome.nodes)
            q.nodes += refinement.nodes
            if q.proved():
                return self._verdict(q, "robust", "bab")
            # the node limit counts margin nodes; the refinement's nodes (on cut networks) are capped per bound
            outcome = self._search(q, root, bab_deadline, refined_budget, "branch-and-bound (refined)")
        if outcome.status == "not_robust":
            found = self._found(q, outcome.x, "bab")
            if found is not None:
                return found
        if outcome.status == "robust":
            return self._verdict(q, "robust", "bab")
        if outcome.stopped_by == "interrupt":
            raise KeyboardInterrupt

        if use_mip and root is not mip_root and self._mip_time(q):
            verdict, mip_root = self._mip(q, root), root
            if verdict is not None:
                return verdict
        if outcome.stopped_by == "tie":
            return self._unknown(q, "bab", f"a tie: the exact minimum of a linear piece is within "
                                           f"{q.tolerance / self.logit_scale:.3g} of 0 and its minimiser keeps the "
                                           f"class; no point verifiably changes it")
        if outcome.status == "not_robust":
            return self._unknown(q, "bab", "a tie: the point found changes the class only within rounding")
        why = {"node_limit": f"node limit ({node_budget}) hit", "deadline": "time limit hit"}.get(outcome.stopped_by,
                                                                                                   "stopped")
        if q.deadline is not None and time.perf_counter() >= q.deadline - 0.5:
            why = "time limit hit"
        if mip_root is not None:
            why += " (the MIP left the question open)"
        return self._unknown(q, "bab", why)

    @staticmethod
    def _mip_time(q: _Query) -> bool:
        """Return True iff the MIP can run: a query with a scale and at least half a second left."""
        return q.scale > 0 and (q.deadline is None or time.perf_counter() < q.deadline - 0.5)

    def _small_mip(self) -> bool:
        """Return True iff the network's MIP is small: few hidden neurons, so few binaries."""
        return sum(a.n_out for a in self.net.hidden) <= SMALL_MIP_NEURONS

    def _search(self, q: _Query, root: Bounds, deadline, node_limit: int, stage: str) -> bab.BabOutcome:
        """Return `bab.branch_and_bound`'s outcome from ``root``; its proven bound raises the query's."""
        outcome = bab.branch_and_bound(self.scaled, q.lo, q.hi, q.c, deadline=deadline, node_limit=node_limit,
                                       root=root, node_bound=self.node_bound, rows_apart=self.rows_apart,
                                       tolerance=q.tolerance,
                                       progress=lambda nodes, lower: self._report(q, stage, nodes, lower))
        q.nodes += outcome.nodes
        if outcome.status != "not_robust":
            q.raise_lower(outcome.lower_bound)
        q.stages.update(bab_seconds=q.stages.get("bab_seconds", 0.0) + outcome.seconds,
                        bab_open_nodes=outcome.open_nodes, bab_lp_solves=outcome.lp_solves,
                        bab_input_splits=outcome.input_splits)
        return outcome

    def _mip(self, q: _Query, root: Bounds) -> Verdict | None:
        from explain_mnist.mip import MAX_MARGIN, NetworkMIP

        self._report(q, "MIP")
        mip = NetworkMIP(self.scaled, q.lo, q.hi, bounds=root, solver=self.solver, threads=self.threads)
        if q.deadline is not None:   # the time left once the model is built (it counts against the limit)
            mip.time_limit = max(q.deadline - time.perf_counter(), 0.1)
        margin = min(MIP_RELATIVE * q.scale, MAX_MARGIN)
        x, result = mip.counterexample(q.c, margin=margin)
        q.stages["mip_seconds"] = q.stages.get("mip_seconds", 0.0) + result.seconds
        name, reason = mip.solver_choices.get("counterexample", (self.solver, "chosen with --solver"))
        q.stages["mip_solver"] = f"{name} ({reason})"
        q.nodes += int(result.nodes or 0)
        found = self._found(q, x, "mip")
        if found is not None:
            return found
        if result.status == "interrupted":      # the solver caught Ctrl-C itself
            raise KeyboardInterrupt
        if x is None and result.status == "infeasible":
            q.raise_lower(-margin)
            return self._verdict(q, "robust", "mip", tolerance=margin,
                                 message=f"robust up to the MIP's tolerance: no input has a margin below "
                                         f"-{margin / self.logit_scale:.3g}")
        return None
