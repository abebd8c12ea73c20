"""The ONNX reader against ONNX's own reference runtime, on the mnistfc networks and on models written here."""
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from explain_mnist import onnx_io  # noqa: E402
from explain_mnist.errors import UserError  # noqa: E402
from explain_mnist.models import load_network, reference_classes  # noqa: E402
from explain_mnist.models import reference_logits as model_reference_logits  # noqa: E402
from explain_mnist.linear_maps import conv2d_matrix  # noqa: E402
from explain_mnist.onnx_io import read_onnx, reference_logits  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MNISTFC = REPO.parent / "shared" / "benchmarks" / "mnistfc"
MNISTFC_NETS = ["mnist-net_256x2.onnx", "mnist-net_256x4.onnx", "mnist-net_256x6.onnx"]
# test accuracies the benchmark's README reports for the three networks, on raw [0, 1] pixels
REPORTED_ACCURACY = {"mnist-net_256x2.onnx": 0.981, "mnist-net_256x4.onnx": 0.976, "mnist-net_256x6.onnx": 0.969}
TOLERANCE = 1e-5

needs_mnistfc = pytest.mark.skipif(not MNISTFC.is_dir(), reason="../shared/benchmarks/mnistfc is absent")


def assert_agrees(net, path, X):
    """The reader's forward pass matches ONNX's reference runtime: logits within TOLERANCE, same classes."""
    ours = net.forward(X)
    theirs = reference_logits(path, X)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() < TOLERANCE
    top2 = np.sort(theirs, axis=1)[:, -2:] if theirs.shape[1] > 1 else None
    clear = np.ones(len(X), bool) if top2 is None else (top2[:, 1] - top2[:, 0] > 2 * TOLERANCE)
    assert np.array_equal(net.classify_logits(ours)[clear], net.classify_logits(theirs)[clear])


# ----------------------------------------------------------------------------- the mnistfc networks

@needs_mnistfc
@pytest.mark.parametrize("name", MNISTFC_NETS)
def test_mnistfc_networks_match_reference_runtime(name, test_set):
    path = MNISTFC / name
    net = read_onnx(path)
    hidden = int(name.split("x")[1].split(".")[0])
    assert net.layer_sizes() == [784] + [256] * hidden + [10]
    assert net.decision == "argmax" and net.input_shape == (784, 1)
    rng = np.random.default_rng(0)
    assert_agrees(net, path, rng.random((100, 784)))
    assert_agrees(net, path, test_set.x[:2000])
    accuracy = np.mean(net.predict(test_set.x) == test_set.y)
    assert abs(accuracy - REPORTED_ACCURACY[name]) < 0.001


@needs_mnistfc
def test_mnistfc_through_models_module(test_set):
    path = MNISTFC / MNISTFC_NETS[0]
    net = load_network(str(path))
    X = test_set.x[:50]
    evaluator = ReferenceEvaluator(str(path))
    direct = np.stack([evaluator.run(None, {"0": x.reshape(1, 784, 1).astype(np.float32)})[0][0] for x in X])
    assert np.abs(model_reference_logits(net, X) - direct).max() < 1e-6
    assert np.abs(net.forward(X) - direct).max() < TOLERANCE
    assert np.array_equal(reference_classes(net, X), direct.argmax(1))


# ----------------------------------------------------------------------------- models written by the tests

def const(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def save_model(path, nodes, input_shape, initialisers, output="out", opset=13, input_name="x"):
    """Write a one-input, one-output float model and return its path."""
    graph = helper.make_graph(
        nodes, "test",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.asarray(v), name=k) for k, v in initialisers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.save(model, str(path))
    return path


def check_model(path, n_samples=100, seed=1):
    net = read_onnx(path)
    rng = np.random.default_rng(seed)
    assert_agrees(net, path, rng.random((n_samples, net.n_inputs)) * 2 - 0.5)
    return net


def test_gemm_alpha_beta_and_transposes(tmp_path):
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "c1"], ["h1"], name="g1", alpha=0.7, beta=1.3, transB=1),
        helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("Gemm", ["r1", "W2", "c2"], ["h2"], name="g2", alpha=-1.5, beta=0.5, transB=0),
        helper.make_node("Relu", ["h2"], ["r2"]),
        helper.make_node("Gemm", ["r2", "W3"], ["out"], name="g3", transB=1),
    ]
    inits = {"W1": const(rng, 8, 6), "c1": const(rng, 8), "W2": const(rng, 8, 5), "c2": const(rng, 1, 5),
             "W3": const(rng, 3, 5)}
    net = check_model(save_model(tmp_path / "gemm.onnx", nodes, ["N", 6], inits))
    assert net.layer_sizes() == [6, 8, 5, 3] and net.input_shape == (6,)


