"""The ONNX boundary: read a feed-forward ONNX model into a `Network`, and evaluate it with ONNX's reference runtime.

This is the only module of the package that imports ``onnx`` (lazily, inside the
functions that need it).

How a graph becomes a `Network`. The nodes are visited in their (topological)
order while every tensor is tracked as one of two kinds of value:

- a constant (numpy array): initialisers, ``Constant`` nodes, and the result of
  any node whose inputs are all constants (folded by running that node alone in
  ``onnx.reference``; so ``Shape -> Gather -> Concat -> Reshape`` chains fold);
- a `_Linear` value: an affine function ``A x + a`` of the output ``x`` of the
  last ReLU (or of the network input), with the tensor's full ONNX shape. The
  batch axis is kept in that shape with size 1, and the values are flattened in
  row-major order of the shape, so Flatten and Reshape only change the shape and
  the network's input order is the model's own flattened input order (an MNIST
  input of shape (1, 1, 28, 28), (1, 784) or (1, 784, 1) is 784 row-major pixels).

Each operator with a non-constant input maps to a converter in `CONVERTERS`
that returns the affine map it applies: Gemm, MatMul, Conv, Transpose and
elementwise Add / Sub / Mul / Div by a constant (input normalisation) compose
into the pending map; a Relu closes it: the pending map and a `ReLU` are emitted
and a new pending map starts at the identity. Consecutive affine maps are
composed by `Network` itself. Convolutions (channel-first NCHW, any strides,
pads, dilations and groups) become sparse matrices built by index arithmetic.

A final Softmax or LogSoftmax (over all outputs) becomes the ``argmax`` decision
on the logits, a final Sigmoid on a single output the ``sigmoid`` decision;
without one, a single output means ``sigmoid`` (class 1 iff logit > 0) and
several mean ``argmax``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from explain_mnist.errors import UserError
from explain_mnist.linear_maps import conv2d_matrix
from explain_mnist.network import Affine, Network, ReLU

FINAL_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")


def _onnx():
    try:
        import onnx
        import onnx.numpy_helper
        import onnx.reference
    except ImportError:
        raise UserError("the onnx package is not installed; run `pip install -r requirements.txt`") from None
    return onnx


@dataclass
class _Linear:
    """A tensor equal to ``affine(x)`` (``None``: the identity) of the ReLU output or input named ``base``."""

    base: str
    affine: Affine | None
    shape: tuple


@dataclass
class _Context:
    """The node being converted, the base of the current layer and the layers emitted so far."""

    node: object
    base: str
    layers: list

    def fail(self, reason: str) -> UserError:
        return UserError(f"ONNX node {_node_name(self.node)} ({self.node.op_type}): {reason}")


def _node_name(node) -> str:
    return node.name or (node.output[0] if node.output else "?")


def _attributes(node) -> dict:
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# ----------------------------------------------------------------------------- affine building blocks

def _gather(index: np.ndarray, n_in: int) -> Affine:
    """Return the 0/1 map whose output k is input ``index[k]`` (transpose, broadcast)."""
    index = np.asarray(index).reshape(-1)
    rows = np.arange(index.size)
    W = sp.csr_matrix((np.ones(index.size), (rows, index)), shape=(index.size, n_in))
    return Affine(W, np.zeros(index.size))


def _compose(value: _Linear, affine: Affine, shape: tuple) -> _Linear:
    combined = affine if value.affine is None else value.affine.then(affine)
    return _Linear(value.base, combined, tuple(shape))


def _broadcast_to(value: _Linear, shape: tuple) -> _Linear:
    shape = tuple(shape)
    if shape == value.shape:
        return value
    n = int(np.prod(value.shape))
    index = np.broadcast_to(np.arange(n).reshape(value.shape), shape)
    return _compose(value, _gather(index, n), shape)


def _transpose(value: _Linear, perm) -> _Linear:
    perm = tuple(perm) if perm is not None else tuple(reversed(range(len(value.shape))))
    if perm == tuple(range(len(value.shape))):
        return value
    n = int(np.prod(value.shape))
    index = np.arange(n).reshape(value.shape).transpose(perm)
    return _compose(value, _gather(index, n), index.shape)


def _f64(constant) -> np.ndarray:
    return np.asarray(constant, dtype=np.float64)


def _matmul_right(ctx: _Context, value: _Linear, weight: np.ndarray) -> _Linear:
    """Return ``value @ weight`` for a constant matrix or vector ``weight``."""
    shape = value.shape
    if weight.ndim not in (1, 2) or not shape or shape[-1] != weight.shape[0]:
        raise ctx.fail(f"cannot multiply a {shape} activation by a constant of shape {weight.shape}")
    right = weight.reshape(weight.shape[0], -1)
    out_shape = shape[:-1] + (weight.shape[1],) if weight.ndim == 2 else shape[:-1]
    prefix = int(np.prod(shape[:-1]))
    M = right.T if prefix == 1 else sp.kron(sp.eye(prefix), sp.csr_matrix(right.T), format="csr")
    return _compose(value, Affine(M, np.zeros(M.shape[0])), out_shape)


def _matmul_left(ctx: _Context, weight: np.ndarray, value: _Linear) -> _Linear:
    """Return ``weight @ value`` for a constant matrix ``weight`` and an activation of rank >= 2."""
    shape = value.shape
    if weight.ndim != 2 or len(shape) < 2 or shape[-2] != weight.shape[1]:
        raise ctx.fail(f"cannot multiply a constant of shape {weight.shape} by a {shape} activation")
    prefix, cols = int(np.prod(shape[:-2])), shape[-1]
    M = sp.kron(sp.eye(prefix), sp.kron(sp.csr_matrix(weight), sp.eye(cols)), format="csr")
    return _compose(value, Affine(M, np.zeros(M.shape[0])), shape[:-2] + (weight.shape[0], cols))


def _add_constant(ctx: _Context, value: _Linear, constant: np.ndarray, sign: float = 1.0) -> _Linear:
    """Return ``sign * value + constant`` with ONNX broadcasting."""
    try:
        shape = np.broadcast_shapes(value.shape, constant.shape)
    except ValueError:
        raise ctx.fail(f"cannot broadcast shapes {value.shape} and {constant.shape}") from None
    value = _broadcast_to(value, shape)
    n = int(np.prod(shape))
    c = np.broadcast_to(constant, shape).reshape(-1)
    return _compose(value, Affine(sign * sp.eye(n, format="csr"), c), shape)


def _multiply_constant(ctx: _Context, value: _Linear, constant: np.ndarray) -> _Linear:
    """Return ``value * constant`` elementwise with ONNX broadcasting."""
    try:
        shape = np.broadcast_shapes(value.shape, constant.shape)
    except ValueError:
        raise ctx.fail(f"cannot broadcast shapes {value.shape} and {constant.shape}") from None
    value = _broadcast_to(value, shape)
    c = np.broadcast_to(constant, shape).reshape(-1)
    return _compose(value, Affine(sp.diags(c).tocsr(), np.zeros(c.size)), shape)


def _conv_pads(ctx: _Context, attrs: dict, in_hw: tuple, kernel: tuple, strides: tuple, dilations: tuple) -> tuple:
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad == "NOTSET":
        pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
        if len(pads) != 4:
            raise ctx.fail(f"pads {pads} are not 2-D (top, left, bottom, right)")
        return pads
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.fail(f"auto_pad {auto_pad!r} is not supported")
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    return tuple(begin + end)


# ----------------------------------------------------------------------------- converters

def _relu(ctx, node, x):
    if not isinstance(x, _Linear):
        raise ctx.fail("expected an activation input")
    if x.base != ctx.base:
        raise ctx.fail("its input does not come from the previous layer: only chains of layers are supported")
    n = int(np.prod(x.shape))
    if x.affine is not None:
        ctx.layers.append(x.affine)
    elif not ctx.layers:
        ctx.layers.append(Affine(sp.eye(n, format="csr"), np.zeros(n)))
    ctx.layers.append(ReLU())
    ctx.base = node.output[0]
    return _Linear(node.output[0], None, x.shape)


def _gemm(ctx, node, a, b, c=None):
    attrs = _attributes(node)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if isinstance(a, _Linear) == isinstance(b, _Linear):
        raise ctx.fail("both operands are activations: only products with a constant are affine")
    activation, constant = (a, b) if isinstance(a, _Linear) else (b, a)
    if len(activation.shape) != 2 or constant.ndim != 2:
        raise ctx.fail(f"needs 2-D operands, got shapes {activation.shape} and {constant.shape}")
    if isinstance(a, _Linear):
        a = _transpose(a, (1, 0)) if attrs.get("transA", 0) else a
        out = _matmul_right(ctx, a, alpha * _f64(b.T if attrs.get("transB", 0) else b))
    else:
        b = _transpose(b, (1, 0)) if attrs.get("transB", 0) else b
        out = _matmul_left(ctx, alpha * _f64(a.T if attrs.get("transA", 0) else a), b)
    if c is None:
        return out
    try:
        bias = np.broadcast_to(_f64(c), out.shape)
    except ValueError:
        raise ctx.fail(f"C of shape {c.shape} does not broadcast to the output shape {out.shape}") from None
    return _add_constant(ctx, out, beta * bias)


def _matmul(ctx, node, a, b):
    if isinstance(a, _Linear) and not isinstance(b, _Linear):
        return _matmul_right(ctx, a, _f64(b))
    if isinstance(b, _Linear) and not isinstance(a, _Linear):
        return _matmul_left(ctx, _f64(a), b)
    raise ctx.fail("both operands are activations: only products with a constant are affine")


def _add(ctx, node, a, b):
    if isinstance(a, _Linear) and isinstance(b, _Linear):
        return _sum_of_activations(ctx, a, b, 1.0)
    x, c = (a, b) if isinstance(a, _Linear) else (b, a)
    return _add_constant(ctx, x, _f64(c))


def _sub(ctx, node, a, b):
    if isinstance(a, _Linear) and isinstance(b, _Linear):
        return _sum_of_activations(ctx, a, b, -1.0)
    if isinstance(a, _Linear):
        return _add_constant(ctx, a, -_f64(b))
    return _add_constant(ctx, b, _f64(a), sign=-1.0)


def _sum_of_activations(ctx, a: _Linear, b: _Linear, sign: float) -> _Linear:
    if a.base != b.base:
        raise ctx.fail("adds activations of different layers (a skip connection): not supported")
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ctx.fail(f"cannot broadcast shapes {a.shape} and {b.shape}") from None
    parts = []
    for value in (_broadcast_to(a, shape), _broadcast_to(b, shape)):
        if value.affine is None:
            n = int(np.prod(shape))
            parts.append(Affine(sp.eye(n, format="csr"), np.zeros(n)))
        else:
            parts.append(value.affine)
    W = parts[0].W + sign * parts[1].W
    W = sp.csr_matrix(W) if sp.issparse(W) else np.asarray(W)
    return _Linear(a.base, Affine(W, parts[0].b + sign * parts[1].b), shape)


def _mul(ctx, node, a, b):
    if isinstance(a, _Linear) and isinstance(b, _Linear):
        raise ctx.fail("multiplies two activations: not affine")
    x, c = (a, b) if isinstance(a, _Linear) else (b, a)
    return _multiply_constant(ctx, x, _f64(c))


def _div(ctx, node, a, b):
    if isinstance(b, _Linear):
        raise ctx.fail("divides by an activation: not affine")
    if np.any(b == 0):
        raise ctx.fail("divides by a constant with zero entries")
    return _multiply_constant(ctx, a, 1.0 / _f64(b))


def _conv(ctx, node, x, weight, bias=None):
    if not isinstance(x, _Linear) or isinstance(weight, _Linear) or isinstance(bias, _Linear):
        raise ctx.fail("needs an activation input and constant weights and bias")
    if len(x.shape) != 4 or x.shape[0] != 1 or weight.ndim != 4:
        raise ctx.fail(f"only 2-D convolutions of an (N, C, H, W) input are supported, got input shape {x.shape}")
    attrs = _attributes(node)
    group = int(attrs.get("group", 1))
    kernel = tuple(weight.shape[2:])
    if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != kernel:
        raise ctx.fail(f"kernel_shape {attrs['kernel_shape']} differs from the weights' {kernel}")
    if x.shape[1] != weight.shape[1] * group or weight.shape[0] % group:
        raise ctx.fail(f"weights of shape {weight.shape} do not fit {x.shape[1]} input channels in {group} groups")
    strides = tuple(attrs.get("strides", (1, 1)))
    dilations = tuple(attrs.get("dilations", (1, 1)))
    pads = _conv_pads(ctx, attrs, x.shape[2:], kernel, strides, dilations)
    M, out_shape = conv2d_matrix(_f64(weight), x.shape[1:], strides, pads, dilations, group)
    b = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    return _compose(x, Affine(M, np.repeat(b, out_shape[1] * out_shape[2])), (1,) + out_shape)


def _flatten(ctx, node, x):
    axis = int(_attributes(node).get("axis", 1))
    axis = axis + len(x.shape) if axis < 0 else axis
    return _Linear(x.base, x.affine, (int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))))


def _reshape(ctx, node, x, target):
    if isinstance(target, _Linear):
        raise ctx.fail("the target shape must be a constant")
    allow_zero = int(_attributes(node).get("allowzero", 0))
    target = [int(d) for d in np.asarray(target).reshape(-1)]
    if not allow_zero:
        if any(d == 0 and k >= len(x.shape) for k, d in enumerate(target)):
            raise ctx.fail(f"target shape {target} copies a dimension that {x.shape} does not have")
        target = [x.shape[k] if d == 0 else d for k, d in enumerate(target)]
    if target.count(-1) > 1:
        raise ctx.fail(f"target shape {target} has more than one -1")
    n = int(np.prod(x.shape))
    if -1 in target:
        known = int(np.prod([d for d in target if d != -1]))
        target = [n // known if d == -1 else d for d in target]
    if int(np.prod(target)) != n:
        raise ctx.fail(f"cannot reshape {x.shape} to {tuple(target)}")
    return _Linear(x.base, x.affine, tuple(target))


def _transpose_node(ctx, node, x):
    return _transpose(x, _attributes(node).get("perm"))


def _identity(ctx, node, x, *ignored):
    return x


def _shape(ctx, node, x):
    attrs = _attributes(node)
    return np.array(x.shape[attrs.get("start", 0):attrs.get("end", None)], dtype=np.int64)


def _final_activation(ctx, node, x):
    raise UserError(f"ONNX node {_node_name(node)} ({node.op_type}) is not supported except as the last node; "
                    f"supported: {supported_ops()}")


CONVERTERS = {
    "Add": _add,
    "Constant": None,  # folded like every node whose inputs are all constants
    "Conv": _conv,
    "Div": _div,
    "Dropout": _identity,
    "Flatten": _flatten,
    "Gemm": _gemm,
    "Identity": _identity,
    "MatMul": _matmul,
    "Mul": _mul,
    "Relu": _relu,
    "Reshape": _reshape,
    "Shape": _shape,
    "Sub": _sub,
    "Transpose": _transpose_node,
    **{name: _final_activation for name in FINAL_ACTIVATIONS},
}


def supported_ops() -> str:
    """Return the sentence listing the supported operators, as error messages show it."""
    return (f"{', '.join(sorted(CONVERTERS))} (Softmax, LogSoftmax and Sigmoid only as the last node), "
            f"and any operator whose inputs are all constants")


# ----------------------------------------------------------------------------- reading models

def load_onnx_model(path: str | Path):
    """Return the ONNX model at ``path``, or raise a UserError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file {path} not found; check the path")
    onnx = _onnx()
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"model file {path} cannot be read as ONNX ({first}); re-export it with onnx.save") from None
    if not model.graph.node or not model.graph.output:
        raise UserError(f"model file {path} holds no ONNX graph (no nodes or no output); is it an ONNX model?")
    return model


