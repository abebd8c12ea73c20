"""binary.py end to end on the shipped network: the JSON of issue 14, answers re-checked here, and bad input.

Scripts run as subprocesses. A counterexample in a JSON result is re-classified here by the integer forward
pass (and the run itself re-classifies it by Keras); bad input must end with one `error:` line and exit code 2.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from explain_mnist.binarized import cnf, network
from explain_mnist.data import REPO_ROOT

NPZ = REPO_ROOT / "models" / "binary_net.npz"


def run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
    env.pop("MNIST_PATH", None)
    return subprocess.run([sys.executable, "binary.py", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def in_process(capsys, *args):
    """Run binary.py's main in this process (no interpreter start-up per case); return (exit code, stderr)."""
    import binary
    from explain_mnist.cli import run as run_main
    argv = sys.argv
    sys.argv = ["binary.py", *args]
    try:
        with pytest.raises(SystemExit) as stop:
            run_main(binary.main)
    finally:
        sys.argv = argv
    return stop.value.code, capsys.readouterr().err


def one_error(result):
    code, err = result
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("binary")
    (folder / "corrupt.npz").write_bytes(b"PK\x03\x04 not really")
    net = network.load(NPZ)
    arrays = {"W0": net.weights[0], "K0": net.thresholds[0], "W1": net.weights[1][:, :150],
              "K1": net.thresholds[1], "V": net.V}
    np.savez(folder / "unchained.npz", **arrays)
    return folder


def test_bad_input_is_one_line_exit_2(bad_files, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)

    def err(*args):
        return one_error(in_process(capsys, *args))
    assert "not found" in err("verify", "--flips", "1", "--model", str(bad_files / "missing.npz"))
    assert "cannot be read" in err("verify", "--flips", "1", "--model", str(bad_files / "corrupt.npz"))
    assert "do not chain" in err("check", "--count", "1", "--model", str(bad_files / "unchained.npz"))
    assert "at least 0" in err("verify", "--flips", "-1")
    assert "--flips K" in err("verify")
    assert "unknown encoding" in err("verify", "--flips", "1", "--encodings", "mip,smt")
    assert "unknown cardinality" in err("verify", "--flips", "1", "--cardinality", "bdd")
    assert "unknown SAT solver" in err("minflips", "--sat-solver", "zchaff")
    missing = [name for name in cnf.sat_solver_names() if not cnf.capabilities(name).available]
    if missing:                          # listed by PySAT but not built into this wheel (cryptosat, minisatgh)
        assert "not built into this PySAT" in err("verify", "--flips", "1", "--sat-solver", missing[0])
    assert "native" in err("verify", "--flips", "1", "--cardinality", "native", "--sat-solver", "glucose4")
    assert "out of range" in err("minflips", "--index", "10000")
    assert "already the predicted label" in err("verify", "--index", "16", "--flips", "1", "--target", "9")
    assert "give a command" in err()
    assert "--epochs" in err("train", "--epochs", "0")
    assert "--time-limit" in err("verify", "--flips", "1", "--time-limit", "-3")
    assert "--threads" in err("minflips", "--threads", "0")
    assert "the test set has 10000 images" in err("check", "--count", "10001")
    assert "binary.py verify --help" in err("verify", "--flips", "1", "--epsilon", "0.1")
    assert "not allowed with" in err("verify", "--flips", "1", "--figure", "f.png", "--no-figure")
    # a value argparse refuses: its own one-line error and exit 2, through a real process
    done = run("verify", "--flips", "x")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_verify_and_minflips_answers_are_counterexamples(tmp_path, test_set):
    net = network.load(NPZ)
    x0 = network.binarize(test_set.x[16])
    out = tmp_path / "minflips.json"
    figure = tmp_path / "flips.png"
    done = run("minflips", "--index", "16", "--encodings", "search,cnf,ip", "--json", str(out), "--figure", str(figure))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert {"index", "min_flips", "counterexample", "verified", "seconds"} <= set(result)
    k = result["min_flips"]
    cex = np.array(result["counterexample"], dtype=np.uint8)
    assert int((cex != x0).sum()) == k and result["verified"] and result["agree"]
    label = int(net.predict_bits(x0[None])[0])
    assert int(net.predict_bits(cex[None])[0]) != label == result["predicted"]
    assert result["keras_prediction"] == result["counterexample_label"] != label
    assert figure.stat().st_size > 1000
    # one flip fewer is robust for every encoding, the minimum itself is not (the MIP with continuous
    # pre-activations did not find this 2-flip counterexample within 30 s: left out there)
    for flips, want in ((k - 1, "robust"), (k, "counterexample")):
        path, drawn = tmp_path / f"verify{flips}.json", tmp_path / f"verify{flips}.png"
        done = run("verify", "--index", "16", "--flips", str(flips), "--json", str(path), "--figure", str(drawn),
                   "--encodings", "search,ip,cnf" if flips == k else "search,mip,ip,cnf", "--time-limit", "120")
        assert done.returncode == 0, done.stderr
        assert drawn.stat().st_size > 1000
        v = json.loads(path.read_text())
        assert {"index", "flips", "predicted", "answers", "counterexample", "verified", "seconds"} <= set(v)
        names = {"search", "ip", "cnf"} if flips == k else {"search", "mip", "ip", "cnf"}
        assert set(v["answers"]) == names and set(v["answers"].values()) == {want}
        assert set(v["seconds"]) == names
        if want == "counterexample":
            c = np.array(v["counterexample"], dtype=np.uint8)
            assert len(c) == 784 and (c != x0).sum() <= k and int(net.predict_bits(c[None])[0]) != label
            assert v["verified"] and v["keras_prediction"] != label


def test_check_fixed_inputs(tmp_path):
    out = tmp_path / "check.json"
    done = run("check", "--count", "3", "--json", str(out))
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["checked"] == 3 and result["agree"] == {"search": 3, "mip": 3, "ip": 3, "cnf": 3}
    assert set(result["sizes"]["cnf"]) >= {"variables", "clauses"}
    assert set(result["seconds"]) == {"search", "mip", "ip", "cnf"}


@pytest.mark.parametrize("sat_solver", ["glucose4", "cadical153"])
def test_ctrl_c_stops_a_time_limited_sat_solve(sat_solver):
    """Ctrl-C during a SAT solve with a long time limit ends the run at once with the one-line report: in the process
    (glucose4, whose solve Python's own handler cannot enter) and in the child process (CaDiCaL)."""
    import signal
    import time
    process = subprocess.Popen([sys.executable, "binary.py", "verify", "--index", "5", "--flips", "3", "--encodings",
                                "cnf", "--sat-solver", sat_solver, "--time-limit", "300", "--no-figure"],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        time.sleep(6)                    # loaded, encoded, solving: test image 5 stays open at 3 flips for minutes
        assert process.poll() is None
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, err
    assert err.strip().startswith("interrupted:") and len(err.strip().splitlines()) == 1, err
