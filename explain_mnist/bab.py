"""Branch-and-bound over ReLU phases: decide "no input in the box is classified other than c".

A node is an assignment of phases to some hidden neurons (+1 active, -1 inactive,
0 free); its region is the part of the box where every fixed neuron has its phase.
The margins ``C f(x)`` (``C = net.spec_matrix(c)``; all > 0 iff class c) are
bounded over many nodes at once by CROWN with the nodes' phases fixed
(`bounds.crown_bounds`, batched). Per node and margin row:

- a row whose lower bound is > 0 is proved for the whole node, and stays proved in
  its children (their regions are subsets); for the same reason a child keeps
  its parent's neuron and margin bounds where they are tighter than its own
  (CROWN is not monotone under splits: it treats a neuron fixed active as
  ``a = z`` on the whole box, without the constraint ``z >= 0``);
- a node with every row proved, or whose phases contradict its bounds, is closed;
- a child re-bounds only the layers after its new split (``crown_bounds``'s
  ``fresh_from``): the layers up to it keep the parent's bounds, which CROWN
  would only reproduce;
- the box corner minimising each open row's linear lower bound is a candidate
  counterexample, checked by the forward pass;
- the open rows of all nodes of the batch are then bounded at once by
  beta-CROWN (`bounds.optimise_rows`, node bound "beta"): per row, lower slopes
  and multipliers of the node's neuron bounds (its splits among them), improved
  for `BETA_STEPS_PER_LAYER` projected Adam steps per hidden layer from the
  parent's values (each node keeps its rows' multipliers as its children's warm
  start), in single precision with the final bounds from one double-precision
  pass, and with the nodes whose rows are all proved leaving the ascent early.
  Its optimum is the node LP's, at a fraction of the cost on deep nets
  (measured on 256x4 mnistfc: prop_0_0.03 in 3 s and 167 nodes, against 13 s
  and 213 nodes with node LPs; prop_10_0.05 in 8 s against 24 s; with 20 steps
  instead of 40 the bounds were too loose and prop_10_0.05 took over 4,000
  nodes). Its minimising corners are candidate counterexamples too.
  On a small network with one hidden layer (`hull.applies`) the open rows are bounded
  by `hull.hull_rows` instead: each free neuron that pushes the row down gets an
  upper line in the inputs, the concave envelope of its ReLU over the box rather
  than the triangle over its pre-activation's interval, and the split neurons
  get multipliers as above; the inputs fixed on the box fold into the biases,
  and the corners the ascent meets where the row is <= 0 are candidates too.
  Measured on the twoclass net's hardest explanation queries (RESULTS.md,
  section "explanation"): 23-91 nodes where beta-CROWN took 4,500-8,500. Node bound
  "lp" minimises each open row by an LP instead (`NodeLP`: the triangle relaxation with the node's splits as
  exact constraints, its bound certified from the duals; the LP's minimiser is
  a candidate counterexample, re-checked by the forward pass). A node with
  every neuron fixed is a leaf: there the LP is exact, and it is always used;
- otherwise the node splits on the unstable neuron with the largest score
  ``max(-lam, 0) * u * (-l) / (u - l)``: ``lam`` is the neuron's coefficient in the
  back-substituted lower bound of the node's worst row, so the score is how much
  the upper line of its triangle relaxation lowers that bound (the neurons whose
  output pushes the margin down), ties broken by ``|lam| * (u - l)``. ``lam``
  comes from plain CROWN (default slopes), not from the optimised bound: measured
  on the same instance, optimised coefficients branched into 5,615 nodes
  against 271.

Input splits: on a box with at most `INPUT_SPLIT_MAX_DIMS` free inputs (or with
``input_splits=True``), a node may instead halve its input box along the free
input ``d`` with the largest ``|A_d| (hi_d - lo_d)`` (``A``: the CROWN coefficients
of its worst margin), when that is better: the two children of the input split
and of the ReLU split are bounded by CROWN in one batch, and the input split wins
if its worse child bounds higher; ties alternate between the two (`_input_or_relu`). A node then carries its own box, which every bound,
corner and leaf LP of its subtree uses. On 784-pixel boxes input splits do not
pay: at the root of 256x2 mnistfc prop_1_0.03 the best five input splits raise the
worse child's CROWN bound by 0.003-0.007, the chosen ReLU split by 0.15. On
random nets with 2 or 3 inputs they decide in a fraction of the time (RESULTS.md,
section "branching").

With ``rows_apart`` (the default) every open margin row starts a tree of its own:
the root becomes one node per row, so each row's splits are chosen for that row
alone and never multiply another row's work. In one joint tree, the splits that
the worst row needs are made in every other row's subtree too. Measured on
256x2 mnistfc prop_1_0.03: robust in 14 s and 3,205 nodes apart, against still
open after 43,775 nodes (330 s) jointly. The price: a joint node bounds its
intermediate layers once for all its rows, so where the rows need the same
splits the joint tree is faster (256x4 prop_10_0.05: 8 s joint, 17 s apart).

Nodes are taken best-first (lowest bound first), in batches; the smallest lower
bound over the open nodes is a proven lower bound of the smallest margin over the
box. Answers: ``robust``, ``not_robust`` (with x), or ``unknown`` at the node
budget or deadline.
"""
from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from explain_mnist.bounds import Bounds, crown_bounds, optimise_rows, spec_coefficients
from explain_mnist.hull import applies as hull_applies, hull_rows, initial as hull_initial
from explain_mnist.network import Network