def _opsets(model) -> dict:
    return {entry.domain or "": entry.version for entry in model.opset_import} or {"": 13}


def _graph_input(model, path) -> tuple[str, list]:
    """Return the name and shape (None for a symbolic size) of the graph's single non-constant input."""
    initialised = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initialised]
    if len(inputs) != 1:
        raise UserError(f"ONNX model {path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                        f"only models with one input are supported")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    if not shape or any(d is None for d in shape[1:]):
        raise UserError(f"ONNX model {path}: input {inputs[0].name!r} has shape {shape}; only the first "
                        f"(batch) size may be unknown")
    return inputs[0].name, shape


def _has_batch_axis(shape: list) -> bool:
    """Return whether the first axis of an input shape is a batch axis (unknown size or 1, and more axes follow)."""
    return len(shape) >= 2 and shape[0] in (None, 1)


def _logits_tensor(model, path) -> tuple[str, object]:
    """Return the name of the logits tensor and the final activation node that follows it (None if none)."""
    outputs = model.graph.output
    if len(outputs) != 1:
        raise UserError(f"ONNX model {path} has {len(outputs)} outputs; only models with one output are supported")
    name = outputs[0].name
    producers = [node for node in model.graph.node if name in node.output]
    if producers and producers[0].op_type in FINAL_ACTIVATIONS and producers[0].domain in ("", "ai.onnx"):
        return producers[0].input[0], producers[0]
    return name, None


def _fold(node, inputs: list, opsets: dict) -> list:
    """Return the outputs of a node whose inputs are all constants, computed by ONNX's reference runtime."""
    onnx = _onnx()
    feeds = {name: value for name, value in zip(node.input, inputs) if name}
    try:
        return onnx.reference.ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"ONNX node {_node_name(node)} ({node.op_type}) on constant inputs cannot be "
                        f"evaluated ({first})") from None


