"""The VNN-LIB reader on the mnistfc properties and on small files written here."""
import csv
import re
from pathlib import Path

import numpy as np
import pytest

from explain_mnist.errors import UserError
from explain_mnist.vnnlib import parse_sexpressions, parse_vnnlib, read_vnnlib

REPO = Path(__file__).resolve().parent.parent
MNISTFC = REPO.parent / "shared" / "benchmarks" / "mnistfc"
PROPERTY_FILES = sorted(MNISTFC.glob("prop_*.vnnlib")) if MNISTFC.is_dir() else []
BOUND_SLACK = 1e-6  # the files hold float32 arithmetic printed as float64 (eps 0.03 is 0.029999999329447746)

needs_mnistfc = pytest.mark.skipif(not PROPERTY_FILES, reason="../shared/benchmarks/mnistfc is absent")


@pytest.fixture(scope="module")
def net_256x2():
    from explain_mnist.onnx_io import read_onnx
    return read_onnx(MNISTFC / "mnist-net_256x2.onnx")


def epsilon_of(path: Path) -> float:
    return float(re.fullmatch(r"prop_\d+_([\d.]+)\.vnnlib", path.name)[1])


def label_in_comment(path: Path) -> int:
    """The README: 'the label is in the first comment line' ('; Mnist property with label: 8.')."""
    return int(re.search(r"label:\s*(\d+)", path.read_text().splitlines()[0])[1])


def centre_image(lo: np.ndarray, hi: np.ndarray, eps: float) -> np.ndarray:
    """Invert lo = max(0, x0 - eps), hi = min(1, x0 + eps) (no pixel is clipped on both sides when eps < 0.5)."""
    return np.where(lo > 0, lo + eps, hi - eps)


@needs_mnistfc
@pytest.mark.parametrize("path", PROPERTY_FILES, ids=lambda p: p.name)
def test_mnistfc_property_is_an_eps_box_around_a_test_image(path, net_256x2, test_set):
    prop = read_vnnlib(path)
    eps = epsilon_of(path)
    assert prop.n_inputs == 784 and prop.n_outputs == 10
    assert prop.label == label_in_comment(path)
    assert np.all(prop.lo >= 0) and np.all(prop.hi <= 1)
    assert np.all(prop.hi - prop.lo <= 2 * eps + BOUND_SLACK)
    unclipped = (prop.lo > 0) & (prop.hi < 1)
    assert np.allclose((prop.hi - prop.lo)[unclipped], 2 * eps, atol=BOUND_SLACK)
    x0 = centre_image(prop.lo, prop.hi, eps)
    assert np.allclose(x0[unclipped], ((prop.lo + prop.hi) / 2)[unclipped], atol=BOUND_SLACK)
    assert np.allclose(prop.lo, np.clip(x0 - eps, 0, 1), atol=BOUND_SLACK)
    assert np.allclose(prop.hi, np.clip(x0 + eps, 0, 1), atol=BOUND_SLACK)
    # the centre is a real MNIST test image whose true label is the protected class
    distance = np.abs(test_set.x - x0).max(axis=1)
    index = int(distance.argmin())
    assert distance[index] < 1e-6
    assert test_set.y[index] == prop.label
    assert net_256x2.predict(x0) == prop.label
    # unsafe set = "some other logit is at least the label's": the complement of spec_matrix(label) > 0
    assert len(prop.disjuncts) == 9
    rows = np.vstack([A for A, _ in prop.disjuncts])
    assert np.array_equal(rows, net_256x2.spec_matrix(prop.label))
    assert all(np.array_equal(b, [0.0]) for _, b in prop.disjuncts)
    assert not prop.unsafe(net_256x2.forward(x0))[0]


@needs_mnistfc
def test_instances_list_names_readable_properties():
    with open(MNISTFC / "mnistfc_instances.csv") as handle:
        instances = list(csv.reader(handle))
    assert len(instances) == 90
    for network, prop_name, _timeout in instances:
        assert (MNISTFC / network).is_file()
        assert (MNISTFC / prop_name) in PROPERTY_FILES


@needs_mnistfc
def test_holds_verdicts_survive_random_points_in_the_box(net_256x2):
    """Where the competition proved 'holds' on 256x2, no random point (or box corner) of the parsed box is unsafe."""
    with open(MNISTFC / "verdicts_vnncomp2021.csv") as handle:
        rows = [r for r in csv.DictReader(handle)
                if r["network"] == "mnist-net_256x2.onnx" and r["consensus"] == "holds"]
    assert rows
    rng = np.random.default_rng(0)
    for row in rows:
        prop = read_vnnlib(MNISTFC / row["property"])
        corners = rng.integers(0, 2, size=(100, prop.n_inputs)).astype(bool)
        X = np.vstack([prop.lo + rng.random((200, prop.n_inputs)) * (prop.hi - prop.lo),
                       np.where(corners, prop.hi, prop.lo)])
        assert not prop.unsafe(net_256x2.forward(X)).any()


# ----------------------------------------------------------------------------- small files written here

