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
   LP-tightened root (`bounds.lp_tighten`) was tried here too: on 256x4 mnistfc
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
   the last quarter of a time limit (`BAB_SHARE`) or, without one, once the node
   budget is spent. (Small nets used to hand over to the MIP after 500 nodes;
   with beta-CROWN node bounds that hand-off made the twoclass oracle benchmark
   2.3x slower, 346 s against 150 s for branch-and-bound alone, so it is gone.)

A point counts as a counterexample only if it lies in the box and the forward
pass puts it in another class. Bounds and branch-and-bound prove a margin > 0
(a bound counts above `bab.PROOF_TOLERANCE`, 1e-9; LP bounds are certified from
their duals); a MIP proof holds up to the solver's feasibility tolerance: no input
has a margin below ``-MIP_MARGIN``.
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
MIP_MARGIN = 1e-6  # the MIP's proof: no input with a margin <= -MIP_MARGIN (its feasibility tolerance)
BAB_SHARE = 0.75  # of a time limit for branch-and-bound; the MIP gets the rest of it
ALPHA_MAX_SECONDS = 20.0    # alpha-CROWN at the root of a net with 2+ hidden layers: at most this long ...
ALPHA_SHARE = 0.1           # ... and this share of a time limit
PROBE_NODES = 2000          # on nets with 2+ hidden layers, branch-and-bound before refinement: at most this many
PROBE_SHARE = 0.05          # ... nodes, and this share of a time limit
REFINE_SHARE = 0.5          # refinement of intermediate bounds: at most this share of the time left


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


def is_counterexample(net: Network, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, c: int) -> bool:
    """Return True iff ``x`` lies in the box and the forward pass classifies it other than ``c``."""
    return bool(np.all(x >= lo) and np.all(x <= hi) and net.predict(x) != c)