BATCH_NODES = 32
BETA_STEPS_PER_LAYER = 10   # projected Adam steps of beta-CROWN per batch of nodes, per hidden layer
PROOF_TOLERANCE = 1e-9  # default: a margin bound proves the margin positive only above this (rounding)
INPUT_SPLIT_MAX_DIMS = 16   # input splits are weighed only for boxes with at most this many free inputs
HULL_WARM_BYTES = 2 ** 28   # the open nodes keep their hull slopes as a warm start up to this much memory
MAX_SPLITS_AT_ONCE = 5      # neurons a node may be split on at once when the next batch would be underfilled
INPUT_SPLIT_DEPTH = 20      # an input is halved at most this many times (its width stays >= 2^-20 of the box's)


@dataclass
class BabOutcome:
    """The result of `branch_and_bound`: status, counterexample, proven lower bound, work done."""

    status: str
    x: np.ndarray | None
    lower_bound: float
    nodes: int
    seconds: float
    open_nodes: int = 0
    lp_solves: int = 0
    input_splits: int = 0
    stopped_by: str = ""   # why an "unknown" search stopped: "node_limit", "deadline", "interrupt" or "tie"


@dataclass(order=True)
class _Node:
    bound: float
    order: int
    phases: list = None
    open_rows: np.ndarray = None
    lower: list = None   # the parent's neuron bounds, valid on this node's region (a subset of the parent's)
    upper: list = None
    row_bounds: np.ndarray = None   # the parent's margin bounds, valid here for the same reason
    warm: dict = None   # open row -> (alpha, nu) per layer: the parent's beta-CROWN multipliers, a warm start
    fresh_from: int = 0   # the first hidden layer whose bounds the node's own split can change
    box: tuple = None   # (lo, hi): the node's part of the input box after input splits; None = the whole box
    splits: tuple = (0, 0)   # how many (ReLU, input) splits made the node


