"""verify.py end to end, and `verification.verify_box` on the VNN-COMP 2021 mnistfc instances.

The script runs as a subprocess (each run that loads a Keras model costs ~5 s, so
every run happens once per module and its result is shared). Its answers are
checked independently: counterexamples against the box recomputed from the test set
and against Keras (or ONNX's reference runtime) itself, robust answers against
random points, corners and CROWN, mnistfc verdicts against the competition's
consensus in verdicts_vnncomp2021.csv.
"""
import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from explain_mnist.data import REPO_ROOT

MNISTFC = REPO_ROOT.parent / "shared" / "benchmarks" / "mnistfc"
NET_256X2 = "mnist-net_256x2.onnx"
CONSENSUS_VERDICT = {"holds": "robust", "violated": "not_robust"}
RESULT_TYPES = {"predicted": (int,), "verdict": (str,), "counterexample": (list, type(None)),
                "counterexample_class": (int, type(None)), "verified": (bool,), "method": (str,),
                "nodes": (int,), "seconds": (int, float)}
EPSILON = 0.05

needs_mnistfc = pytest.mark.skipif(not (MNISTFC / NET_256X2).is_file(),
                                   reason=f"mnistfc benchmark folder {MNISTFC} is absent")


# ----------------------------------------------------------------------------- helpers and shared runs

@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with the test's input files: images, models and VNN-LIB properties, good and bad."""
    from explain_mnist.data import load_test_set

    folder = tmp_path_factory.mktemp("verify")
    (folder / "keras_home").mkdir()
    np.save(folder / "index0.npy", load_test_set(verbose=False).x[0].reshape(28, 28))
    np.save(folder / "wrong_shape.npy", np.zeros((27, 28)))
    (folder / "corrupt.keras").write_bytes(b"this is not a zip archive")
    _write_onnx(folder / "relu.onnx", "Relu")
    _write_onnx(folder / "sigmoid_hidden.onnx", "Sigmoid")
    good = _robustness_vnnlib(np.full(784, 0.4), np.full(784, 0.6), label=3, n_classes=10)
    (folder / "good.vnnlib").write_text(good)
    (folder / "bad.vnnlib").write_text(good.rstrip().rstrip(")"))
    return folder


