"""min_explanation.py end to end: the JSON of issue 13, witnesses re-classified by Keras, batches, bad input.

The script runs as a subprocess. Its answer is checked independently: the explanation's sufficiency by the milp
encoding of tests/test_explanation.py, every witness pixel by pixel against the saved image and re-classified by
the model's own framework (Keras). A batch interrupted by SIGKILL resumes and loses nothing. Bad input ends with
one `error:` line, exit code 2 and nothing written.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from explain_mnist.data import REPO_ROOT
from test_explanation import sufficient

KEYS = {"model", "input", "predicted", "epsilon", "explanation", "size", "status", "lower_bound", "witnesses",
        "oracle_calls", "decided_by", "seconds"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("keras_home")
    environment = dict(os.environ, KERAS_HOME=str(home), TF_CPP_MIN_LOG_LEVEL="3")
    environment.pop("MNIST_PATH", None)
    return environment


def script(env, *args, timeout=300):
    return subprocess.run([sys.executable, "min_explanation.py", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def single(env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    p = script(env, "--model", "twoclass", "--index", 2, "--json", folder / "r.json", "--figure", folder / "f.png")
    assert p.returncode == 0, p.stderr
    return folder, json.loads((folder / "r.json").read_text())


def test_single_image_result(single):
    folder, r = single
    assert KEYS <= set(r)
    assert r["status"] == "minimal" and r["lower_bound"] is None and r["epsilon"] is None
    assert r["explanation"] == sorted(r["explanation"]) and r["size"] == len(r["explanation"]) > 0
    assert all(0 <= p < 784 for p in r["explanation"])
    assert r["witnesses"] == "r.npz" and (folder / "f.png").stat().st_size > 0
    assert sum(r["decided_by"].values()) == r["oracle_calls"]


def test_single_image_sufficient_by_milp(single):
    from explain_mnist.models import load_network
    _, r = single
    net = load_network("twoclass")
    x0 = np.array(r["image"])
    assert sufficient(net, x0, r["predicted"], r["explanation"], np.zeros(784), np.ones(784)) is True


def test_single_image_witnesses_reclassified_by_keras(single):
    from explain_mnist.models import load_network, reference_classes
    folder, r = single
    data = np.load(folder / "r.npz")
    x0 = np.array(r["image"])
    assert np.array_equal(data["image"], x0)
    assert sorted(data["pixels"].tolist()) == r["explanation"]     # minimal: a witness for every pixel
    net = load_network("twoclass")
    classes = reference_classes(net, data["witnesses"])
    assert np.all(classes != r["predicted"])
    E = set(r["explanation"])
    for p, w in zip(data["pixels"], data["witnesses"]):
        others = sorted(E - {int(p)})
        assert np.array_equal(w[others], x0[others])
        assert np.all((w >= 0) & (w <= 1))


def result_files(folder):
    return sorted(f for f in os.listdir(folder) if f.startswith("explanation_") and f.endswith(".json"))


def test_batch_resumes_after_kill(env, tmp_path):
    out = tmp_path / "batch"
    args = ["--model", "multiclass", "--epsilon", "0.03", "--indices", "0:4", "--out-dir", out,
            "--figure", tmp_path / "grid.png"]
    process = subprocess.Popen([sys.executable, "min_explanation.py", *map(str, args)], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and process.poll() is None and not (out.is_dir() and result_files(out)):
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    first = {f: (out / f).stat().st_mtime_ns for f in result_files(out)}
    assert first, "the batch wrote nothing before it was stopped"
    p = script(env, *args)
    assert p.returncode == 0, p.stderr
    assert len(result_files(out)) == 4
    for f, mtime in first.items():         # finished images are not computed again
        assert (out / f).stat().st_mtime_ns == mtime
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped"] == len(first) and summary["computed"] == 4 - len(first)
    assert [row["index"] for row in summary["images"]] == [0, 1, 2, 3]
    assert (tmp_path / "grid.png").stat().st_size > 0
    for f in result_files(out):
        r = json.loads((out / f).read_text())
        assert r["status"] == "minimal" and r["epsilon"] == 0.03
        assert (out / r["witnesses"]).is_file()


def test_batch_draws_its_grid_by_default_and_not_with_no_figure(env, tmp_path):
    # test image 3 at eps 0.05: the whole ball keeps its class (the empty explanation), a batch of one in seconds
    args = ["--model", "multiclass", "--epsilon", "0.05", "--indices", "3:4"]
    drawn, plain = tmp_path / "drawn", tmp_path / "plain"
    assert script(env, *args, "--out-dir", drawn).returncode == 0
    assert script(env, *args, "--out-dir", plain, "--no-figure").returncode == 0
    assert (drawn / "explanations_grid.png").stat().st_size > 0
    assert (plain / "summary.json").is_file() and not (plain / "explanations_grid.png").exists()


BAD = [
    (["--epsilon", "0"], "--epsilon"),
    (["--epsilon", "1.5"], "--epsilon"),
    (["--indices", "0:3", "--image", "{tmp}/x.npy"], "--indices"),
    (["--indices", "9990:10001"], "--indices"),
    (["--indices", "5:2"], "--indices"),
    (["--indices", "a:b"], "--indices"),
    (["--indices", "0:2", "--out-dir", "{tmp}/a_file"], "a_file"),
    (["--indices", "0:2", "--out-dir", "/proc/explanations"], "/proc/explanations"),
    (["--indices", "0:2", "--jobs", "0"], "--jobs"),
    (["--jobs", "2"], "--indices"),
]


@pytest.mark.parametrize("args,word", BAD)
def test_bad_input(env, tmp_path, args, word):
    (tmp_path / "a_file").write_text("x")
    np.save(tmp_path / "x.npy", np.zeros(784))
    before = set(os.listdir(tmp_path))
    p = script(env, "--json", tmp_path / "r.json", *[a.format(tmp=tmp_path) for a in args])
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and word in lines[0], p.stderr
    assert set(os.listdir(tmp_path)) == before


def test_dask_scheduler_missing_or_unreachable(env, tmp_path):
    p = script(env, "--model", "multiclass", "--indices", "0:2", "--out-dir", tmp_path / "out",
               "--dask-scheduler", "tcp://127.0.0.1:9", "--no-figure")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    try:
        import dask.distributed  # noqa: F401
        assert "cannot reach" in lines[0]
    except ImportError:
        assert "pip install" in lines[0]
    assert not (tmp_path / "out").exists()


def test_dask_local_cluster_equals_local_batch(env, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    args = ["--model", "multiclass", "--epsilon", "0.03", "--indices", "0:2", "--no-figure"]
    local = script(env, *args, "--out-dir", tmp_path / "local")
    assert local.returncode == 0, local.stderr
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        remote = script(env, *args, "--out-dir", tmp_path / "dask", "--dask-scheduler", cluster.scheduler_address)
    assert remote.returncode == 0, remote.stderr
    for name in result_files(tmp_path / "local"):
        a = json.loads((tmp_path / "local" / name).read_text())
        b = json.loads((tmp_path / "dask" / name).read_text())
        assert (a["explanation"], a["status"]) == (b["explanation"], b["status"])
    assert len(result_files(tmp_path / "dask")) == 2