class NodeLP:
    """The LP relaxation of the network's MIP encoding over the box, re-solved for each node.

    The encoding (`encoding.encode_network`, built once with the root bounds) with
    its binaries relaxed to [0, 1] is the triangle relaxation of every unstable
    neuron. A node's phases are bound changes on the relaxed binaries: ``d = 1``
    forces ``y = z >= 0`` and ``d = 0`` forces ``y = 0 >= z``, so the split
    constraints hold exactly (what beta-CROWN's multipliers approximate). A node's
    own bounds ``l' <= z <= u'`` (valid on its region, tighter than the root's)
    replace the root's in the ``y`` column bound and in the two chord rows
    ``y <= z - l' (1 - d)`` and ``y <= u' d`` (coefficient changes), so every
    unstable neuron's triangle is the node's own. With every neuron fixed or
    stable the LP is the exact minimum over the node's region (a linear piece).
    """

    def __init__(self, net: Network, lo: np.ndarray, hi: np.ndarray, root: Bounds, C: np.ndarray):
        from explain_mnist.encoding import encode_network
        from explain_mnist.solvers import make_solver

        model = encode_network(net, lo, hi, root)
        model.integrality[:] = False
        self.model = model
        self.solver = make_solver("highs", model)
        self.columns = [(layer.unstable, layer.d_cols, layer.y_cols) for layer in model.layers]
        # per layer: the chord rows of its unstable neurons (encoding order: y >= z; y <= z - l(1-d); y <= u d),
        # the offset p of z = P v + p in them, and the l, u the loaded rows hold now
        self.chords, first = [], 0
        for layer in model.layers:
            n_u = layer.unstable.size
            self.chords.append(dict(row_l=first + n_u + np.arange(n_u), row_u=first + 2 * n_u + np.arange(n_u),
                                    offset=model.row_lower[first:first + n_u].copy(),
                                    l=layer.lower[layer.unstable].copy(), u=layer.upper[layer.unstable].copy(),
                                    root_l=layer.lower[layer.unstable].copy(),
                                    root_u=layer.upper[layer.unstable].copy()))
            first += 3 * n_u
        self.objectives = sp.csr_matrix(C) @ model.logit_matrix
        self.constants = C @ model.logit_offset
        self.solves = 0

    def _set_triangles(self, lower: list, upper: list) -> None:
        """Load the node's neuron bounds into the chord rows where they differ from the loaded ones."""
        rows, cols, values, bound_rows, bound_values = [], [], [], [], []
        for (unstable, d_cols, _), chord, l_node, u_node in zip(self.columns, self.chords, lower, upper):
            l = np.minimum(np.maximum(l_node[unstable], chord["root_l"]), 0.0)
            u = np.maximum(np.minimum(u_node[unstable], chord["root_u"]), 0.0)
            changed = np.flatnonzero((l != chord["l"]) | (u != chord["u"]))
            if changed.size == 0:
                continue
            rows += [chord["row_l"][changed], chord["row_u"][changed]]
            cols += [d_cols[changed], d_cols[changed]]
            values += [-l[changed], -u[changed]]
            bound_rows.append(chord["row_l"][changed])
            bound_values.append(chord["offset"][changed] - l[changed])
            chord["l"][changed], chord["u"][changed] = l[changed], u[changed]
        if rows:
            self.solver.set_coefficients(np.concatenate(rows), np.concatenate(cols), np.concatenate(values))
            self.solver.set_row_bounds(np.concatenate(bound_rows), -np.inf, np.concatenate(bound_values))

    def minimum(self, phases: list, upper: list, row: int, lower: list | None = None,
                box: tuple | None = None) -> tuple[float, np.ndarray | None]:
        """Return ``(bound, x)``: a certified lower bound of margin ``row`` at a node and the LP's minimiser.

        The bound is rebuilt from the LP's duals by weak duality (`MIPModel.dual_lower_bound`),
        so it holds whatever the solver's tolerances; +inf if the node is empty.

        ``phases``, ``upper`` and ``lower`` are the node's per-layer phases and bounds
        (without ``lower`` the triangles stay as loaded), ``box`` its ``(lo, hi)`` inside the
        LP's box (default that box); ``x`` is the input of the LP's minimiser (a candidate
        counterexample).
        """
        if lower is not None:
            self._set_triangles(lower, upper)
        pixels = self.model.input_pixels
        box_lo, box_hi = (self.model.box_lo, self.model.box_hi) if box is None else box
        cols, lbs, ubs = [self.model.input_cols], [box_lo[pixels]], [box_hi[pixels]]
        for (unstable, d_cols, y_cols), phase, u in zip(self.columns, phases, upper):
            p = phase[unstable]
            cols += [d_cols, y_cols]
            lbs += [(p > 0).astype(np.float64), np.zeros(len(y_cols))]
            ubs += [(p >= 0).astype(np.float64), np.where(p < 0, 0.0, np.maximum(u[unstable], 0.0))]
        if cols:
            self.solver.set_col_bounds(np.concatenate(cols), np.concatenate(lbs), np.concatenate(ubs))
        self.solver.set_objective(self.objectives[row].toarray().ravel(), constant=float(self.constants[row]))
        self.solves += 1
        result = self.solver.solve()
        if result.status == "infeasible":
            return np.inf, None
        if result.status != "optimal" or result.objective is None or result.row_duals is None:
            return -np.inf, None
        certified = self.solver.model.dual_lower_bound(result.row_duals)
        return min(certified, float(result.objective)), self.model.input_point(result.x)