def test_gemm_with_transposed_activation(tmp_path):
    """Input of shape (6, 1) without a batch axis, used as A with transA=1."""
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Gemm", ["x", "W", "c"], ["h"], transA=1, transB=1, alpha=2.0),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["W2", "r"], ["out"])]
    inits = {"W": const(rng, 4, 6), "c": const(rng, 4), "W2": const(rng, 3, 1)}
    net = check_model(save_model(tmp_path / "transa.onnx", nodes, [6, 1], inits))
    assert net.input_shape == (6, 1) and net.layer_sizes() == [6, 4, 12]


def test_matmul_add_either_order(tmp_path):
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["m1"]),
             helper.make_node("Add", ["b1", "m1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "W2"], ["m2"]),
             helper.make_node("Add", ["m2", "b2"], ["out"])]
    inits = {"W1": const(rng, 7, 9), "b1": const(rng, 9), "W2": const(rng, 9, 4), "b2": const(rng, 4)}
    net = check_model(save_model(tmp_path / "matmul.onnx", nodes, [1, 7], inits))
    assert net.layer_sizes() == [7, 9, 4]


def test_sum_and_difference_of_activations_of_one_layer(tmp_path):
    rng = np.random.default_rng(15)
    nodes = [helper.make_node("Gemm", ["x", "W1", "c1"], ["h"], transB=1),
             helper.make_node("Add", ["h", "x"], ["residual"]),
             helper.make_node("Relu", ["residual"], ["r"]),
             helper.make_node("Gemm", ["r", "W2"], ["g"], transB=1),
             helper.make_node("Sub", ["r", "g"], ["out"])]
    inits = {"W1": const(rng, 5, 5), "c1": const(rng, 5), "W2": const(rng, 5, 5)}
    net = check_model(save_model(tmp_path / "residual.onnx", nodes, [1, 5], inits))
    assert net.layer_sizes() == [5, 5, 5]


def test_matmul_constant_on_the_left_and_transpose(tmp_path):
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("MatMul", ["L", "x"], ["m"]),
             helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Relu", ["t"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "c"], ["out"], transB=1)]
    inits = {"L": const(rng, 5, 4), "W": const(rng, 3, 15), "c": const(rng, 3)}
    check_model(save_model(tmp_path / "left.onnx", nodes, [1, 4, 3], inits))


def test_normalisation_folds_into_first_affine_map(tmp_path):
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Sub", ["x", "mean"], ["s"]),
             helper.make_node("Div", ["s", "std"], ["d"]),
             helper.make_node("Mul", ["gain", "d"], ["g"]),
             helper.make_node("Sub", ["shift", "g"], ["n"]),
             helper.make_node("Flatten", ["n"], ["f"]),
             helper.make_node("Gemm", ["f", "W1", "c1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "c2"], ["out"], transB=1)]
    inits = {"mean": np.array([0.1307, 0.5], np.float32).reshape(1, 2, 1, 1),
             "std": np.array([0.3081, 0.25], np.float32).reshape(1, 2, 1, 1),
             "gain": np.float32(1.5), "shift": const(rng, 5),
             "W1": const(rng, 6, 50, scale=0.2), "c1": const(rng, 6), "W2": const(rng, 10, 6), "c2": const(rng, 10)}
    net = check_model(save_model(tmp_path / "norm.onnx", nodes, [1, 2, 5, 5], inits))
    assert len(net.affines) == 2 and net.layer_sizes() == [50, 6, 10]


def test_reshape_with_constant_shapes_identity_dropout_constant(tmp_path):
    rng = np.random.default_rng(5)
    shape_node = helper.make_node("Constant", [], ["flat_shape"],
                                  value=numpy_helper.from_array(np.array([0, -1], np.int64)))
    nodes = [helper.make_node("Reshape", ["x", "image_shape"], ["img"]),
             helper.make_node("Identity", ["img"], ["img2"]),
             helper.make_node("Conv", ["img2", "K"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["r"]),
             helper.make_node("Dropout", ["r"], ["dr"]),
             shape_node,
             helper.make_node("Reshape", ["dr", "flat_shape"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "c"], ["out"], transB=1)]
    inits = {"image_shape": np.array([1, 1, 6, 6], np.int64), "K": const(rng, 2, 1, 3, 3),
             "W": const(rng, 4, 72, scale=0.2), "c": const(rng, 4)}
    net = check_model(save_model(tmp_path / "reshape.onnx", nodes, [1, 36], inits))
    assert net.layer_sizes() == [36, 72, 4]


def test_shape_driven_flatten_folds(tmp_path):
    """The old PyTorch export of x.view(x.size(0), -1): Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Conv", ["x", "K", "kb"], ["conv"], strides=[2, 2]),
             helper.make_node("Relu", ["conv"], ["r"]),
             helper.make_node("Shape", ["r"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
             helper.make_node("Reshape", ["r", "target"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "c"], ["out"], transB=1)]
    inits = {"K": const(rng, 3, 1, 3, 3), "kb": const(rng, 3), "zero": np.array(0, np.int64),
             "axes": np.array([0], np.int64), "minus_one": np.array([-1], np.int64),
             "W": const(rng, 10, 27, scale=0.3), "c": const(rng, 10)}
    check_model(save_model(tmp_path / "shape.onnx", nodes, ["N", 1, 7, 7], inits))


@pytest.mark.parametrize("conv_attrs", [
    dict(strides=[2, 1], pads=[1, 0, 2, 1]),
    dict(auto_pad="SAME_UPPER", strides=[2, 1]),  # odd total padding along the width
    dict(auto_pad="SAME_LOWER", strides=[3, 1]),
    dict(auto_pad="VALID", dilations=[2, 1]),
    dict(group=3, pads=[1, 1, 1, 1], dilations=[1, 2]),
])
def test_conv_layers(tmp_path, conv_attrs):
    rng = np.random.default_rng(7)
    group = conv_attrs.get("group", 1)
    nodes = [helper.make_node("Conv", ["x", "K1", "b1"], ["c1"], name="conv1", **conv_attrs),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "K2"], ["c2"], kernel_shape=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("MatMul", ["f", "W"], ["out"])]
    K1 = const(rng, 6, 3 // group, 3, 2)
    probe = ReferenceEvaluator(helper.make_model(helper.make_graph(
        nodes[:4], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 8])],
        [helper.make_tensor_value_info("r2", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(K1, "K1"), numpy_helper.from_array(const(rng, 6), "b1"),
                     numpy_helper.from_array(const(rng, 4, 6, 2, 2), "K2")]),
        opset_imports=[helper.make_opsetid("", 13)]))
    n_flat = probe.run(None, {"x": np.zeros((1, 3, 9, 8), np.float32)})[0].size
    inits = {"K1": K1, "b1": const(rng, 6), "K2": const(rng, 4, 6, 2, 2), "W": const(rng, n_flat, 10, scale=0.3)}
    net = check_model(save_model(tmp_path / "conv.onnx", nodes, [1, 3, 9, 8], inits))
    assert net.layer_sizes()[0] == 3 * 9 * 8 and net.layer_sizes()[2] == n_flat


def test_conv_matrix_against_direct_sum():
    """The sparse matrix of a small strided, padded convolution equals the convolution sum written out."""
    rng = np.random.default_rng(8)
    weight = rng.standard_normal((2, 3, 3, 2))
    x = rng.standard_normal((3, 5, 6))
    pads, strides = (1, 0, 1, 1), (2, 1)
    M, (m, Ho, Wo) = conv2d_matrix(weight, x.shape, strides, pads)
    padded = np.pad(x, ((0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    direct = np.zeros((m, Ho, Wo))
    for co in range(m):
        for oh in range(Ho):
            for ow in range(Wo):
                window = padded[:, oh * strides[0]:oh * strides[0] + 3, ow * strides[1]:ow * strides[1] + 2]
                direct[co, oh, ow] = np.sum(window * weight[co])
    assert np.allclose(M @ x.reshape(-1), direct.reshape(-1))


def test_relu_chains_and_leading_relu(tmp_path):
    rng = np.random.default_rng(9)
    nodes = [helper.make_node("Relu", ["x"], ["r0"]),
             helper.make_node("Gemm", ["r0", "W1", "c1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r1"]),
             helper.make_node("Relu", ["r1"], ["r2"]),
             helper.make_node("Gemm", ["r2", "W2", "c2"], ["out"], transB=1)]
    inits = {"W1": const(rng, 5, 4), "c1": const(rng, 5), "W2": const(rng, 3, 5), "c2": const(rng, 3)}
    net = check_model(save_model(tmp_path / "relus.onnx", nodes, [1, 4], inits))
    assert net.layer_sizes() == [4, 4, 5, 3]


@pytest.mark.parametrize("final, n_out, decision", [("Softmax", 4, "argmax"), ("LogSoftmax", 4, "argmax"),
                                                    ("Sigmoid", 1, "sigmoid"), (None, 1, "sigmoid")])
def test_final_activation_sets_decision(tmp_path, final, n_out, decision):
    rng = np.random.default_rng(10)
    last = "out" if final is None else "logits"
    nodes = [helper.make_node("Gemm", ["x", "W1", "c1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "c2"], [last], transB=1)]
    if final:
        nodes.append(helper.make_node(final, ["logits"], ["out"]))
    inits = {"W1": const(rng, 6, 5), "c1": const(rng, 6), "W2": const(rng, n_out, 6), "c2": const(rng, n_out)}
    path = save_model(tmp_path / "final.onnx", nodes, [1, 5], inits)
    net = check_model(path)
    assert net.decision == decision
    X = np.random.default_rng(11).random((40, 5))
    probabilities = ReferenceEvaluator(str(path)).run(None, {"x": X.astype(np.float32)})[0]
    expected = (probabilities[:, 0] > (0.5 if final == "Sigmoid" else 0.0) if n_out == 1
                else probabilities.argmax(1))
    assert np.array_equal(net.predict(X), expected.astype(np.int64))


def test_batch_size_fixed_to_one_evaluates_row_by_row(tmp_path):
    rng = np.random.default_rng(12)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "W", "c"], ["out"], transB=1)]
    inits = {"shape": np.array([1, 12], np.int64), "W": const(rng, 3, 12), "c": const(rng, 3)}
    path = save_model(tmp_path / "fixed.onnx", nodes, [1, 3, 4], inits)
    X = rng.random((7, 12))
    evaluator = ReferenceEvaluator(str(path))
    direct = np.stack([evaluator.run(None, {"x": x.reshape(1, 3, 4).astype(np.float32)})[0][0] for x in X])
    assert np.abs(reference_logits(path, X) - direct).max() < 1e-6
    check_model(path)


# ----------------------------------------------------------------------------- errors

def sigmoid_in_the_middle():
    return [helper.make_node("Gemm", ["x", "W1"], ["h"], transB=1),
            helper.make_node("Sigmoid", ["h"], ["s"], name="squash"),
            helper.make_node("Gemm", ["s", "W2"], ["out"], transB=1)]


def max_pool():
    return [helper.make_node("Reshape", ["x", "img"], ["i"]),
            helper.make_node("MaxPool", ["i"], ["p"], name="pool", kernel_shape=[2, 2]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "W3"], ["out"], transB=1)]


def lstm():
    return [helper.make_node("Reshape", ["x", "seq"], ["s"]),
            helper.make_node("LSTM", ["s", "Wl", "Rl"], ["y"], name="memory", hidden_size=2),
            helper.make_node("Flatten", ["y"], ["f"]),
            helper.make_node("Gemm", ["f", "W4"], ["out"], transB=1)]


@pytest.mark.parametrize("build, node_name, op_type", [(sigmoid_in_the_middle, "squash", "Sigmoid"),
                                                       (max_pool, "pool", "MaxPool"),
                                                       (lstm, "memory", "LSTM")])
def test_unsupported_operator_names_the_node(tmp_path, build, node_name, op_type):
    rng = np.random.default_rng(13)
    inits = {"W1": const(rng, 5, 16), "W2": const(rng, 3, 5), "img": np.array([1, 1, 4, 4], np.int64),
             "W3": const(rng, 3, 4), "seq": np.array([4, 1, 4], np.int64), "Wl": const(rng, 1, 8, 4),
             "Rl": const(rng, 1, 8, 2), "W4": const(rng, 3, 8)}
    path = save_model(tmp_path / "bad.onnx", build(), [1, 16], inits)
    with pytest.raises(UserError, match=rf"ONNX node {node_name} \({op_type}\) is not supported.*supported: .*Gemm"):
        read_onnx(path)


def test_non_affine_uses_are_refused(tmp_path):
    rng = np.random.default_rng(14)
    square = [helper.make_node("Mul", ["x", "x"], ["out"], name="square")]
    with pytest.raises(UserError, match=r"square \(Mul\).*two activations"):
        read_onnx(save_model(tmp_path / "square.onnx", square, [1, 4], {}))
    skip = [helper.make_node("Gemm", ["x", "W"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("Add", ["r", "x"], ["out"], name="skip")]
    with pytest.raises(UserError, match=r"skip \(Add\).*skip connection"):
        read_onnx(save_model(tmp_path / "skip.onnx", skip, [1, 4], {"W": const(rng, 4, 4)}))


@pytest.mark.parametrize("content", [b"", b"this is not a protobuf \xff\xfe\x00\x01" * 20, None])
def test_corrupt_or_missing_file(tmp_path, content):
    path = tmp_path / "broken.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match="broken.onnx"):
        read_onnx(path)