TINY = """; a tiny property
(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const X_2 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(declare-const Y_2 Real)

(assert (<= X_0 0.75))
(assert (>= X_0 -0.5))
(assert (<= X_0 1.0))          ; looser upper bound: the tighter 0.75 wins
(assert (<= 0.25 X_1))         ; number first
(assert (>= 0.5 X_1))
(assert (and (>= X_2 (- 2)) (<= X_2 1e-1)))

(assert (or
    (and (>= Y_0 Y_2) (<= Y_1 3.0))
    (and (<= Y_2 Y_1))
))
"""


def test_tiny_file_box_and_unsafe_set(tmp_path):
    path = tmp_path / "tiny.vnnlib"
    path.write_text(TINY)
    prop = read_vnnlib(path)
    assert np.array_equal(prop.lo, [-0.5, 0.25, -2.0])
    assert np.array_equal(prop.hi, [0.75, 0.5, 0.1])
    assert prop.label is None and prop.n_outputs == 3 and len(prop.disjuncts) == 2
    Y = np.random.default_rng(0).integers(-3, 5, size=(500, 3)).astype(float)  # integers: many ties
    expected = ((Y[:, 0] >= Y[:, 2]) & (Y[:, 1] <= 3.0)) | (Y[:, 2] <= Y[:, 1])
    assert np.array_equal(prop.unsafe(Y), expected)


def test_separate_output_asserts_are_conjoined():
    text = TINY + "(assert (or (>= Y_0 1) (<= Y_2 -1)))\n"
    prop = parse_vnnlib(text)
    assert len(prop.disjuncts) == 4
    Y = np.random.default_rng(1).integers(-3, 5, size=(500, 3)).astype(float)
    first = ((Y[:, 0] >= Y[:, 2]) & (Y[:, 1] <= 3.0)) | (Y[:, 2] <= Y[:, 1])
    expected = first & ((Y[:, 0] >= 1) | (Y[:, 2] <= -1))
    assert np.array_equal(prop.unsafe(Y), expected)


@pytest.mark.parametrize("output_assert, label", [
    ("(assert (>= Y_0 Y_1))", 1),
    ("(assert (<= Y_1 Y_0))", 1),
    ("(assert (or (and (>= Y_0 Y_2)) (and (>= Y_1 Y_2))))", 2),
    ("(assert (or (>= Y_0 Y_2) (>= Y_0 Y_1)))", None),   # two protected classes
    ("(assert (>= Y_0 0.5))", None),
])
def test_protected_label(output_assert, label):
    header = "".join(f"(declare-const {v} Real)\n" for v in ("X_0", "Y_0", "Y_1", "Y_2"))
    prop = parse_vnnlib(header + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n" + output_assert)
    assert prop.label == label


def test_sexpression_parser_nests_and_skips_comments():
    tree = parse_sexpressions("(a (b c) ; (ignored\n d)\n(e)")
    as_text = [[t.text if not isinstance(t, list) else [u.text for u in t] for t in top] for top in tree]
    assert as_text == [["a", ["b", "c"], "d"], ["e"]]


BASE = "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
GOOD_INPUT = "(assert (<= X_0 1))\n(assert (>= X_0 0))\n"
GOOD_OUTPUT = "(assert (>= Y_0 Y_1))\n"


@pytest.mark.parametrize("text, expected", [
    (BASE + GOOD_INPUT + "(assert (>= Y_0 Y_1)", "never closed"),
    (BASE + GOOD_INPUT + GOOD_OUTPUT + ")", "unexpected"),
    (BASE + GOOD_INPUT + GOOD_OUTPUT + "(check-sat)", r"line 7: expected \(declare-const"),
    (BASE + "(declare-const Z_0 Real)" + GOOD_INPUT + GOOD_OUTPUT, "X_i or Y_j"),
    (BASE + "(assert (<= X_0 1))\n(assert (>= X_5 0))\n" + GOOD_OUTPUT, "X_5 is not declared"),
    (BASE + "(assert (<= X_0 1))\n" + GOOD_OUTPUT, "lower bound on every input"),
    (BASE + "(assert (or (<= X_0 1) (>= X_0 0)))\n" + GOOD_OUTPUT, "disjunctions over inputs"),
    (BASE + GOOD_INPUT + "(assert (>= Y_0 X_0))\n", "inputs X_i only or about outputs"),
    (BASE + GOOD_INPUT + "(assert (>= Y_0 abc))\n", "got 'abc'"),
    (BASE + GOOD_INPUT + "(assert (< Y_0 Y_1))\n", r"\(<= term term\)"),
    (BASE + GOOD_INPUT, "no output constraint"),
    (BASE + "(assert (<= X_0 0))\n(assert (>= X_0 1))\n" + GOOD_OUTPUT, "box is empty"),
])
def test_malformed_files_name_the_file_and_the_expectation(tmp_path, text, expected):
    path = tmp_path / "broken.vnnlib"
    path.write_text(text)
    with pytest.raises(UserError, match="broken.vnnlib") as caught:
        read_vnnlib(path)
    assert re.search(expected, str(caught.value))


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_vnnlib(tmp_path / "absent.vnnlib")