def _split_choice(lower: list, upper: list, lam: list, phases: list):
    """Return ``(layer, neuron)`` of the free unstable neuron with the best score, or None (a leaf).

    Arguments are one node's per-layer lower and upper bounds, coefficients and phases.
    """
    best, choice = -1.0, None
    for k, (l, u, coefficient, phase) in enumerate(zip(lower, upper, lam, phases)):
        free = (phase == 0) & (l < 0) & (u > 0)
        if not free.any():
            continue
        width = np.where(free, u - l, 1.0)
        score = np.maximum(-coefficient, 0.0) * u * (-l) / width + 1e-6 * np.abs(coefficient) * width
        score = np.where(free, score, -1.0)
        j = int(np.argmax(score))
        if score[j] > best:
            best, choice = float(score[j]), (k, j)
    return choice


NODE_BOUNDS = {"beta": BETA_STEPS_PER_LAYER, "lp": 0}   # node bound -> beta-CROWN steps per hidden layer (0: node LPs)


def _settled(phases: list, lower: list, upper: list) -> list:
    """Return phases with the neurons that the bounds decide (l >= 0: +1, u <= 0: -1) filled in."""
    return [np.where(p != 0, p, np.where(l >= 0, 1, np.where(u <= 0, -1, 0))).astype(np.int8)
            for p, l, u in zip(phases, lower, upper)]