def _write_onnx(path, activation):
    """Write a 784-16-10 ONNX model ``MatMul -> activation -> MatMul``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("W1", (784, 16)), ("W2", (16, 10)))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node(activation, ["h"], ["a"]),
             helper.make_node("MatMul", ["a", "W2"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 784])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _robustness_vnnlib(lo, hi, label, n_classes):
    """Return the VNN-LIB text of "class ``label`` stays on top over the box [lo, hi]"."""
    lines = [f"(declare-const X_{i} Real)" for i in range(lo.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_classes)]
    lines += [f"(assert (<= X_{i} {h!r}))\n(assert (>= X_{i} {l!r}))" for i, (l, h) in enumerate(zip(lo, hi))]
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_classes) if j != label)
    return "\n".join(lines) + f"\n(assert (or {others}))\n"


@pytest.fixture(scope="module")
def run_verify_py(workdir):
    """Return a function running verify.py with arguments ({dir} and {mnistfc} expanded), each distinct run once."""
    env = dict(os.environ, KERAS_HOME=str(workdir / "keras_home"), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("MNIST_PATH", None)
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # as a user runs it: oneDNN on by default
    done = {}

    def run(*args):
        argv = tuple(a.format(dir=workdir, mnistfc=MNISTFC) for a in args)
        if argv not in done:
            done[argv] = subprocess.run([sys.executable, "verify.py", *argv], cwd=REPO_ROOT, env=env,
                                        capture_output=True, text=True, timeout=300)
        return done[argv]
    return run


def _finished(process, json_path):
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    return json.loads(json_path.read_text())


def _box(x0, epsilon):
    return np.maximum(x0 - epsilon, 0.0), np.minimum(x0 + epsilon, 1.0)


def _keras_classes(model_name, X):
    from explain_mnist.keras_io import keras_classes, load_keras_model
    return keras_classes(load_keras_model(REPO_ROOT / "models" / f"{model_name}.keras"), X)


@pytest.fixture(scope="module")
def not_robust_run(run_verify_py, workdir):
    process = run_verify_py("--model", "multiclass", "--index", "0", "--epsilon", str(EPSILON),
                            "--json", "{dir}/not_robust.json", "--figure", "{dir}/not_robust.png")
    return _finished(process, workdir / "not_robust.json")


@pytest.fixture(scope="module")
def robust_run(run_verify_py, workdir):
    process = run_verify_py("--model", "twoclass", "--index", "0", "--epsilon", str(EPSILON),
                            "--json", "{dir}/robust.json", "--no-figure")
    return _finished(process, workdir / "robust.json")


@pytest.fixture(scope="module")
def x0(test_set):
    return test_set.x[0].astype(np.float64)


# ----------------------------------------------------------------------------- results of verify.py

@pytest.mark.parametrize("run", ["not_robust_run", "robust_run"])
def test_json_has_the_result_keys_with_their_types(run, request):
    result = request.getfixturevalue(run)
    for key, types in RESULT_TYPES.items():
        assert key in result, key
        assert isinstance(result[key], types), key
        assert isinstance(result[key], bool) == (bool in types), key
    assert result["verdict"] in ("robust", "not_robust", "unknown")
    assert result["nodes"] >= 0 and result["seconds"] >= 0
    if result["verdict"] == "not_robust":
        assert len(result["counterexample"]) == 784 and all(isinstance(v, float) for v in result["counterexample"])
    else:
        assert result["counterexample"] is None and result["counterexample_class"] is None


def test_not_robust_counterexample_is_in_the_box_and_keras_changes_class(not_robust_run, multiclass_net, x0):
    result = not_robust_run
    assert result["verdict"] == "not_robust" and result["verified"] is True
    assert result["predicted"] == multiclass_net.predict(x0) == _keras_classes("multiclass", x0[None])[0]
    assert np.array_equal(result["image"], x0)
    x = np.array(result["counterexample"], dtype=np.float64)
    lo, hi = _box(x0, EPSILON)
    assert x.shape == (784,) and np.all(lo <= x) and np.all(x <= hi)
    keras_class = _keras_classes("multiclass", x[None])[0]
    assert keras_class == result["counterexample_class"] != result["predicted"]
    assert multiclass_net.predict(x) == keras_class


def test_figure_written_when_asked(not_robust_run, workdir):
    import matplotlib.image

    png = workdir / "not_robust.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(png).ndim == 3


def test_robust_answer_survives_sampling_corners_and_crown(robust_run, twoclass_net, x0):
    from explain_mnist.attack import margin_gradients, minimising_corner
    from explain_mnist.bounds import compute_bounds

    result = robust_run
    net, c = twoclass_net, robust_run["predicted"]
    assert result["verdict"] == "robust" and result["verified"] is True
    assert c == net.predict(x0) == _keras_classes("twoclass", x0[None])[0]
    lo, hi = _box(x0, EPSILON)
    C = net.spec_matrix(c)
    crown = compute_bounds(net, lo, hi, method="crown", C=C)
    crown_corners = minimising_corner(crown.spec_lower_A[0], lo, hi)
    gradient_corners = minimising_corner(margin_gradients(net, x0[None], C)[0], lo, hi)
    rng = np.random.default_rng(0)
    points = np.vstack([lo + rng.random((3000, 784)) * (hi - lo), rng.choice([0, 1], (1000, 784)) * (hi - lo) + lo,
                        crown_corners, gradient_corners, lo, hi])
    margins = net.margins(points, c)
    assert np.all(margins > 0)
    assert np.all(_keras_classes("twoclass", points) == c)
    lower_bound = float(result["lower_bound"])
    assert 0 < lower_bound <= margins.min() + 1e-9
    assert lower_bound >= crown.spec_lower.min() - 1e-9
    if result["method"] == "bounds":
        assert lower_bound == pytest.approx(crown.spec_lower.min(), rel=1e-9, abs=1e-12)


def test_image_file_gives_the_same_answer_as_the_index(run_verify_py, workdir, robust_run, x0):
    process = run_verify_py("--model", "twoclass", "--image", "{dir}/index0.npy", "--epsilon", str(EPSILON),
                            "--json", "{dir}/image.json", "--no-figure")
    result = _finished(process, workdir / "image.json")
    assert np.load(workdir / "index0.npy").shape == (28, 28)
    assert np.array_equal(result["image"], x0)
    assert result["index"] is None and robust_run["index"] == 0
    for key in ("verdict", "predicted", "verified", "method"):
        assert result[key] == robust_run[key], key
    assert result["lower_bound"] == pytest.approx(robust_run["lower_bound"], rel=1e-12)


# ----------------------------------------------------------------------------- bad input

BAD_INPUTS = {
    # name: (arguments, a piece of the error line naming what is wrong)
    "epsilon_zero": (["--epsilon", "0"], "--epsilon"),
    "epsilon_above_one": (["--epsilon", "1.5"], "--epsilon"),
    "epsilon_missing": ([], "--epsilon"),
    "index_out_of_range": (["--index", "10000", "--epsilon", "0.05"], "--index 10000"),
    "image_wrong_shape": (["--image", "{dir}/wrong_shape.npy", "--epsilon", "0.05"], "(27, 28)"),
    "model_missing": (["--model", "{dir}/missing.keras", "--epsilon", "0.05"], "missing.keras"),
    "keras_corrupt": (["--model", "{dir}/corrupt.keras", "--epsilon", "0.05"], "corrupt.keras"),
    "onnx_unsupported_operator": (["--model", "{dir}/sigmoid_hidden.onnx", "--epsilon", "0.05"], "Sigmoid"),
    "vnnlib_unparsable": (["--model", "{dir}/relu.onnx", "--vnnlib", "{dir}/bad.vnnlib"], "bad.vnnlib"),
    "vnnlib_with_epsilon": (["--model", "{dir}/relu.onnx", "--vnnlib", "{dir}/good.vnnlib", "--epsilon", "0.05"],
                            "--epsilon"),
    "time_limit_zero": (["--epsilon", "0.05", "--time-limit", "0"], "--time-limit"),
}
def _bad_input_run(run_verify_py, name):
    args, _ = BAD_INPUTS[name]
    return run_verify_py(*args, "--json", f"{{dir}}/{name}.json", "--no-figure")


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_ends_with_one_error_line_and_writes_nothing(name, run_verify_py, workdir):
    process = _bad_input_run(run_verify_py, name)
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:]
    assert BAD_INPUTS[name][1] in lines[-1]
    assert not (workdir / f"{name}.json").exists()


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_stderr_is_only_the_error_line(name, run_verify_py):
    lines = _bad_input_run(run_verify_py, name).stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines


# ----------------------------------------------------------------------------- mnistfc (VNN-COMP 2021)

def _consensus(prop_name):
    with open(MNISTFC / "verdicts_vnncomp2021.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["network"] == NET_256X2 and row["property"] == prop_name]
    assert len(rows) == 1
    return rows[0]["consensus"]


@pytest.fixture(scope="module")
def net_256x2():
    from explain_mnist.onnx_io import read_onnx
    return read_onnx(MNISTFC / NET_256X2)


def _property(name):
    from explain_mnist.vnnlib import read_vnnlib
    path = MNISTFC / name
    prop = read_vnnlib(path)
    stated = re.search(r"label:\s*(\d+)", path.read_text().splitlines()[0])
    assert prop.label == int(stated[1])
    return prop


def _reference_logits(X):
    from explain_mnist.onnx_io import reference_logits
    return reference_logits(MNISTFC / NET_256X2, X)


@needs_mnistfc
@pytest.mark.parametrize("prop_name", ["prop_2_0.03.vnnlib", "prop_7_0.03.vnnlib", "prop_1_0.05.vnnlib",
                                       "prop_0_0.03.vnnlib"])
def test_mnistfc_verdict_matches_the_competition_consensus(prop_name, net_256x2):
    from explain_mnist.verification import verify_box

    prop = _property(prop_name)
    result = verify_box(net_256x2, prop.lo, prop.hi, prop.label)
    assert result["verdict"] == CONSENSUS_VERDICT[_consensus(prop_name)]
    assert result["verified"] is True
    rng = np.random.default_rng(0)
    if result["verdict"] == "not_robust":
        x = result["counterexample"]
        assert np.all(prop.lo <= x) and np.all(x <= prop.hi)
        logits = _reference_logits(x[None])
        assert prop.unsafe(logits)[0]
        assert np.argmax(logits[0]) == result["counterexample_class"] != prop.label
    else:
        points = prop.lo + rng.random((2000, 784)) * (prop.hi - prop.lo)
        assert not prop.unsafe(net_256x2.forward(points)).any()
        assert result["lower_bound"] > 0


@needs_mnistfc
def test_vnnlib_from_the_command_line(run_verify_py, workdir):
    prop_name = "prop_7_0.03.vnnlib"
    process = run_verify_py("--model", f"{{mnistfc}}/{NET_256X2}", "--vnnlib", f"{{mnistfc}}/{prop_name}",
                            "--json", "{dir}/vnnlib.json", "--figure", "{dir}/vnnlib.png")
    result = _finished(process, workdir / "vnnlib.json")
    prop = _property(prop_name)
    assert result["verdict"] == CONSENSUS_VERDICT[_consensus(prop_name)]
    assert result["predicted"] == prop.label and result["epsilon"] is None
    assert np.array_equal(result["image"], (prop.lo + prop.hi) / 2)
    if result["verdict"] == "not_robust":
        x = np.array(result["counterexample"])
        assert np.all(prop.lo <= x) and np.all(x <= prop.hi)
        assert prop.unsafe(_reference_logits(x[None]))[0]
    assert (workdir / "vnnlib.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def time_limited(net_256x2):
    """verify_box with a 0.05 s limit on mnistfc 256x2 prop_1_0.03 (competition tools needed > 30 s)."""
    from explain_mnist.verification import verify_box

    prop = _property("prop_1_0.03.vnnlib")
    return net_256x2, prop, verify_box(net_256x2, prop.lo, prop.hi, prop.label, time_limit=0.05)


@needs_mnistfc
def test_time_limit_gives_unknown_with_a_lower_bound(time_limited):
    _, _, result = time_limited
    consensus = CONSENSUS_VERDICT[_consensus("prop_1_0.03.vnnlib")]
    if result["verdict"] != "unknown":
        assert result["verdict"] == consensus and result["verified"] is True
        return
    assert result["verified"] is False
    assert result["counterexample"] is None and result["counterexample_class"] is None
    assert "lower_bound" in result and not result["lower_bound"] > 0
    assert "limit" in result["message"]


@needs_mnistfc
def test_time_limit_lower_bound_is_at_least_the_crown_bound(time_limited):
    from explain_mnist.bounds import compute_bounds

    net, prop, result = time_limited
    if result["verdict"] != "unknown":
        pytest.skip("the verifier decided the instance within the limit")
    from explain_mnist.verifier import ROUNDING_RELATIVE, term_scale

    crown = compute_bounds(net, prop.lo, prop.hi, method="crown", C=net.spec_matrix(prop.label))
    # reported bounds are proofs less the documented rounding allowance (1e-12 of the term scale)
    scaled, s = net.power_of_two_scaled()
    allowance = ROUNDING_RELATIVE * term_scale(scaled, prop.lo, prop.hi, net.spec_matrix(prop.label)) / s
    assert np.isfinite(result["lower_bound"])
    assert crown.spec_lower.min() - allowance - 1e-9 <= result["lower_bound"] <= 0


def test_partial_vnnlib_property_is_refused(tmp_path):
    from explain_mnist.errors import UserError
    from explain_mnist.network import Affine, Network, ReLU
    from explain_mnist.verification import robustness_property
    from explain_mnist.vnnlib import parse_vnnlib

    rng = np.random.default_rng(0)
    net = Network([Affine(rng.normal(size=(4, 2)), np.zeros(4)), ReLU(), Affine(rng.normal(size=(3, 4)), np.zeros(3))])
    header = "".join(f"(declare-const X_{i} Real)\n" for i in range(2)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(3)) + \
        "(assert (>= X_0 0))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 1))\n"
    full = parse_vnnlib(header + "(assert (or (and (>= Y_1 Y_0)) (and (>= Y_2 Y_0))))\n", "full")
    lo, hi, c = robustness_property(full, net, "full")
    assert c == 0 and np.array_equal(lo, [0, 0]) and np.array_equal(hi, [1, 1])
    partial = parse_vnnlib(header + "(assert (>= Y_1 Y_0))\n", "partial")
    with pytest.raises(UserError, match="every other class"):
        robustness_property(partial, net, "partial")


def test_figure_path_that_is_a_folder_is_refused(tmp_path):
    done = subprocess.run([sys.executable, "verify.py", "--epsilon", "0.1", "--figure", str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "is a folder" in done.stderr and "Traceback" not in done.stderr
