"""The CNF encoding of a binarized-network `Query`, through PySAT's cardinality encodings, and its SAT solving.

Formulation. Boolean variables: a flip ``f_p`` per free pixel, ``h`` per unstable neuron, ``o_j`` per output row
of the untargeted question. Each unstable neuron is ``h <=> (#true literals >= T)``, written as two half-reified
cardinality constraints: ``h -> atleast(lits, T)`` and ``not h -> atmost(lits, T - 1)``. A clausal encoding
(sequential counter, totalizer, sorting network, cardinality network, (k-)modulo totalizer) is made conditional by
adding the literal ``not h`` (resp. ``h``) to each of its clauses; a native constraint (Minicard, Gluecard) by
padding ``atmost(L, n)`` with copies of the condition (``atmost(not L + T copies of h, n)``).

The first layer under a budget k is encoded relative to the reference image so that its counters count only up to
about 2k. A sequential counter of our own over the flips gives unary outputs ``s_j <=> #flips >= j`` (j <= k + 1,
both directions; ``not s_{k+1}`` is the budget, and the assumption ``not s_{j+1}`` allows at most j flips:
`SatSolver.at_most`, for incremental search on one solver); its negated outputs ``not s_1 .. not s_k`` are k "token"
literals of which exactly ``G = k - #flips`` are true. With ``A = #flips in Mis_i``, ``B = #flips in Mat_i`` (so
``A + B + G = k``) the neuron ``A - B >= r`` is both ways an at-most constraint with a bound below 2k:

    h     -> #(f_p, f'_p for p in Mat_i; tokens) <= k - r        (2B + G <= k - r)
    not h -> #(f_p, f'_p for p in Mis_i; tokens) <= r + k - 1    (2A + G <= r + k - 1)

with ``f'_p`` a copy of ``f_p`` (each flip counts twice). Without a budget the first layer is the plain count over
``f`` / ``not f``.

Output: ``mode = "all"``: every row ``atleast(lits_j, T_j)``; ``"any"``: ``o_j -> atleast(lits_j, T_j)`` and the
clause ``(o_1 or ... or o_m)``.
"""
from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from explain_mnist.binarized.milp import Answer
from explain_mnist.binarized.query import Query
from explain_mnist.errors import UserError

CARDINALITY = ("seqcounter", "totalizer", "sortnetwrk", "cardnetwrk", "mtotalizer", "kmtotalizer", "native")
# the fastest measured (benchmarks/RESULTS.md, section binary: k = 1, 2 on 3 images): kmtotalizer 0.15 s median,
# seqcounter 0.20, cardnetwrk 0.35, mtotalizer 1.8; glucose4 0.15, minisat22 0.21, glucose42 0.25, Minicard and
# Gluecard (native) 1.0-1.1; CaDiCaL 3.0 and Kissat 4 slower at k = 2 and no better at k = 3 under a 2 s limit.
DEFAULT_CARDINALITY = "kmtotalizer"
DEFAULT_SAT_SOLVER = "glucose4"
NATIVE_SOLVERS = ("minicard", "gluecard3", "gluecard4")


@dataclass
class CNF:
    """Clauses, native at-most constraints, and the variables of the flips, hidden neurons, outputs and tokens."""

    cardinality: str
    top: int = 0
    clauses: list = field(default_factory=list)
    atmosts: list = field(default_factory=list)
    flips: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hidden: list = field(default_factory=list)
    tokens: list = field(default_factory=list)
    counts: list = field(default_factory=list)     # s_j <=> #flips >= j, j = 1..budget + 1
    budget: int | None = None

    def new(self, n: int = 1) -> np.ndarray:
        """Return ``n`` fresh variables."""
        out = np.arange(self.top + 1, self.top + 1 + n, dtype=np.int64)
        self.top += n
        return out

    def sizes(self) -> dict:
        """Return the formula's size: variables, clauses (and native cardinality constraints)."""
        out = {"variables": int(self.top), "clauses": int(len(self.clauses))}
        if self.atmosts:
            out["native_constraints"] = int(len(self.atmosts))
        return out


@dataclass(frozen=True)
class Capabilities:
    """What a PySAT solver's binding can do, found by trying it on a two-clause formula (`capabilities`)."""

    available: bool             # built into this PySAT
    interrupt: bool = True      # has solve_limited and interrupt: a time limit can stop it in this process
    assumptions: bool = True    # honours assumptions (else: they become unit clauses of a fresh solver)