def branch_and_bound(net: Network, lo: np.ndarray, hi: np.ndarray, c: int, deadline: float | None = None,
                     node_limit: int = 200_000, root: Bounds | None = None,
                     batch: int = BATCH_NODES, node_bound: str = "beta", rows_apart: bool = True,
                     input_splits: bool | None = None, counterexamples: bool = True,
                     tolerance: float = PROOF_TOLERANCE, progress=None) -> BabOutcome:
    """Return the `BabOutcome` of deciding whether every input in ``[lo, hi]`` keeps class ``c``.

    ``node_bound`` (a key of `NODE_BOUNDS`) chooses how the open margins of a node are bounded
    after CROWN: "beta" (batched beta-CROWN, the node LP only at leaves) or "lp" (a node LP per row).
    ``rows_apart``: one tree per open margin row (default) rather than one tree for all rows.
    ``input_splits``: weigh input splits against ReLU splits at every node; by default only
    when the box has at most `INPUT_SPLIT_MAX_DIMS` free inputs. Without ``counterexamples`` no
    candidate point is tried and a leaf's exact LP minimum closes it: the search only raises its
    proven lower bound (`refine.py` bounds a neuron this way), ending "robust" (every node closed:
    the bound is final, and may be <= 0) or "unknown".

    A margin bound proves its row only above ``tolerance`` (the caller scales it to the problem:
    floating-point rounding grows with the size of the values summed). ``progress``, if given, is
    called as ``progress(nodes, lower_bound)`` after every batch. On Ctrl-C the search stops as at
    a deadline ("unknown", ``stopped_by="interrupt"``), its lower bound still a proof.
    """
    if node_bound not in NODE_BOUNDS:
        raise ValueError(f"unknown node bound {node_bound!r}; supported: {', '.join(NODE_BOUNDS)}")
    start = time.perf_counter()
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if input_splits is None:
        input_splits = int(np.count_nonzero(hi > lo)) <= INPUT_SPLIT_MAX_DIMS
    C = net.spec_matrix(c)
    m = C.shape[0]
    W_spec, b_spec = C @ net.affines[-1].dense_W(), C @ net.affines[-1].b
    counter = itertools.count()
    sizes = [a.n_out for a in net.hidden]
    root_bound = -np.inf if root is None or root.spec_lower is None else float(root.spec_lower.min())
    unbounded = ([np.full(n, -np.inf) for n in sizes], [np.full(n, np.inf) for n in sizes])
    root_lower, root_upper = unbounded if root is None else ([l[0] for l in root.lower], [u[0] for u in root.upper])
    root_rows = np.full(m, -np.inf) if root is None or root.spec_lower is None else root.spec_lower[0]
    no_phases = [np.zeros(n, dtype=np.int8) for n in sizes]
    if rows_apart:
        heap = [_Node(float(root_rows[r]), next(counter), no_phases, np.arange(m) == r, root_lower, root_upper,
                      root_rows) for r in range(m) if not root_rows[r] > tolerance]
        heapq.heapify(heap)
    else:
        heap = [_Node(root_bound, next(counter), no_phases, np.ones(m, dtype=bool), root_lower, root_upper,
                      root_rows)]
    nodes = input_split_count = 0
    # the smallest margin bound that closed a node, rows proved at the root (never on the heap) included
    closed_lower = float(root_rows[root_rows > tolerance].min(initial=np.inf))
    node_lp = None
    beta_steps = NODE_BOUNDS[node_bound] * len(sizes)
    one_hidden = hull_applies(net)
    if one_hidden:   # inputs fixed on the box fold into the hidden biases: the hull's slopes are over the free ones
        free = hi > lo
        W_dense = net.hidden[0].dense_W()
        W_hidden, b_hidden = W_dense[:, free], net.hidden[0].b + W_dense[:, ~free] @ lo[~free]

    in_flight = np.inf   # the smallest bound of a batch taken off the heap and not yet put back or split

    def outcome(status, x=None, stopped_by=""):
        open_bound = min((node.bound for node in heap), default=np.inf)
        return BabOutcome(status, x, float(min(open_bound, closed_lower, in_flight)), nodes,
                          time.perf_counter() - start, len(heap), 0 if node_lp is None else node_lp.solves,
                          input_split_count, stopped_by)

    def put_back(indices):
        """Put nodes of the current batch back on the heap unsplit, so that the open bound stays a proof."""
        for rest in indices:
            node = taken[rest]
            heapq.heappush(heap, _Node(float(lower[rest][open_rows[rest]].min()), next(counter), node.phases,
                                       open_rows[rest], node.lower, node.upper, lower[rest], box=node.box))

    def first_changing(points):
        """Return the first of ``points`` (inputs of the box) that the network classifies other than c, or None."""
        hits = np.flatnonzero(net.predict(points) != c) if len(points) else []
        return points[hits[0]] if len(hits) else None

    def counterexample(A, box_lo, box_hi):
        """Return the first minimising box corner of the linear bounds ``A`` that changes the class, or None."""
        return first_changing(np.where(A > 0, box_lo, box_hi)) if counterexamples else None

    try:
        while heap:
            if progress is not None:
                progress(nodes, min(heap[0].bound, closed_lower))
            if nodes >= node_limit:
                return outcome("unknown", stopped_by="node_limit")
            if deadline is not None and time.perf_counter() > deadline:
                return outcome("unknown", stopped_by="deadline")
            taken = [heapq.heappop(heap) for _ in range(min(batch, len(heap)))]
            in_flight = min(node.bound for node in taken)
            nodes += len(taken)
            phases = [np.stack([node.phases[k] for node in taken]) for k in range(len(sizes))]
            prior = ([np.stack([node.lower[k] for node in taken]) for k in range(len(sizes))],
                     [np.stack([node.upper[k] for node in taken]) for k in range(len(sizes))])
            box_lo = np.stack([lo if node.box is None else node.box[0] for node in taken])
            box_hi = np.stack([hi if node.box is None else node.box[1] for node in taken])
            bounds = crown_bounds(net, box_lo, box_hi, phases=phases, C=C, prior=prior,
                                  fresh_from=np.array([node.fresh_from for node in taken]))
            inherited = np.stack([node.row_bounds for node in taken])
            lower = np.where(np.stack([node.open_rows for node in taken]), np.maximum(bounds.spec_lower, inherited), np.inf)
            open_rows = ~(lower > tolerance) & ~bounds.infeasible[:, None]   # a NaN bound proves nothing
            idx = np.flatnonzero(open_rows.any(axis=1))
            node_of, row_of = np.nonzero(open_rows)
            if idx.size:
                x = counterexample(bounds.spec_lower_A[node_of, row_of], box_lo[node_of], box_hi[node_of])
                if x is not None:
                    return outcome("not_robust", x)
            warm = [None] * len(taken)
            if beta_steps and idx.size:
                points = None   # candidate counterexamples besides the bounds' minimising corners
                if one_hidden:
                    first = _hull_start([node.warm for node in taken], node_of, row_of, bounds.lower[0][node_of],
                                        bounds.upper[0][node_of], W_spec[row_of], W_hidden)
                    rows = hull_rows(W_hidden, b_hidden, box_lo[node_of][:, free], box_hi[node_of][:, free],
                                     bounds.lower[0][node_of], bounds.upper[0][node_of], phases[0][node_of],
                                     W_spec[row_of], b_spec[row_of], start=first, stop_above=tolerance)
                    keep_slopes = (len(heap) + len(taken)) * W_hidden.size * 4 <= HULL_WARM_BYTES
                    starts = [(rows.alpha[pair], rows.slopes[pair].astype(np.float32) if keep_slopes else None,
                               rows.beta[pair]) for pair in range(node_of.size)]
                    bound, A = rows.bound, np.zeros((node_of.size, lo.size))
                    A[:, free] = rows.A
                    met = np.flatnonzero(np.isfinite(rows.candidates[:, 0]))
                    points = box_lo[node_of[met]].copy()
                    points[:, free] = rows.candidates[met]
                else:
                    alpha0, nu0 = _warm_start_from([node.warm for node in taken], node_of, row_of, bounds.lower)
                    rows = optimise_rows(net, box_lo[node_of], box_hi[node_of], [l[node_of] for l in bounds.lower],
                                         [u[node_of] for u in bounds.upper], W_spec[row_of][:, None, :],
                                         b_spec[row_of][:, None], phases=[p[node_of] for p in phases],
                                         steps=beta_steps, deadline=np.inf if deadline is None else deadline,
                                         alpha=alpha0, nu=nu0, stop_above=tolerance, dtype=np.float32)
                    starts = [([a[pair, 0].astype(np.float32) for a in rows.alpha],
                               [v[pair, 0].astype(np.float32) for v in rows.nu]) for pair in range(node_of.size)]
                    bound, A = rows.bound[:, 0], rows.A[:, 0]
                warm = [{} for _ in taken]
                for pair, (i, r) in enumerate(zip(node_of, row_of)):
                    warm[i][r] = starts[pair]
                lower[node_of, row_of] = np.maximum(lower[node_of, row_of], bound)
                x = counterexample(A, box_lo[node_of], box_hi[node_of])
                if x is None and points is not None and counterexamples:
                    x = first_changing(points)
                if x is not None:
                    return outcome("not_robust", x)
                open_rows &= ~(lower > tolerance)
            proved = (lower > tolerance) & np.isfinite(lower) & ~bounds.infeasible[:, None]
            closed_lower = min(closed_lower, float(lower[proved].min(initial=np.inf)))
            idx = np.flatnonzero(open_rows.any(axis=1))
            if idx.size == 0:
                in_flight = np.inf
                continue
            worst = np.argmin(lower, axis=1)
            lam = [np.zeros((len(taken), n)) for n in sizes]
            for k, coefficient in enumerate(spec_coefficients(net, bounds, C[worst[idx]], phases, boxes=idx)):
                lam[k][idx] = coefficient
            settled = {i: _settled([p[i] for p in phases], [l[i] for l in bounds.lower], [u[i] for u in bounds.upper])
                       for i in idx}
            choices = {i: _split_choice([l[i] for l in bounds.lower], [u[i] for u in bounds.upper],
                                        [coefficient[i] for coefficient in lam], settled[i]) for i in idx}
            if input_splits:
                choices.update(_input_or_relu(net, C, bounds, box_lo, box_hi, settled, choices, worst, open_rows,
                                              lower, (hi - lo) * 2.0 ** -INPUT_SPLIT_DEPTH,
                                              [node.splits for node in taken]))
            for pos, i in enumerate(idx):
                if deadline is not None and time.perf_counter() > deadline:
                    put_back(idx[pos:])
                    in_flight = np.inf
                    return outcome("unknown", stopped_by="deadline")
                node_lower = [l[i] for l in bounds.lower]
                node_upper = [u[i] for u in bounds.upper]
                node_box = taken[i].box
                choice = choices[i]
                rows = lower[i].copy()
                if choice is None or not beta_steps:
                    # the node LP: exact at a leaf (every neuron fixed), the "lp" node bound elsewhere
                    if node_lp is None:
                        node_lp = NodeLP(net, lo, hi, root if root is not None else crown_bounds(net, lo, hi), C)
                    for r in np.argsort(rows):
                        if not open_rows[i, r]:
                            break
                        value, x = node_lp.minimum(settled[i], node_upper, r, node_lower, box=node_box)
                        if counterexamples and x is not None and net.predict(x) != c:
                            return outcome("not_robust", x)
                        rows[r] = max(rows[r], value)
                        if rows[r] <= tolerance:
                            break
                still_open = open_rows[i] & (rows <= tolerance)
                closed_lower = min(closed_lower, float(rows[open_rows[i] & ~still_open].min(initial=np.inf)))
                if not still_open.any():
                    continue
                if choice is None and not counterexamples:
                    closed_lower = min(closed_lower, float(rows[still_open].min()))
                    continue
                if choice is None:
                    # every neuron is fixed: the LP was exact, its minimum <= 0 and its minimiser did not flip the
                    # class: a margin of about 0 (a tie) that no point verifiably crosses
                    heapq.heappush(heap, _Node(float(rows[still_open].min()), next(counter), settled[i], still_open,
                                               node_lower, node_upper, rows, box=node_box))
                    put_back(idx[pos + 1:])
                    in_flight = np.inf
                    return outcome("unknown", stopped_by="tie")
                bound = float(rows[still_open].min())
                if choice[0] == "input":
                    input_split_count += 1
                    relu_splits, input_splits_made = taken[i].splits
                    for child_box in _halves(box_lo[i], box_hi[i], choice[1]):
                        heapq.heappush(heap, _Node(bound, next(counter), settled[i], still_open, node_lower, node_upper,
                                                   rows, warm[i], 0, child_box, (relu_splits, input_splits_made + 1)))
                    continue
                relu_splits, input_splits_made = taken[i].splits
                picks = [choice]
                if one_hidden:   # an underfilled next batch costs as much as a full one: split deeper now
                    room = batch // max(1, len(heap) + 2 * (idx.size - pos))
                    marked = [p.copy() for p in settled[i]]     # the picked neurons count as fixed
                    while room >= 2 and len(picks) < MAX_SPLITS_AT_ONCE:
                        marked[picks[-1][0]][picks[-1][1]] = 1
                        extra = _split_choice(node_lower, node_upper, [coefficient[i] for coefficient in lam], marked)
                        if extra is None:
                            break
                        picks.append(extra)
                        room //= 2
                children = [settled[i]]
                for pick in picks:
                    children = [grandchild for child in children for grandchild in _relu_children(child, pick)]
                first_layer = min(kk for kk, _ in picks)
                for child in children:
                    heapq.heappush(heap, _Node(bound, next(counter), child, still_open, node_lower, node_upper, rows,
                                               warm[i], first_layer + 1, node_box,
                                               (relu_splits + len(picks), input_splits_made)))
            in_flight = np.inf
    except KeyboardInterrupt:
        return outcome("unknown", stopped_by="interrupt")
    in_flight = np.inf
    return outcome("robust")