def _check_final_activation(path, node, shape: tuple, opset: int) -> None:
    """Raise a UserError unless the final activation keeps the decision of the logits (see the module docstring)."""
    n = int(np.prod(shape))
    if node.op_type == "Sigmoid" and n != 1:
        raise UserError(f"ONNX model {path}: a final Sigmoid over {n} outputs is not supported "
                        f"(only a single sigmoid output)")
    if node.op_type == "Sigmoid":
        return
    if n == 1:
        raise UserError(f"ONNX model {path}: a final {node.op_type} over a single output is constant")
    axis = int(_attributes(node).get("axis", -1 if opset >= 13 else 1))
    axis = axis + len(shape) if axis < 0 else axis
    group = shape[axis] if opset >= 13 else int(np.prod(shape[axis:]))
    if group != n:
        raise UserError(f"ONNX model {path}: the final {node.op_type} normalises groups of {group} of the "
                        f"{n} outputs; only one normalisation over all outputs is supported")


def network_from_onnx_model(model, name: str = "onnx", path: str | Path = "<model>") -> Network:
    """Return the `Network` equal to an ONNX model built from the supported operators."""
    onnx = _onnx()
    graph = model.graph
    opsets = _opsets(model)
    input_name, input_shape = _graph_input(model, path)
    logits_name, final_node = _logits_tensor(model, path)
    shape = tuple(1 if d is None else d for d in input_shape)
    values: dict = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    values[input_name] = _Linear(input_name, None, shape)
    ctx = _Context(node=None, base=input_name, layers=[])
    for node in graph.node:
        ctx.node = node
        if final_node is not None and list(node.output) == list(final_node.output):
            continue
        missing = [n for n in node.input if n and n not in values]
        if missing:
            raise ctx.fail(f"input {missing[0]!r} is not produced by any earlier node")
        inputs = [values[n] if n else None for n in node.input]
        if node.domain in ("", "ai.onnx") and not any(isinstance(v, _Linear) for v in inputs):
            outputs = _fold(node, inputs, opsets)
        else:
            converter = CONVERTERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if converter is None:
                raise UserError(f"ONNX node {_node_name(node)} ({node.op_type}) is not supported; "
                                f"supported: {supported_ops()}")
            while inputs and inputs[-1] is None:
                inputs.pop()
            outputs = [converter(ctx, node, *inputs)]
        for out_name, value in zip(node.output, outputs):
            if out_name:
                values[out_name] = np.asarray(value) if not isinstance(value, _Linear) else value
    logits = values.get(logits_name)
    if not isinstance(logits, _Linear):
        raise UserError(f"ONNX model {path}: the output {logits_name!r} does not depend on the input")
    if logits.base != ctx.base:
        raise UserError(f"ONNX model {path}: the output does not come from the last layer; "
                        f"only chains of layers are supported")
    if final_node is not None:
        _check_final_activation(path, final_node, logits.shape, opsets.get("", opsets.get("ai.onnx", 13)))
    n_out = int(np.prod(logits.shape))
    layers = ctx.layers + [logits.affine if logits.affine is not None
                           else Affine(sp.eye(n_out, format="csr"), np.zeros(n_out))]
    rule = "sigmoid" if n_out == 1 else "argmax"
    network_shape = tuple(input_shape[1:]) if _has_batch_axis(input_shape) else tuple(input_shape)
    return Network(layers, decision=rule, input_shape=network_shape, name=name,
                   meta={"format": "onnx",
                         "final_activation": final_node.op_type.lower() if final_node is not None else "linear",
                         "onnx_input": input_name, "onnx_input_shape": input_shape,
                         "logits_tensor": logits_name, "opsets": opsets})


