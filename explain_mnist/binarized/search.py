"""Our own exact search for the k-flip question on a binarized network, and the beam attack that seeds it.

Formulation. Flipping input bit p moves the match count of first-layer neuron i by ``D[p, i] = +1`` (x0_p misses
``W[i, p]``) or -1, so a flip set F gives first-layer counts ``m0 + sum_{p in F} D[p]``, and the rest of the network
is the integer forward pass. Pixels are taken in a fixed order (most promising first: the best margin a single
flip reaches); a node of the search is a flip set whose pixels are taken in increasing position, with r flips left
among the pixels after its last one, so every set of at most k pixels is met once. At a node every child
(one more pixel) is evaluated exactly, all children in one batched forward pass; a child whose label changes is
the answer. The others are bounded by interval propagation: with r - 1 more flips among its later pixels, neuron
i's count lies in ``[m_i - min(r-1, #later pixels with D = -1), m_i + min(r-1, #later pixels with D = +1)]``, each
later layer's bits between those of its counts' extremes, and a class difference ``score_a - score_b`` (the
output constraints of `query`: ``a`` must beat ``b``, ties to the smaller index) at most its best case over those
bits. A child whose bound cannot reach the change is pruned; the last level (r = 1) is evaluated exactly in
batches. The search is exhaustive up to pruned subtrees, so "unsat" is a proof.

Beam attack: flip sets grown one pixel at a time, keeping the ``width`` sets with the best margin (every single
flip of every kept set evaluated in one batch); a width of 1 is the greedy attack.
"""
from __future__ import annotations

import time

import numpy as np

from explain_mnist.binarized.milp import Answer
from explain_mnist.binarized.network import BinarizedNet, matches

LEAF_BATCH = 8192           # rows of one batched forward pass over flip sets
BEAM_WIDTH = 30


class _Timeout(Exception):
    pass


class _Stopped(Exception):
    pass