def _halves(box_lo: np.ndarray, box_hi: np.ndarray, d: int) -> list:
    """Return the two boxes ``(lo, hi)`` that split ``[box_lo, box_hi]`` at the midpoint of input ``d``."""
    middle = 0.5 * (box_lo[d] + box_hi[d])
    low_hi, high_lo = box_hi.copy(), box_lo.copy()
    low_hi[d], high_lo[d] = middle, middle
    return [(box_lo, low_hi), (high_lo, box_hi)]


def _relu_children(phases: list, choice: tuple) -> list:
    """Return the phases of the two children that fix neuron ``choice = (layer, neuron)`` active, then inactive."""
    k, j = choice
    children = []
    for phase in (1, -1):
        child = [p.copy() for p in phases]
        child[k][j] = phase
        children.append(child)
    return children


def _input_or_relu(net, C, bounds, box_lo, box_hi, settled, choices, worst, open_rows, row_bounds,
                   min_width, splits) -> dict:
    """Return, per node whose input box can still be split, ``("input", d)`` where that split is the better one.

    The input candidate is the input ``d`` wider than ``min_width`` with the largest
    ``|A_d| (hi_d - lo_d)`` (> 0), ``A`` the CROWN coefficients of the node's worst margin: the input
    the bound varies most along. The two children of each candidate (input halves, ReLU
    phases) are bounded by CROWN in one batch, each child's rows kept at least at the node's
    (``row_bounds``: CROWN is not monotone under splits). The input split wins if its worse
    child bounds higher than the ReLU split's; on a tie, if the node was made by fewer input
    splits than ReLU splits (``splits``: per node, its (ReLU, input) split counts), so ties
    alternate. Measured on 30 random nets with 2 inputs: ties always to the ReLU split 10 s
    and one net undecided, alternating 0.3 s; ties always to the input split 0.15 s, but near a
    margin of 0, where only the exact leaf LP decides, it halved boxes for 200,000 nodes
    without an answer. Each input is halved at most `INPUT_SPLIT_DEPTH` times, so every path
    of the tree ends.
    """
    result, candidates = {}, []
    for i, relu in choices.items():
        if relu is None:   # no ReLU left to split: the node LP is exact
            continue
        reach = np.abs(bounds.spec_lower_A[i, worst[i]]) * (box_hi[i] - box_lo[i])
        reach = np.where(box_hi[i] - box_lo[i] > min_width, reach, 0.0)
        if reach.max() > 0:
            candidates.append((i, int(np.argmax(reach)), relu))
    if not candidates:
        return result
    child_lo, child_hi, child_phases, parents, fresh = [], [], [], [], []
    for i, d, relu in candidates:
        (low_lo, low_hi), (high_lo, high_hi) = _halves(box_lo[i], box_hi[i], d)
        child_lo += [low_lo, high_lo, box_lo[i], box_lo[i]]
        child_hi += [low_hi, high_hi, box_hi[i], box_hi[i]]
        child_phases += [settled[i], settled[i], *_relu_children(settled[i], relu)]
        fresh += [0, 0, relu[0] + 1, relu[0] + 1]
        parents += [i] * 4
    parents = np.array(parents)
    children = crown_bounds(net, np.array(child_lo), np.array(child_hi),
                            phases=[np.stack([p[k] for p in child_phases]) for k in range(len(bounds.lower))],
                            C=C, prior=([l[parents] for l in bounds.lower], [u[parents] for u in bounds.upper]),
                            fresh_from=np.array(fresh))
    value = np.where(open_rows[parents], np.maximum(children.spec_lower, row_bounds[parents]), np.inf).min(axis=1)
    value = np.where(children.infeasible, np.inf, value).reshape(-1, 2, 2)   # candidate x (input, relu) x child
    worse = value.min(axis=2)
    for (i, d, _), w in zip(candidates, worse):
        relu_splits, input_splits = splits[i]
        if w[0] > w[1] or (w[0] == w[1] and input_splits < relu_splits):
            result[i] = ("input", d)
    return result