class Verifier:
    """Answers many verification queries on one network, remembering recent counterexamples as attack seeds."""

    def __init__(self, net: Network, time_limit: float | None = None, node_limit: int = 200_000,
                 solver: str = "auto", threads: int = 1, mip_fallback: bool = True, bound_method: str = "crown",
                 alpha_steps: int = ALPHA_STEPS, node_bound: str = "beta", rows_apart: bool = True,
                 refine: bool = True):
        self.net = net
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
        self.seeds: list[np.ndarray] = []

    def _remember(self, x: np.ndarray) -> None:
        self.seeds.append(np.asarray(x, dtype=np.float64))
        del self.seeds[:-SEED_MEMORY]

    def _seed_array(self) -> np.ndarray | None:
        return np.array(self.seeds[::-1]) if self.seeds else None

    def _found(self, x: np.ndarray, method: str, start: float, nodes: int, stages: dict) -> Verdict:
        self._remember(x)
        return Verdict("not_robust", x, int(self.net.predict(x)), method, nodes, time.perf_counter() - start,
                       stages=stages)

    def verify(self, lo: np.ndarray, hi: np.ndarray, c: int, time_limit: float | None = None) -> Verdict:
        """Return the `Verdict` on whether every input in ``[lo, hi]`` keeps class ``c``."""
        start = time.perf_counter()
        limit = self.time_limit if time_limit is None else time_limit
        deadline = None if limit is None else start + limit
        lo = np.asarray(lo, dtype=np.float64)
        hi = np.asarray(hi, dtype=np.float64)
        C = self.net.spec_matrix(c)
        stages: dict = {}

        root = compute_bounds(self.net, lo, hi, method=self.bound_method, C=C)
        stages["bounds_seconds"] = root.seconds
        root_lower = float(root.spec_lower.min())
        if root_lower > bab.PROOF_TOLERANCE:
            return Verdict("robust", method="bounds", seconds=time.perf_counter() - start, lower_bound=root_lower,
                           stages=stages)

        linear = None if root.spec_lower_A is None else (root.spec_lower_A[0], root.spec_lower_c[0])
        hit = attack.find_counterexample(self.net, lo, hi, c, seeds=self._seed_array(), linear_lower=linear)
        stages["attack_seconds"] = hit.seconds
        if hit.x is not None and is_counterexample(self.net, hit.x, lo, hi, c):
            return self._found(hit.x, "attack", start, 0, stages)

        if len(self.net.hidden) >= 2 and self.alpha_steps:
            budget = ALPHA_MAX_SECONDS if limit is None else min(ALPHA_MAX_SECONDS, ALPHA_SHARE * limit)
            root = alpha_tighten(self.net, lo, hi, bounds=root, C=C, steps=self.alpha_steps, time_budget=budget)
            stages["alpha_seconds"] = root.seconds
            root_lower = max(root_lower, float(root.spec_lower.min()))
            if root_lower > bab.PROOF_TOLERANCE:
                return Verdict("robust", method="bounds", seconds=time.perf_counter() - start,
                               lower_bound=root_lower, stages=stages)

        bab_deadline = deadline
        if self.mip_fallback and limit is not None:
            bab_deadline = start + BAB_SHARE * limit
        refining = self.refine and len(self.net.hidden) >= 2
        search_deadline, node_limit = bab_deadline, self.node_limit
        if refining:
            node_limit = min(self.node_limit, PROBE_NODES)
            if limit is not None:
                search_deadline = min(bab_deadline, time.perf_counter() + PROBE_SHARE * limit)
        outcome = self._search(lo, hi, c, root, search_deadline, node_limit, root_lower, stages)
        nodes = outcome.nodes
        if outcome.status == "unknown" and refining and nodes < self.node_limit and \
                (bab_deadline is None or time.perf_counter() < bab_deadline):
            budget = None if bab_deadline is None else REFINE_SHARE * (bab_deadline - time.perf_counter())
            refinement = refine_bounds(self.net, lo, hi, root, C=C, time_budget=budget)
            root = refinement.bounds
            root_lower = max(root_lower, outcome.lower_bound, float(root.spec_lower.min()))
            nodes += refinement.nodes
            stages.update(refine_seconds=refinement.seconds, refine_searches=refinement.searches,
                          refine_layers=refinement.layers_refined, refine_nodes=refinement.nodes,
                          probe_nodes=outcome.nodes)
            if root_lower > bab.PROOF_TOLERANCE:
                return Verdict("robust", method="bab", nodes=nodes, seconds=time.perf_counter() - start,
                               lower_bound=root_lower, stages=stages)
            # the node limit counts margin nodes; the refinement's nodes (on cut networks) are capped per bound
            outcome = self._search(lo, hi, c, root, bab_deadline, self.node_limit - outcome.nodes, root_lower, stages)
            nodes += outcome.nodes
        if outcome.status == "not_robust" and is_counterexample(self.net, outcome.x, lo, hi, c):
            return self._found(outcome.x, "bab", start, nodes, stages)
        if outcome.status == "robust":
            return Verdict("robust", method="bab", nodes=nodes, seconds=time.perf_counter() - start,
                           lower_bound=outcome.lower_bound, stages=stages)

        if self.mip_fallback and (deadline is None or time.perf_counter() < deadline - 0.5):
            verdict = self._mip(lo, hi, c, root, deadline, nodes, start, stages)
            if verdict is not None:
                return verdict
        return Verdict("unknown", method="bab", nodes=nodes, seconds=time.perf_counter() - start,
                       lower_bound=outcome.lower_bound, stages=stages,
                       message=f"limit hit after {nodes} nodes; best proven lower bound of the margin "
                               f"{outcome.lower_bound:.4g}")

    def _search(self, lo, hi, c, root: Bounds, deadline, node_limit: int, root_lower: float,
                stages: dict) -> bab.BabOutcome:
        """Return `bab.branch_and_bound`'s outcome from ``root``, its lower bound no worse than ``root_lower``."""
        outcome = bab.branch_and_bound(self.net, lo, hi, c, deadline=deadline, node_limit=node_limit, root=root,
                                       node_bound=self.node_bound, rows_apart=self.rows_apart)
        outcome.lower_bound = max(outcome.lower_bound, root_lower)
        stages.update(bab_seconds=stages.get("bab_seconds", 0.0) + outcome.seconds,
                      bab_open_nodes=outcome.open_nodes, bab_lp_solves=outcome.lp_solves,
                      bab_input_splits=outcome.input_splits)
        return outcome

    def _mip(self, lo, hi, c, root: Bounds, deadline, bab_nodes: int, start, stages) -> Verdict | None:
        from explain_mnist.mip import NetworkMIP

        remaining = None if deadline is None else max(deadline - time.perf_counter(), 0.1)
        mip = NetworkMIP(self.net, lo, hi, bounds=root, solver=self.solver, time_limit=remaining,
                         threads=self.threads)
        x, result = mip.counterexample(c, margin=MIP_MARGIN)
        stages["mip_seconds"] = result.seconds
        name, reason = mip.solver_choices.get("counterexample", (self.solver, "chosen with --solver"))
        stages["mip_solver"] = f"{name} ({reason})"
        nodes = bab_nodes + int(result.nodes or 0)
        if x is not None and is_counterexample(self.net, x, lo, hi, c):
            return self._found(x, "mip", start, nodes, stages)
        if x is None and result.status == "infeasible":
            return Verdict("robust", method="mip", nodes=nodes, seconds=time.perf_counter() - start,
                           lower_bound=-MIP_MARGIN, stages=stages,
                           message=f"proved by the MIP up to its tolerance: no input has a margin below "
                                   f"-{MIP_MARGIN:g}")
        return None