class FlipProblem:
    """The k-flip question of one image in the arrays the search and the attack work on (no solver)."""

    def __init__(self, net: BinarizedNet, x0_bits: np.ndarray, label: int | None = None, target: int | None = None):
        x0 = np.asarray(x0_bits).astype(np.int32).reshape(-1)
        self.net, self.x0, self.target = net, x0, target
        self.label = int(net.predict_bits(x0[None])[0]) if label is None else int(label)
        W0 = np.asarray(net.weights[0], dtype=np.int32)
        small = np.int16 if len(x0) < 2 ** 14 else np.int32     # counts lie in [0, inputs]: int16 halves the traffic
        self.m0 = matches(x0[None], W0)[0].astype(small)
        self.D = np.where((W0 > 0).astype(np.int32) != x0[None, :], 1, -1).T.astype(small)   # (pixels, units)
        self.K0 = np.asarray(net.thresholds[0]).clip(-1, len(x0) + 1).astype(small)
        later = list(net.weights[1:])
        self.pos = [(np.asarray(W) > 0).astype(np.float32) for W in later]
        self.pm = [2 * p - 1 for p in self.pos]
        self.neg = [(1 - p).sum(axis=1) for p in self.pos]
        self.K = [np.asarray(K, dtype=np.float32) for K in net.thresholds[1:]]
        V = np.asarray(net.V)
        n = net.n_classes
        if target is None:
            pairs = [(j, self.label) for j in range(n) if j != self.label]
        else:
            pairs = [(target, j) for j in range(n) if j != target]
        self.any = target is None
        a, b = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        self.P = (V[a] > V[b]).T.astype(np.float32)          # (last units, rows): bit 1 adds 1 to score_a - score_b
        self.N = (V[a] < V[b]).T.astype(np.float32)          # bit 1 subtracts 1
        self.d = (a > b).astype(np.float32)                  # a beats b iff score_a - score_b >= d
        self.twice_PN = 2 * (self.P - self.N)                # (2 bits - 1) @ (P - N) - d = bits @ 2(P - N) - offset
        self.offset = (self.P - self.N).sum(axis=0) + self.d

    def last_bits(self, counts: np.ndarray) -> np.ndarray:
        """Return the last hidden layer's bits (float32 0/1) for first-layer counts ``(batch, units)``."""
        return self.bits_from((counts >= self.K0).astype(np.float32), 0)

    def bits_from(self, bits: np.ndarray, layer: int) -> np.ndarray:
        """Return the last hidden layer's bits given the bits of hidden layer ``layer`` (0 = first)."""
        for pm, neg, K in zip(self.pm[layer:], self.neg[layer:], self.K[layer:]):
            bits = ((bits @ pm.T + neg) >= K).astype(np.float32)
        return bits

    def margins(self, counts: np.ndarray) -> np.ndarray:
        """Return how close each row is to the change: >= 0 iff the label changes (the target wins)."""
        return self.margins_of_bits(self.last_bits(counts))

    def margins_of_bits(self, last: np.ndarray) -> np.ndarray:
        """Return the rows' closeness to the change (>= 0: changed) from the last hidden layer's bits."""
        return self.closest(last @ self.twice_PN - self.offset)

    def closest(self, slack: np.ndarray) -> np.ndarray:
        """Return per flip set its closeness to the change (>= 0: changed) from its per-row slacks
        ``bits @ twice_PN - offset``: any row for the untargeted question, every row for a target."""
        return slack.max(axis=1) if self.any else slack.min(axis=1)

    def reachable(self, counts: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
        """Return, per row, whether the change is possible with first-layer counts in [counts - down, counts + up]."""
        lo = (counts - down >= self.K0).astype(np.float32)
        hi = (counts + up >= self.K0).astype(np.float32)
        for pos, K in zip(self.pos, self.K):
            lo, hi = ((lo @ pos.T + (1 - hi) @ (1 - pos).T) >= K).astype(np.float32), \
                     ((hi @ pos.T + (1 - lo) @ (1 - pos).T) >= K).astype(np.float32)
        best = (2 * hi - 1) @ self.P + (1 - 2 * lo) @ self.N - self.d
        ok = best >= 0
        return ok.any(axis=1) if self.any else ok.all(axis=1)

    def flipped(self, pixels) -> np.ndarray:
        """Return the input bits with ``pixels`` flipped (uint8)."""
        x = self.x0.copy()
        x[list(pixels)] ^= 1
        return x.astype(np.uint8)


def beam_attack(problem: FlipProblem, max_flips: int, width: int = BEAM_WIDTH) -> np.ndarray | None:
    """Return input bits with at most ``max_flips`` flips whose label changes (the target wins), or None."""
    states = [(problem.m0, ())]
    seen = set()
    for _ in range(max_flips):
        counts = np.concatenate([m[None, :] + problem.D for m, _ in states])
        value = problem.margins(counts).astype(np.float64)
        n = problem.D.shape[0]
        for s, (_, flips) in enumerate(states):
            value[s * n + np.asarray(flips, dtype=np.int64)] = -np.inf      # a pixel is flipped once
        hit = np.flatnonzero(value >= 0)
        if len(hit):
            s, p = divmod(int(hit[0]), n)
            return problem.flipped(states[s][1] + (p,))
        candidates = []
        for row in np.argsort(-value, kind="stable"):
            s, p = divmod(int(row), n)
            key = tuple(sorted(states[s][1] + (p,)))
            if value[row] == -np.inf or key in seen:
                continue
            seen.add(key)
            candidates.append((counts[row], key))
            if len(candidates) == width:
                break
        if not candidates:
            return None
        states = candidates
    return None


class _Search:
    def __init__(self, problem: FlipProblem, deadline: float | None):
        self.p, self.deadline = problem, deadline
        single = problem.margins(problem.m0[None, :] + problem.D)
        self.order = np.argsort(-single, kind="stable")
        Do = problem.D[self.order]
        self.Do = Do
        n = len(self.order)
        # later_up[s, i] / later_down[s, i]: pixels at positions >= s that raise / lower neuron i's count
        self.later_up = np.zeros((n + 1, Do.shape[1]), dtype=np.int32)
        self.later_down = np.zeros((n + 1, Do.shape[1]), dtype=np.int32)
        self.later_up[:n] = np.cumsum((Do > 0)[::-1], axis=0)[::-1]
        self.later_down[:n] = np.cumsum((Do < 0)[::-1], axis=0)[::-1]
        self.nodes = 0
        self.evaluated = 0
        self.share = (0, 1)         # (this worker, workers): the root's children this search takes
        self.stop = None            # a threading.Event set when another worker has found a change

    def _tick(self):
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise _Timeout
        if self.stop is not None and self.stop.is_set():
            raise _Stopped

    def _first_change(self, counts: np.ndarray) -> int | None:
        self.evaluated += len(counts)
        hit = np.flatnonzero(self.p.margins(counts) >= 0)
        return int(hit[0]) if len(hit) else None

    def node(self, counts: np.ndarray, start: int, left: int, flips: tuple) -> tuple | None:
        """Return the positions of a changing flip set extending ``flips`` (at most ``left`` more), or None."""
        self.nodes += 1
        self._tick()
        n = len(self.order)
        if start >= n or left <= 0:
            return None
        positions = np.arange(start, n)
        children = counts[None, :] + self.Do[start:]
        hit = self._first_change(children)
        if hit is not None:
            return flips + (int(positions[hit]),)
        if left == 1:
            return None
        r = left - 1
        up = np.minimum(r, self.later_up[positions + 1])
        down = np.minimum(r, self.later_down[positions + 1])
        alive = np.flatnonzero(self.p.reachable(children, up, down))
        if not flips:
            alive = alive[self.share[0]::self.share[1]]
        if r == 1:
            return self._last_level(children[alive], positions[alive], flips)
        for i in alive:
            found = self.node(children[i], int(positions[i]) + 1, r, flips + (int(positions[i]),))
            if found is not None:
                return found
        return None

    def _last_level(self, counts: np.ndarray, positions: np.ndarray, flips: tuple) -> tuple | None:
        """Evaluate every one-pixel extension of the given children at once (in batches).

        One more flip moves a first-layer count by 1, so only the neurons at count K - 1 or K in some child can
        change its bit: the second layer's counts are the child's plus the change over those neurons alone. Where
        the second layer is the last hidden one, a batch evaluates only its neurons that some child of the batch
        can change (the others keep, per child, the bit that every one of its extensions gives them).
        """
        p, n = self.p, len(self.order)
        bits = (counts >= p.K0).astype(np.float32)
        live = np.flatnonzero(((counts == p.K0 - 1) | (counts == p.K0)).any(axis=0))
        incremental = bool(p.pm) and len(live) < counts.shape[1]
        if incremental:
            # second-layer bit: new live bits @ pm_live >= K - (count without the live neurons' part) = threshold
            pm_live = p.pm[0][:, live].T.copy()
            threshold = p.K[0] - (bits @ p.pm[0].T + p.neg[0]) + bits[:, live] @ pm_live
            need = p.K0[live] - counts[:, live]          # a live bit is 1 iff the flip's move reaches its need
            Do_live = self.Do[:, live]
            if len(p.pm) == 1:
                # the live bits a flip can set or clear (need 0 or 1), and the range of the live part's sum
                free = ((need == 0) | (need == 1)).astype(np.float32)
                settled = (bits[:, live] * (1 - free)) @ pm_live
                always = settled + free @ np.minimum(pm_live, 0) >= threshold
                changes = ~always & (settled + free @ np.maximum(pm_live, 0) >= threshold)
        sizes = n - 1 - positions
        done = 0
        while done < len(positions):
            self._tick()
            take = max(1, int(np.searchsorted(np.cumsum(sizes[done:]), LEAF_BATCH, side="right")))
            rows = np.repeat(np.arange(take), sizes[done:done + take])
            cols = np.concatenate([np.arange(q + 1, n) for q in positions[done:done + take]])
            batch = slice(done, done + take)
            self.nodes += take
            done += take
            if not len(rows):
                continue
            self.evaluated += len(rows)
            if incremental:
                live_bits = (Do_live[cols] >= need[batch][rows]).astype(np.float32)
                if len(p.pm) == 1:
                    moving = changes[batch].any(axis=0)
                    base = always[batch][:, ~moving].astype(np.float32) @ p.twice_PN[~moving] - p.offset
                    layer2 = (live_bits @ pm_live[:, moving] >= threshold[batch][:, moving][rows]).astype(np.float32)
                    slack = p.closest(layer2 @ p.twice_PN[moving] + base[rows])
                else:
                    layer2 = (live_bits @ pm_live >= threshold[batch][rows]).astype(np.float32)
                    slack = p.margins_of_bits(p.bits_from(layer2, 1))
            else:
                slack = p.margins(counts[batch][rows] + self.Do[cols])
            hit = np.flatnonzero(slack >= 0)
            if len(hit):
                return flips + (int(positions[batch][rows[hit[0]]]), int(cols[hit[0]]))
        return None


def exact_search(problem: FlipProblem, k: int, time_limit: float | None = None, threads: int = 1) -> Answer:
    """Return the `Answer` of "can at most ``k`` flips change the label?": flips (bool per pixel) or a proof.

    With ``threads`` > 1 the root's children are dealt out to that many threads (numpy releases the GIL in its
    array work); the first thread to find a change stops the others.
    """
    start = time.perf_counter()
    deadline = None if time_limit is None else start + time_limit
    search = _Search(problem, deadline)
    n = len(search.order)
    k = min(int(k), n)
    workers = [search]
    try:
        found = None
        if k > 0 and problem.reachable(problem.m0[None, :], np.minimum(k, search.later_up[0])[None, :],
                                       np.minimum(k, search.later_down[0])[None, :])[0]:
            if threads <= 1 or k == 1:
                found = search.node(problem.m0, 0, k, ())
            else:
                found, workers = _in_threads(search, k, threads)
    except _Timeout:
        return Answer("unknown", None, time.perf_counter() - start,
                      f"time limit after {sum(w.nodes for w in workers)} nodes")
    seconds = time.perf_counter() - start
    detail = f"{sum(w.nodes for w in workers)} nodes, {sum(w.evaluated for w in workers)} flip sets evaluated"
    if found is None:
        return Answer("unsat", None, seconds, detail)
    flips = np.zeros(n, dtype=bool)
    flips[search.order[list(found)]] = True
    return Answer("sat", flips, seconds, detail)


def _in_threads(search: _Search, k: int, threads: int) -> tuple:
    """Return (the first change found or None, the workers) of the search split over ``threads`` threads."""
    import copy
    import threading
    from concurrent.futures import ThreadPoolExecutor
    stop = threading.Event()
    workers = []
    for t in range(threads):
        w = copy.copy(search)
        w.share, w.stop = (t, threads), stop
        workers.append(w)

    def run(w):
        try:
            found = w.node(search.p.m0, 0, k, ())
        except _Stopped:
            return None
        except _Timeout:
            stop.set()
            raise
        if found is not None:
            stop.set()
        return found

    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(run, w) for w in workers]
        results = [f.result() for f in futures]       # a _Timeout in any thread propagates
    return next((r for r in results if r is not None), None), workers