def _hull_start(warm: list, node_of: np.ndarray, row_of: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                v: np.ndarray, W: np.ndarray) -> tuple:
    """Return `hull.hull_rows`'s start for the (node, row) pairs: the parent's multipliers where kept (its slopes
    unless the heap was too large to keep them), else `hull.initial`."""
    alpha, slopes, beta = hull_initial(lower, upper, W, v)
    for pair, (i, r) in enumerate(zip(node_of, row_of)):
        kept = warm[i].get(r) if warm[i] else None
        if kept is not None:
            alpha[pair], beta[pair] = kept[0], kept[2]
            if kept[1] is not None:
                slopes[pair] = kept[1]
    return alpha, slopes, beta


def _warm_start_from(warm: list, node_of: np.ndarray, row_of: np.ndarray, lower: list):
    """Return per-layer ``(P, 1, n_j)`` starts of alpha and nu for the (node, row) pairs (NaN alpha: default).

    ``warm[i]`` is node i's dict: row -> (alpha, nu) per layer, or None.
    """
    if not any(warm):
        return None, None
    alpha = [np.full((node_of.size, 1, l.shape[1]), np.nan) for l in lower]
    nu = [np.zeros((node_of.size, 1, l.shape[1])) for l in lower]
    for pair, (i, r) in enumerate(zip(node_of, row_of)):
        start = warm[i].get(r) if warm[i] else None
        if start is not None:
            for k in range(len(lower)):
                alpha[k][pair, 0] = start[0][k]
                nu[k][pair, 0] = start[1][k]
    return alpha, nu