def read_onnx(path: str | Path) -> Network:
    """Return the `Network` of the ONNX model file at ``path``."""
    path = Path(path)
    net = network_from_onnx_model(load_onnx_model(path), name=path.stem, path=path)
    net.meta["path"] = str(path)
    return net


# ----------------------------------------------------------------------------- reference evaluation

_EVALUATORS: dict = {}


def _evaluator(path: Path):
    key = str(path.resolve())
    if key not in _EVALUATORS:
        onnx = _onnx()
        model = load_onnx_model(path)
        input_name, input_shape = _graph_input(model, path)
        logits_name, _ = _logits_tensor(model, path)
        elem_type = [i for i in model.graph.input if i.name == input_name][0].type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
        _EVALUATORS[key] = (onnx.reference.ReferenceEvaluator(model), input_name, input_shape, logits_name, dtype)
    return _EVALUATORS[key]


def reference_logits(path: str | Path, X: np.ndarray) -> np.ndarray:
    """Return the logits ONNX's reference runtime computes for flattened inputs ``X`` (B, n): shape (B, n_out).

    The logits are the model's output, or the input of a final Softmax / LogSoftmax /
    Sigmoid. A batch runs at once; where the model's fixed batch size of 1 does not
    allow that, row by row.
    """
    evaluator, input_name, input_shape, logits_name, dtype = _evaluator(Path(path))
    X = np.atleast_2d(np.asarray(X))
    B = X.shape[0]
    n_in = int(np.prod([d for d in input_shape if d is not None]))
    if X.shape[1] != n_in:
        raise UserError(f"ONNX model {path} expects {n_in} input values, got {X.shape[1]}")

    def run(feed: np.ndarray) -> np.ndarray:
        return np.asarray(evaluator.run([logits_name], {input_name: feed.astype(dtype)})[0], dtype=np.float64)

    if not _has_batch_axis(input_shape):
        return np.stack([run(x.reshape(input_shape)).reshape(-1) for x in X])
    batch = X.reshape((B,) + tuple(input_shape[1:]))
    if input_shape[0] is None or B == 1:
        return run(batch).reshape(B, -1)
    try:
        out = run(batch)
        if out.shape[0] == B:
            return out.reshape(B, -1)
    except Exception:  # a graph that hard-codes batch size 1 (e.g. Reshape to (1, -1)): go row by row
        pass
    return np.stack([run(batch[k:k + 1]).reshape(-1) for k in range(B)])
