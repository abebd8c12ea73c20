"""The MIP and pure integer encodings of a binarized-network `Query`, solved by the project's backends.

Formulation. Columns: a binary ``f_p`` per free pixel (a flip), a binary ``h`` per unstable neuron, and for the
untargeted question a binary ``o_j`` per output row. Each unstable neuron's literal count is the linear form
``count = S v + n_neg`` over the previous layer's columns v (``n_neg`` = its -1 entries: ``1 - v``), with range
``[lo, hi]``, and ``h <=> count >= T`` is two big-M rows with the neuron's own range as M:

    count - (T - lo) h >= lo            (h = 1: count >= T)
    count - (hi - T + 1) h <= T - 1     (h = 0: count <= T - 1)

- ``mip``: the pre-activation is a real (continuous) column ``z in [lo, hi]`` with ``z - S v = n_neg``, and the
  two rows are written on z (the form of a real-valued network's MIP: big-M on a real pre-activation);
- ``ip``: no continuous column; the rows are written on ``S v`` directly (a pure 0-1 program).

Output: ``mode = "all"``: every row ``count_j >= T_j``; ``mode = "any"``: ``count_j - T_j o_j >= 0`` and
``sum o >= 1``. The budget is the row ``sum f <= k``. Verification is a feasibility problem (objective 0, stop at
the first solution); minimal flips minimise ``sum f``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from explain_mnist.binarized.query import Query
from explain_mnist.encoding import MIPModel

KINDS = ("mip", "ip")


@dataclass
class Encoded:
    """A built model and where its columns are."""

    model: MIPModel
    flip_cols: np.ndarray
    hidden_cols: list          # per layer: the h columns of its unstable neurons
    budget_row: int | None


def _empty_model() -> MIPModel:
    return MIPModel(lb=np.zeros(0), ub=np.zeros(0), integrality=np.zeros(0, dtype=bool),
                    A=sp.csr_matrix((0, 0)), row_lower=np.zeros(0), row_upper=np.zeros(0), c=np.zeros(0))


def _form(S: np.ndarray, cols: np.ndarray, n_cols: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Return (rows of S v over the columns ``cols``, n_neg per row) for signs S (0 entries absent)."""
    S = np.asarray(S, dtype=np.float64)
    M = sp.csr_matrix(S)
    M = sp.csr_matrix((M.data, cols[M.indices], M.indptr), shape=(S.shape[0], n_cols))
    return M, (S < 0).sum(axis=1)


def encode(query: Query, kind: str = "mip") -> Encoded:
    """Return the `Encoded` MIP (``kind="mip"``) or pure IP (``"ip"``) of a query (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    m = _empty_model()
    prev = m.add_columns(0.0, np.ones(query.n_flips), integer=True)
    flips = prev
    hidden = []
    for layer in query.layers:
        n = len(layer.unstable)
        h = m.add_columns(0.0, np.ones(n), integer=True)
        if n:
            form, n_neg = _form(layer.S, prev, m.n_cols)
            T, lo, hi = layer.T.astype(float), layer.lo.astype(float), layer.hi.astype(float)
            H = sp.csr_matrix((np.ones(n), (np.arange(n), h)), shape=(n, m.n_cols))
            if kind == "mip":
                z = m.add_columns(lo, hi)
                form = sp.csr_matrix(form, shape=(n, m.n_cols))
                H = sp.csr_matrix(H, shape=(n, m.n_cols))
                Z = sp.csr_matrix((np.ones(n), (np.arange(n), z)), shape=(n, m.n_cols))
                m.add_rows(Z - form, n_neg, n_neg)
                m.add_rows(Z - sp.diags(T - lo) @ H, lo, np.inf)
                m.add_rows(Z - sp.diags(hi - T + 1) @ H, -np.inf, T - 1)
            else:
                m.add_rows(form - sp.diags(T - lo) @ H, lo - n_neg, np.inf)
                m.add_rows(form - sp.diags(hi - T + 1) @ H, -np.inf, T - 1 - n_neg)
        hidden.append(h)
        prev = h
    rows = len(query.T_out)
    if rows:
        form, n_neg = _form(query.S_out, prev, m.n_cols)
        T = query.T_out.astype(float)
        if query.mode == "all":
            m.add_rows(form, T - n_neg, np.inf)
        else:
            o = m.add_columns(0.0, np.ones(rows), integer=True)
            form = sp.csr_matrix(form, shape=(rows, m.n_cols))
            O = sp.csr_matrix((np.ones(rows), (np.arange(rows), o)), shape=(rows, m.n_cols))
            m.add_rows(form - sp.diags(T) @ O, -n_neg, np.inf)
            m.add_rows(sp.csr_matrix((np.ones(rows), (np.zeros(rows, dtype=int), o)), shape=(1, m.n_cols)), 1, np.inf)
    budget_row = None
    if query.budget is not None and query.n_flips:
        budget_row = int(m.add_rows(sp.csr_matrix(np.ones((1, query.n_flips))), -np.inf, query.budget)[0])
    m.c = np.zeros(m.n_cols)
    return Encoded(m, flips, hidden, budget_row)


def sizes(enc: Encoded) -> dict:
    """Return the model's size: columns, binaries, rows, nonzeros."""
    m = enc.model
    return {"columns": int(m.n_cols), "binaries": int(m.n_binaries), "rows": int(m.n_rows), "nonzeros": int(m.A.nnz)}


@dataclass
class Answer:
    """One solve: ``status`` "sat" (flips found) / "unsat" / "unknown", the flips (bool per free pixel), seconds."""

    status: str
    flips: np.ndarray | None
    seconds: float
    detail: str = ""
    objective: float | None = None


def solve(enc: Encoded, solver: str = "highs", time_limit: float | None = None, minimise: bool = False,
          fixed_flips: np.ndarray | None = None, threads: int = 1) -> Answer:
    """Return the `Answer` of the encoded query (the fewest flips with ``minimise``); ``fixed_flips`` fixes f."""
    from explain_mnist.solvers import make_solver
    start = time.perf_counter()
    model = enc.model
    if fixed_flips is not None:
        model = model.copy()
        model.lb[enc.flip_cols] = model.ub[enc.flip_cols] = np.asarray(fixed_flips, dtype=float)
    if minimise:
        model = model.copy() if model is enc.model else model
        model.c = np.zeros(model.n_cols)
        model.c[enc.flip_cols] = 1.0
    backend = make_solver(solver, model, time_limit=time_limit, threads=threads)
    result = backend.solve(stop_at_first=not minimise)
    seconds = time.perf_counter() - start
    if result.status == "infeasible":
        return Answer("unsat", None, seconds, result.message)
    if result.x is not None and (result.status in ("optimal", "solution_limit") or not minimise):
        flips = np.round(result.x[enc.flip_cols]).astype(bool)
        return Answer("sat", flips, seconds, result.message, result.objective)
    return Answer("unknown", None, seconds, f"{result.status}: {result.message}")