@functools.lru_cache(maxsize=None)
def capabilities(name: str) -> Capabilities:
    """Return the `Capabilities` of the PySAT solver ``name``."""
    from pysat.solvers import Solver
    try:
        solver = Solver(name=name, bootstrap_with=[[1, 2], [1, -2]])
    except Exception:
        return Capabilities(False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # Kissat warns that it ignores assumptions
            assumptions = solver.solve(assumptions=[-1]) is False
        try:
            solver.solve_limited()
            limited = True
        except NotImplementedError:
            limited = False
        try:
            solver.interrupt()
            solver.clear_interrupt()
            interrupt = True
        except NotImplementedError:
            interrupt = False
        return Capabilities(True, interrupt and limited, assumptions)
    finally:
        solver.delete()


def sat_solver_names() -> list[str]:
    """Return the names of the SAT solvers PySAT lists."""
    from pysat.solvers import SolverNames
    return sorted(k for k in vars(SolverNames) if not k.startswith("_"))


def check_names(cardinality: str | None, sat_solver: str | None) -> tuple[str, str]:
    """Return (cardinality, SAT solver) with defaults filled in; UserError for an unknown or mismatched name."""
    known = sat_solver_names()
    if sat_solver is not None and sat_solver not in known:
        raise UserError(f"unknown SAT solver {sat_solver!r}; PySAT has: {', '.join(known)}")
    if sat_solver is not None and not capabilities(sat_solver).available:
        built = [name for name in known if capabilities(name).available]
        raise UserError(f"SAT solver {sat_solver!r} is not built into this PySAT; use one of: {', '.join(built)}")
    if cardinality is not None and cardinality not in CARDINALITY:
        raise UserError(f"unknown cardinality encoding {cardinality!r}; supported: {', '.join(CARDINALITY)}")
    if cardinality is None:
        cardinality = "native" if sat_solver in NATIVE_SOLVERS else DEFAULT_CARDINALITY
    if sat_solver is None:
        sat_solver = NATIVE_SOLVERS[0] if cardinality == "native" else DEFAULT_SAT_SOLVER
    if cardinality == "native" and sat_solver not in NATIVE_SOLVERS:
        raise UserError(f"--cardinality native needs a SAT solver with native cardinality constraints "
                        f"({', '.join(NATIVE_SOLVERS)}), not {sat_solver}")
    return cardinality, sat_solver


class _Builder:
    def __init__(self, cnf: CNF):
        from pysat.card import CardEnc, EncType
        from pysat.formula import IDPool
        self.cnf, self.CardEnc = cnf, CardEnc
        self.native = cnf.cardinality == "native"
        self.enc = None if self.native else getattr(EncType, cnf.cardinality)
        self.IDPool = IDPool

    def _copies(self, cond: int, n: int) -> list:
        copies = self.cnf.new(n).tolist()
        for c in copies:
            self.cnf.clauses += [[-c, cond], [c, -cond]]
        return copies

    def _card(self, kind: str, lits: list, bound: int) -> list:
        pool = self.IDPool(start_from=self.cnf.top + 1)
        fn = self.CardEnc.atleast if kind == "atleast" else self.CardEnc.atmost
        out = fn(lits=lits, bound=bound, vpool=pool, encoding=self.enc)
        self.cnf.top = max(self.cnf.top, pool.top)
        return out.clauses

    def _false(self, cond: int | None) -> None:
        if cond is None:
            v = int(self.cnf.new(1)[0])
            self.cnf.clauses += [[v], [-v]]
        else:
            self.cnf.clauses.append([-cond])

    def atleast_if(self, lits: list, bound: int, cond: int | None) -> None:
        """Add ``cond -> #true(lits) >= bound`` (unconditional when cond is None)."""
        n = len(lits)
        if bound <= 0:
            return
        if bound > n:
            return self._false(cond)
        if self.native:
            neg = [-v for v in lits]
            if cond is None:
                self.cnf.atmosts.append((neg, n - bound))
            else:
                self.cnf.atmosts.append((neg + self._copies(cond, bound), n))
            return
        extra = [] if cond is None else [-cond]
        self.cnf.clauses += [c + extra for c in self._card("atleast", lits, bound)]

    def atmost_if(self, lits: list, bound: int, cond: int | None) -> None:
        """Add ``cond -> #true(lits) <= bound``."""
        n = len(lits)
        if bound >= n:
            return
        if bound < 0:
            return self._false(cond)
        if self.native:
            if cond is None:
                self.cnf.atmosts.append((list(lits), bound))
            else:
                self.cnf.atmosts.append((list(lits) + self._copies(cond, n - bound), n))
            return
        extra = [] if cond is None else [-cond]
        self.cnf.clauses += [c + extra for c in self._card("atmost", lits, bound)]

    def equals(self, lits: list, bound: int) -> None:
        """Add ``#true(lits) == bound``."""
        self.atleast_if(lits, bound, None)
        self.atmost_if(lits, bound, None)


def _literals(S_row: np.ndarray, variables: np.ndarray) -> list:
    nz = np.flatnonzero(S_row)
    return np.where(S_row[nz] > 0, variables[nz], -variables[nz]).tolist()


def _counter(cnf: CNF, lits: list, b: int) -> list:
    """Return ``[s_1 .. s_b]`` with ``s_j <=> #true(lits) >= j`` (a sequential counter, clauses both ways)."""
    prev = []                                   # s_{i-1, 1..}
    for i, x in enumerate(lits):
        width = min(i + 1, b)
        cur = cnf.new(width).tolist()
        for j in range(width):                  # cur[j] <=> prev[j] or (x and prev[j-1]); prev[-1] = true
            below = prev[j - 1] if j >= 1 else None
            same = prev[j] if j < len(prev) else None
            if same is not None:
                cnf.clauses.append([-same, cur[j]])
            cnf.clauses.append([-x, cur[j]] + ([-below] if below is not None else []))
            cnf.clauses.append([-cur[j], x] + ([same] if same is not None else []))
            if below is not None:
                cnf.clauses.append([-cur[j], below] + ([same] if same is not None else []))
        prev = cur
    if len(prev) < b:                           # fewer inputs than b: the higher counts are false
        pad = cnf.new(b - len(prev)).tolist()
        cnf.clauses += [[-v] for v in pad]
        prev = prev + pad
    return prev


def encode(query: Query, cardinality: str = DEFAULT_CARDINALITY) -> CNF:
    """Return the `CNF` of a query (see the module docstring)."""
    cnf = CNF(cardinality)
    b = _Builder(cnf)
    cnf.flips = cnf.new(query.n_flips)
    k = query.budget if query.budget is not None and query.n_flips else None
    if k is not None:
        k = min(k, query.n_flips)
        cnf.budget = k
        counts = _counter(cnf, cnf.flips.tolist(), k + 1)
        cnf.counts = counts
        cnf.clauses.append([-counts[k]])                     # at most k flips
        cnf.tokens = [-v for v in counts[:k]]
        copies = cnf.new(query.n_flips)
        for f, g in zip(cnf.flips.tolist(), copies.tolist()):
            cnf.clauses += [[-f, g], [f, -g]]
    prev = cnf.flips
    for depth, layer in enumerate(query.layers):
        h = cnf.new(len(layer.unstable))
        for i, v in enumerate(h.tolist()):
            if depth == 0 and k is not None:
                mis = layer.mis[i]
                mat = np.setdiff1d(np.arange(query.n_flips), mis)
                r = int(layer.r[i])
                b.atmost_if(cnf.flips[mat].tolist() + copies[mat].tolist() + cnf.tokens, k - r, v)
                b.atmost_if(cnf.flips[mis].tolist() + copies[mis].tolist() + cnf.tokens, r + k - 1, -v)
                continue
            lits = _literals(layer.S[i], prev)
            bound = int(layer.T[i])
            b.atleast_if(lits, bound, v)
            b.atmost_if(lits, bound - 1, -v)
        cnf.hidden.append(h)
        prev = h
    if query.mode == "all":
        for S_row, T in zip(query.S_out, query.T_out.tolist()):
            b.atleast_if(_literals(S_row, prev), T, None)
    elif len(query.T_out):
        o = cnf.new(len(query.T_out))
        for v, S_row, T in zip(o.tolist(), query.S_out, query.T_out.tolist()):
            b.atleast_if(_literals(S_row, prev), T, v)
        cnf.clauses.append(o.tolist())
    return cnf


class SatSolver:
    """A PySAT solver loaded with a `CNF` once, asked repeatedly under assumptions.

    A solver whose binding cannot be interrupted (CaDiCaL, Kissat, Lingeling in PySAT) is, under a time limit, run
    in a child process that is stopped at the limit; one that ignores assumptions (Kissat) gets them as unit
    clauses of a fresh solver for that call.
    """

    def __init__(self, cnf: CNF, name: str = DEFAULT_SAT_SOLVER):
        from pysat.solvers import Solver
        self.cnf, self.name = cnf, name
        self.can = capabilities(name)
        if not self.can.available:
            check_names(None, name)                   # raises the UserError that names the available ones
        self.solver = Solver(name=name, bootstrap_with=cnf.clauses)
        if cnf.atmosts:
            if not self.solver.supports_atmost():
                self.solver.delete()
                raise UserError(f"SAT solver {name} has no native cardinality constraints; use one of "
                                f"{', '.join(NATIVE_SOLVERS)} or another --cardinality")
            for lits, bound in cnf.atmosts:
                self.solver.add_atmost(lits, bound)

    def solve(self, assumptions=(), time_limit: float | None = None) -> Answer:
        """Return the `Answer` under the assumptions (a list of literals), "unknown" after ``time_limit`` seconds."""
        start = time.perf_counter()
        assumptions = [int(a) for a in assumptions]
        if time_limit is None:
            sat, flips = _solve_once(self.solver, self.cnf, self.name, assumptions, self.can)
        elif self.can.interrupt and self.can.assumptions:
            sat, flips = self._solve_here(assumptions, time_limit)
        else:
            sat, flips = _solve_in_child(self.solver, self.cnf, self.name, assumptions, self.can, time_limit)
        seconds = time.perf_counter() - start
        if sat is None:
            return Answer("unknown", None, seconds, "time limit")
        return Answer("sat", flips, seconds) if sat else Answer("unsat", None, seconds)

    def _solve_here(self, assumptions: list, time_limit: float) -> tuple:
        """Return (satisfiable or None at the limit, flips or None), the solver interrupted by a timer."""
        timer = threading.Timer(time_limit, self.solver.interrupt)
        timer.start()
        try:
            with _ctrl_c_interrupts(self.solver):
                sat = self.solver.solve_limited(assumptions=assumptions, expect_interrupt=True)
        finally:
            timer.cancel()
        if sat is None:
            self.solver.clear_interrupt()
            return None, None
        return sat, _flips_of(self.solver, self.cnf) if sat else None

    def at_most(self, j: int) -> list:
        """Return the assumptions that allow at most ``j`` flips (within the encoded budget)."""
        k = self.cnf.budget
        if k is None:
            raise ValueError("the CNF has no budget")
        return [] if j >= k else [-self.cnf.counts[j]]

    def fixed(self, flips: np.ndarray) -> list:
        """Return the assumptions fixing every flip variable to ``flips``."""
        flips = np.asarray(flips, dtype=bool)
        return np.where(flips, self.cnf.flips, -self.cnf.flips).tolist()

    def close(self) -> None:
        self.solver.delete()


def _flips_of(solver, cnf: CNF) -> np.ndarray:
    model = np.asarray(solver.get_model(), dtype=np.int64)
    value = np.zeros(cnf.top + 1, dtype=bool)
    value[np.abs(model)] = model > 0
    return value[cnf.flips]


@contextlib.contextmanager
def _ctrl_c_interrupts(solver):
    """Let Ctrl-C interrupt a solve that expects an interrupt. PySAT then leaves SIGINT to Python, whose handler runs
    only once the solve returns; its C part also writes the signal to a wake-up fd, which a thread watches."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    done = threading.Event()

    def watch():
        while not done.is_set():
            if signal.SIGINT in os.read(read_fd, 64):
                solver.interrupt()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        done.set()
        os.write(write_fd, b"\0")                     # wakes the watcher
        watcher.join()
        os.close(read_fd)
        os.close(write_fd)


def _interruptible(call):
    """Return ``call()``; PySAT's own Ctrl-C handler (in the main thread) raises its error type: re-raised as the
    KeyboardInterrupt the scripts report."""
    try:
        return call()
    except Exception as error:
        if "keyboard interrupt" in str(error).lower():
            raise KeyboardInterrupt from None
        raise


def _solve_once(solver, cnf: CNF, name: str, assumptions: list, can: Capabilities) -> tuple:
    """Return (satisfiable, flips or None), solved to the end (no time limit)."""
    if assumptions and not can.assumptions:
        from pysat.solvers import Solver
        with Solver(name=name, bootstrap_with=cnf.clauses + [[a] for a in assumptions]) as fresh:
            for lits, bound in cnf.atmosts:
                fresh.add_atmost(lits, bound)
            sat = _interruptible(fresh.solve)
            return sat, _flips_of(fresh, cnf) if sat else None
    sat = _interruptible(lambda: solver.solve(assumptions=assumptions))
    return sat, _flips_of(solver, cnf) if sat else None


def _child(connection, solver, cnf: CNF, name: str, assumptions: list, can: Capabilities) -> None:
    # Ctrl-C is the parent's to handle (it stops this child): out of the terminal's process group, SIGINT ignored
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        connection.send(("answer", _solve_once(solver, cnf, name, assumptions, can)))
    except BaseException as error:                   # reported by the parent, not printed here
        connection.send(("error", f"{type(error).__name__}: {error}"))
    connection.close()


def _solve_in_child(solver, cnf: CNF, name: str, assumptions: list, can: Capabilities, time_limit: float) -> tuple:
    """Return `_solve_once` run in a forked child process, or (None, None) if it is not done in ``time_limit``."""
    if "fork" not in multiprocessing.get_all_start_methods():
        raise UserError(f"a time limit with SAT solver {name} needs a forked process, which this system does not "
                        f"have; use --sat-solver {DEFAULT_SAT_SOLVER} or no --time-limit")
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(send, solver, cnf, name, assumptions, can), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(max(time_limit, 0.0)):
            return None, None
        try:
            kind, value = receive.recv()
        except EOFError:                              # the child died without a word
            raise RuntimeError(f"SAT solver {name} stopped without an answer") from None
        if kind == "error":
            raise RuntimeError(f"SAT solver {name} failed in its child process: {value}")
        return value
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
