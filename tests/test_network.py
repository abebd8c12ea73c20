"""The Network's folding, decision rules and specification matrices, against direct computation."""
import numpy as np
import pytest
import scipy.sparse as sp

from explain_mnist.network import Affine, Network, ReLU


def random_affine(rng, n_out, n_in, sparse=False):
    W = rng.normal(size=(n_out, n_in))
    if sparse:
        W[rng.uniform(size=W.shape) < 0.7] = 0
        W = sp.csr_matrix(W)
    return Affine(W, rng.normal(size=n_out))


def test_consecutive_affines_fold_and_keep_the_function():
    rng = np.random.default_rng(0)
    a, b, c, d = random_affine(rng, 6, 5, sparse=True), random_affine(rng, 4, 6), random_affine(rng, 3, 4), \
        random_affine(rng, 2, 3)
    net = Network([a, b, ReLU(), ReLU(), c, d])
    assert [type(layer).__name__ for layer in net.layers] == ["Affine", "ReLU", "Affine"]
    X = rng.normal(size=(50, 5))
    direct = d.apply(c.apply(np.maximum(b.apply(a.apply(X)), 0)))
    assert np.allclose(net.forward(X), direct)
    single = net.forward(X[0])
    assert single.shape == (2,) and np.allclose(single, direct[0])


def test_sparse_and_dense_weights_agree():
    rng = np.random.default_rng(1)
    sparse_first = random_affine(rng, 8, 10, sparse=True)
    dense_first = Affine(sparse_first.W.toarray(), sparse_first.b)
    last = random_affine(rng, 3, 8)
    X = rng.normal(size=(20, 10))
    assert np.allclose(Network([sparse_first, ReLU(), last]).forward(X), Network([dense_first, ReLU(), last]).forward(X))


def test_argmax_spec_matrix_counts_ties_as_change():
    rng = np.random.default_rng(2)
    net = Network([random_affine(rng, 4, 3), ReLU(), random_affine(rng, 5, 4)])
    X = rng.normal(size=(500, 3))
    logits = net.forward(X)
    for c in range(5):
        keeps = np.all(net.margins(X, c) > 0, axis=1)
        assert np.array_equal(keeps, net.predict(X) == c)
        assert net.spec_classes(c) == [j for j in range(5) if j != c]
    tie = np.array([[1.0, 3.0, 3.0, 0.0, 0.0]])
    net_id = Network([Affine(np.eye(5), np.zeros(5))])
    assert not np.all(net_id.margins(tie, 1) > 0) and not np.all(net_id.margins(tie, 2) > 0)
    assert logits.shape == (500, 5)


def test_sigmoid_rule_and_spec():
    net = Network([Affine(np.array([[1.0, -1.0]]), np.zeros(1))], decision="sigmoid")
    X = np.array([[2.0, 1.0], [1.0, 2.0], [1.0, 1.0]])
    assert list(net.predict(X)) == [1, 0, 0]
    keeps = {c: np.all(net.margins(X, c) > 0, axis=1) for c in (0, 1)}
    assert list(keeps[1]) == [True, False, False]
    # a logit of exactly 0 is class 0 by the rule, but it is a tie, so it does not count as keeping class 0
    assert list(keeps[0]) == [False, True, False]
    assert net.n_classes == 2


def test_invalid_networks_are_refused():
    with pytest.raises(ValueError, match="decision"):
        Network([Affine(np.eye(2), np.zeros(2))], decision="softmax")
    with pytest.raises(ValueError, match="one output"):
        Network([Affine(np.eye(2), np.zeros(2))], decision="sigmoid")
    with pytest.raises(TypeError, match="Affine and ReLU"):
        Network([Affine(np.eye(2), np.zeros(2)), "tanh"])
    with pytest.raises(ValueError, match="two or more output"):
        Network([Affine(np.ones((1, 2)), np.zeros(1))], decision="argmax")


@pytest.mark.parametrize("seed", range(20))
def test_power_of_two_scaling_keeps_classes_and_scales_logits_exactly(seed):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(2, 9)) for _ in range(int(rng.integers(2, 5)))] + [int(rng.choice([1, 3]))]
    layers = []
    for k in range(len(sizes) - 1):
        power = 2.0 ** int(rng.integers(-40, 21))
        layers += [Affine(rng.normal(size=(sizes[k + 1], sizes[k])) * power, rng.normal(size=sizes[k + 1]) * power),
                   ReLU()]
    net = Network(layers[:-1], decision="sigmoid" if sizes[-1] == 1 else "argmax")
    scaled, s = net.power_of_two_scaled()
    assert np.log2(s) == int(np.log2(s))
    for affine in scaled.affines:
        assert 1.0 <= np.abs(affine.W).max() < 2.0
    X = rng.uniform(-1, 1, size=(50, sizes[0]))
    assert np.array_equal(scaled.forward(X), net.forward(X) * s)   # exact: only powers of two were applied
    assert np.array_equal(scaled.predict(X), net.predict(X))


def test_non_finite_weights_are_refused():
    for bad in (np.nan, np.inf):
        W = np.eye(2)
        W[0, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            Affine(W, np.zeros(2))
        with pytest.raises(ValueError, match="NaN or infinite"):
            Affine(sp.csr_matrix(np.eye(2)), np.array([0.0, bad]))
