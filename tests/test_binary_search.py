"""binarized/search: the exact search over flip sets and the beam attack, against brute force and a SAT solver.

- on small random networks (one, two and three hidden layers), every k and target: the search's answer is brute
  force's, its counterexamples change the label with at most k flips; also with tiny batches for the last level;
- the beam attack's images are counterexamples of the forward pass within the flip budget;
- on the shipped network: single flips against the forward pass of all 784 images, two flips against the CNF;
- a time limit gives "unknown", never an answer.
"""
import numpy as np
import pytest

from explain_mnist.binarized import cnf, network, search, verify
from explain_mnist.binarized.network import random_net
from explain_mnist.binarized.query import compile_query
from explain_mnist.data import REPO_ROOT
from tests.test_binary_encodings import brute_force

SIZES = ([10, 6, 3], [10, 8, 6, 4], [11, 7, 6, 5, 3], [12, 9, 4])


@pytest.fixture(scope="module")
def small_nets():
    rng = np.random.default_rng(41)
    nets = []
    for sizes in SIZES:
        for _ in range(3):
            net = random_net(sizes, rng, spread=0.15)
            nets.append((net, rng.integers(0, 2, sizes[0]).astype(np.uint8)))
    return nets


def check_answer(net, x0, k, target, answer, truth):
    c = int(net.predict_bits(x0[None])[0])
    assert answer.status == ("unsat" if truth is None else "sat"), (k, target, answer, truth)
    if answer.status == "sat":
        x = x0 ^ answer.flips.astype(np.uint8)
        label = int(net.predict_bits(x[None])[0])
        assert (label == target) if target is not None else (label != c)
        assert answer.flips.sum() <= k


@pytest.mark.parametrize("batch", [search.LEAF_BATCH, 5])
def test_exact_search_is_brute_force(small_nets, monkeypatch, batch):
    monkeypatch.setattr(search, "LEAF_BATCH", batch)
    decided = {"sat": 0, "unsat": 0}
    for net, x0 in small_nets:
        c = int(net.predict_bits(x0[None])[0])
        for target in [None] + [t for t in range(net.n_classes) if t != c]:
            problem = search.FlipProblem(net, x0, c, target)
            for k in range(0, 6):
                answer = search.exact_search(problem, k)
                check_answer(net, x0, k, target, answer, brute_force(net, x0, k, target))
                decided[answer.status] += 1
    assert decided["sat"] > 20 and decided["unsat"] > 20          # both answers exercised


def test_threads_give_the_same_answers(small_nets):
    for net, x0 in small_nets[::2]:
        c = int(net.predict_bits(x0[None])[0])
        for target in (None, (c + 1) % net.n_classes):
            problem = search.FlipProblem(net, x0, c, target)
            for k in (2, 3, 4):
                answer = search.exact_search(problem, k, threads=2)
                check_answer(net, x0, k, target, answer, brute_force(net, x0, k, target))
    problem = search.FlipProblem(*small_nets[4])
    assert search.exact_search(problem, 5, time_limit=0.0, threads=2).status == "unknown"


def test_beam_attack_images_are_counterexamples(small_nets):
    found = 0
    for net, x0 in small_nets:
        c = int(net.predict_bits(x0[None])[0])
        for width in (1, 4):
            for target in (None, (c + 1) % net.n_classes):
                problem = search.FlipProblem(net, x0, c, target)
                x = search.beam_attack(problem, 6, width)
                if x is None:
                    continue
                found += 1
                label = int(net.predict_bits(x[None])[0])
                assert (label == target) if target is not None else (label != c)
                assert 1 <= (x != x0).sum() <= 6
                assert brute_force(net, x0, int((x != x0).sum()), target) is not None
    assert found > 10


def test_time_limit_is_unknown(small_nets):
    net, x0 = small_nets[4]
    problem = search.FlipProblem(net, x0)
    answer = search.exact_search(problem, 5, time_limit=0.0)
    assert answer.status == "unknown" and answer.flips is None


def test_shipped_network_single_flips_and_pairs_against_sat(test_set):
    binary_net = network.load(REPO_ROOT / "models" / "binary_net.npz")
    tried = 0
    for index in (0, 3, 6, 11, 17):      # two flips: test images whose CNF glucose decides in under a second
        x0 = (test_set.x[index] > 0.5).astype(np.uint8)
        c = int(binary_net.predict_bits(x0[None])[0])
        problem = search.FlipProblem(binary_net, x0, c)
        X = np.repeat(x0[None], 784, axis=0) ^ np.eye(784, dtype=np.uint8)
        one = bool((binary_net.predict_bits(X) != c).any())
        answer = search.exact_search(problem, 1)
        assert (answer.status == "sat") == one
        if one:
            continue
        query = compile_query(binary_net, x0, 2)
        if query.trivially is not None:
            continue
        sat = cnf.SatSolver(cnf.encode(query, "seqcounter"), "glucose4")
        try:
            truth = sat.solve([], 30)
        finally:
            sat.close()
        if truth.status == "unknown":
            continue
        tried += 1
        answer = search.exact_search(problem, 2)
        assert answer.status == truth.status
        r = verify.robustness(binary_net, x0, 2, None, verify.Settings(("search",)))
        assert r.answers["search"] == ("counterexample" if truth.status == "sat" else "robust") and r.verified
    assert tried >= 3
