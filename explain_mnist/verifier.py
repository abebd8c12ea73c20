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
3. branch-and-bound over ReLU phases (``"bab"``, see `bab.py`); if it is still
   open after `ROOT_LP_AFTER_NODES` nodes (or `ROOT_LP_AFTER_SECONDS`, at most
   `ROOT_LP_AFTER_SHARE` of a time limit), the root bounds are LP-tightened
   (`bounds.lp_tighten`) and it restarts from them (every node inherits them, and
   so does the node LP's big-M);
4. the MIP of "Exact core" for what branch-and-bound left open (``"mip"``), with
   the last quarter of a time limit (`BAB_SHARE`) or, without one, once the node
   budget is spent.

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
from explain_mnist.bounds import Bounds, compute_bounds, lp_tighten
from explain_mnist.network import Network

SEED_MEMORY = 32
MIP_MARGIN = 1e-6  # the MIP's proof: no input with a margin <= -MIP_MARGIN (its feasibility tolerance)
BAB_SHARE = 0.75  # of a time limit for branch-and-bound; the MIP gets the rest of it
ROOT_LP_AFTER_NODES = 200   # branch-and-bound still open after this many nodes: LP-tighten the root, restart
ROOT_LP_AFTER_SECONDS = 10.0  # ... or after this long (deep nets: each node LP over loose CROWN bounds is slow)
ROOT_LP_AFTER_SHARE = 0.1     # ... or after this share of a time limit
ROOT_LP_SHARE = 0.5         # of the remaining time that LP tightening may take
ROOT_LP_MAX_SECONDS = 30.0  # its budget when there is no time limit


@dataclass
class Verdict:
    """The answer of one verification query (see the module docstring)."""

    verdict: str
    counterexample: np.ndarray | None = None
    counterexample_class: int | None = None
    method: str = "bounds"
    nodes: int = 0
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
                 root_lp_after: int | None = ROOT_LP_AFTER_NODES):
        self.net = net
        self.time_limit = time_limit
        self.node_limit = node_limit
        self.solver = solver
        self.threads = threads
        self.mip_fallback = mip_fallback
        self.bound_method = bound_method
        self.root_lp_after = root_lp_after
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

        bab_deadline = deadline
        if self.mip_fallback and limit is not None:
            bab_deadline = start + BAB_SHARE * limit
        first_budget = self.node_limit if self.root_lp_after is None else min(self.root_lp_after, self.node_limit)
        first_deadline = bab_deadline
        if self.root_lp_after is not None:
            patience = ROOT_LP_AFTER_SECONDS if limit is None else min(ROOT_LP_AFTER_SECONDS, ROOT_LP_AFTER_SHARE * limit)
            first_deadline = time.perf_counter() + patience if bab_deadline is None else \
                min(bab_deadline, time.perf_counter() + patience)
        outcome = bab.branch_and_bound(self.net, lo, hi, c, deadline=first_deadline, node_limit=first_budget,
                                       root=root)
        if self.root_lp_after is not None and outcome.status == "unknown" and outcome.nodes < self.node_limit and \
                (bab_deadline is None or time.perf_counter() < bab_deadline):
            budget = ROOT_LP_MAX_SECONDS if bab_deadline is None else \
                ROOT_LP_SHARE * (bab_deadline - time.perf_counter())
            root = lp_tighten(self.net, lo, hi, bounds=root, C=C, time_budget=budget)
            root_lower = max(root_lower, float(root.spec_lower.min()))
            stages["root_lp_seconds"] = root.seconds
            first_nodes = outcome.nodes
            outcome = bab.branch_and_bound(self.net, lo, hi, c, deadline=bab_deadline,
                                           node_limit=self.node_limit - first_nodes, root=root)
            outcome.nodes += first_nodes
        outcome.lower_bound = max(outcome.lower_bound, root_lower)
        stages.update(bab_seconds=outcome.seconds, bab_open_nodes=outcome.open_nodes, bab_lp_solves=outcome.lp_solves)
        if outcome.status == "not_robust" and is_counterexample(self.net, outcome.x, lo, hi, c):
            return self._found(outcome.x, "bab", start, outcome.nodes, stages)
        if outcome.status == "robust":
            return Verdict("robust", method="bab", nodes=outcome.nodes, seconds=time.perf_counter() - start,
                           lower_bound=outcome.lower_bound, stages=stages)

        if self.mip_fallback and (deadline is None or time.perf_counter() < deadline - 0.5):
            verdict = self._mip(lo, hi, c, root, deadline, outcome, start, stages)
            if verdict is not None:
                return verdict
        return Verdict("unknown", method="bab", nodes=outcome.nodes, seconds=time.perf_counter() - start,
                       lower_bound=outcome.lower_bound, stages=stages,
                       message=f"limit hit after {outcome.nodes} nodes; best proven lower bound of the margin "
                               f"{outcome.lower_bound:.4g}")

    def _mip(self, lo, hi, c, root: Bounds, deadline, outcome, start, stages) -> Verdict | None:
        from explain_mnist.mip import NetworkMIP

        remaining = None if deadline is None else max(deadline - time.perf_counter(), 0.1)
        mip = NetworkMIP(self.net, lo, hi, bounds=root, solver=self.solver, time_limit=remaining,
                         threads=self.threads)
        x, result = mip.counterexample(c, margin=MIP_MARGIN)
        stages["mip_seconds"] = result.seconds
        name, reason = mip.solver_choices.get("counterexample", (self.solver, "chosen with --solver"))
        stages["mip_solver"] = f"{name} ({reason})"
        nodes = outcome.nodes + int(result.nodes or 0)
        if x is not None and is_counterexample(self.net, x, lo, hi, c):
            return self._found(x, "mip", start, nodes, stages)
        if x is None and result.status == "infeasible":
            return Verdict("robust", method="mip", nodes=nodes, seconds=time.perf_counter() - start,
                           lower_bound=-MIP_MARGIN, stages=stages,
                           message=f"proved by the MIP up to its tolerance: no input has a margin below "
                                   f"-{MIP_MARGIN:g}")
        return None
