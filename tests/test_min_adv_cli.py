"""min_adv_card.py and min_adv_sum.py end to end: the JSON of issue 12, images re-classified by Keras, bad input.

The scripts run as subprocesses (each run that loads Keras costs seconds, so each happens once per module).
Answers are checked independently: the adversarial image against Keras itself and against the objective
recomputed from the image and the test set; every bad input must end with one `error:` line, exit code 2 and
no file written.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from explain_mnist.data import REPO_ROOT

RESULT_KEYS = {"target": (int, type(None)), "status": (str,), "objective": (int, float, type(None)),
               "bound": (int, float, type(None)), "adversarial": (list, type(None)), "verified": (bool,),
               "model_prediction": (int, type(None)), "seconds": (int, float), "method": (str,)}
STATUSES = ("optimal", "infeasible", "time_limit", "error")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from explain_mnist.data import load_test_set

    folder = tmp_path_factory.mktemp("min_adv")
    (folder / "keras_home").mkdir()
    x0 = load_test_set(verbose=False).x[0].astype(np.float64)
    np.save(folder / "wrong_shape.npy", np.zeros((27, 28)))
    np.save(folder / "outside.npy", np.full(784, 1.5))
    with_nan = x0.copy()
    with_nan[3] = np.nan
    np.save(folder / "nan.npy", with_nan)
    (folder / "corrupt.keras").write_bytes(b"this is not a zip archive")
    return folder


@pytest.fixture(scope="module")
def run_script(workdir):
    """Return a function running a script with arguments ({dir} expanded), each distinct run once."""
    env = dict(os.environ, KERAS_HOME=str(workdir / "keras_home"), TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("MNIST_PATH", None)
    done = {}

    def run(script, *args):
        argv = (script,) + tuple(a.format(dir=workdir) for a in args)
        if argv not in done:
            done[argv] = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=env, capture_output=True,
                                        text=True, timeout=600)
        return done[argv]
    return run


def finished(process, path):
    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    return json.loads(path.read_text())


def keras_classes(model_name, X):
    from explain_mnist.keras_io import keras_classes as classes, load_keras_model
    return classes(load_keras_model(REPO_ROOT / "models" / f"{model_name}.keras"), np.asarray(X))


@pytest.fixture(scope="module")
def card_run(run_script, workdir):
    process = run_script("min_adv_card.py", "--model", "twoclass", "--index", "2", "--json", "{dir}/card.json",
                         "--figure", "{dir}/card.png")
    return finished(process, workdir / "card.json")


@pytest.fixture(scope="module")
def sum_run(run_script, workdir):
    process = run_script("min_adv_sum.py", "--model", "multiclass", "--index", "0", "--norm", "l1", "--target",
                         "3", "9", "--json", "{dir}/sum.json", "--figure", "{dir}/sum.png")
    return finished(process, workdir / "sum.json")


@pytest.fixture(scope="module")
def any_run(run_script, workdir):
    process = run_script("min_adv_sum.py", "--model", "twoclass", "--index", "2", "--norm", "linf", "--target",
                         "any", "--json", "{dir}/any.json", "--no-figure")
    return finished(process, workdir / "any.json")


@pytest.fixture(scope="module")
def x_test(test_set):
    return test_set.x.astype(np.float64)


# ----------------------------------------------------------------------------- results

@pytest.mark.parametrize("name", ["card_run", "sum_run", "any_run"])
def test_json_has_the_keys_of_the_issue(name, request):
    result = request.getfixturevalue(name)
    for key in ("model", "input", "predicted", "norm", "solver", "margin", "results"):
        assert key in result, key
    assert set(result["input"]) >= {"index", "image_file"} and result["margin"] <= 1e-3
    for row in result["results"]:
        for key, types in RESULT_KEYS.items():
            assert isinstance(row[key], types), (key, row[key])
        assert row["status"] in STATUSES


def test_card_result_is_optimal_and_keras_gives_the_target(card_run, x_test):
    x0 = x_test[2]
    [row] = card_run["results"]
    assert card_run["predicted"] == 0 and row["target"] == 1 and card_run["norm"] == "l0"
    x = np.array(row["adversarial"])
    assert row["status"] == "optimal" and row["verified"] and row["model_prediction"] == 1
    assert keras_classes("twoclass", x[None])[0] == 1
    assert row["objective"] == np.count_nonzero(x != x0) == row["bound"]
    assert np.all((x >= 0) & (x <= 1))


def test_sum_results_per_target_are_checked_by_keras(sum_run, x_test, workdir):
    x0 = x_test[0]
    assert [r["target"] for r in sum_run["results"]] == [3, 9]
    X = np.array([r["adversarial"] for r in sum_run["results"]])
    assert list(keras_classes("multiclass", X)) == [3, 9]
    for row, x in zip(sum_run["results"], X):
        assert row["status"] == "optimal" and row["verified"]
        assert row["objective"] == pytest.approx(np.abs(x - x0).sum(), rel=1e-9)
        assert row["bound"] <= row["objective"] and row["objective"] - row["bound"] <= 1e-6 * row["objective"]
    assert (workdir / "sum.png").read_bytes().startswith(b"\x89PNG")


def test_any_gives_one_result_no_larger_than_the_flip(any_run, x_test):
    [row] = any_run["results"]
    x = np.array(row["adversarial"])
    assert row["target"] == 1 and row["status"] == "optimal"
    assert row["objective"] == pytest.approx(np.abs(x - x_test[2]).max(), rel=1e-9)
    assert keras_classes("twoclass", x[None])[0] == 1


def test_target_equal_to_the_prediction_is_skipped_with_a_note(run_script, workdir):
    process = run_script("min_adv_card.py", "--model", "multiclass", "--index", "0", "--target", "7", "3",
                         "--json", "{dir}/skip.json", "--no-figure")
    result = finished(process, workdir / "skip.json")
    assert "target 7 is the predicted class" in process.stderr
    assert [r["target"] for r in result["results"]] == [3]


# ----------------------------------------------------------------------------- bad input

BAD_INPUTS = {
    # name: (script, arguments, a piece of the error line)
    "unknown_model": ("min_adv_card.py", ["--model", "nosuchmodel"], "nosuchmodel"),
    "missing_model": ("min_adv_sum.py", ["--model", "{dir}/missing.keras"], "missing.keras"),
    "corrupt_model": ("min_adv_card.py", ["--model", "{dir}/corrupt.keras"], "corrupt.keras"),
    "wrong_shape": ("min_adv_sum.py", ["--image", "{dir}/wrong_shape.npy"], "(27, 28)"),
    "outside_unit_box": ("min_adv_card.py", ["--image", "{dir}/outside.npy"], "outside [0, 1]"),
    "nan_pixel": ("min_adv_sum.py", ["--image", "{dir}/nan.npy"], "NaN"),
    "index_out_of_range": ("min_adv_card.py", ["--index", "10000"], "--index 10000"),
    "unknown_target": ("min_adv_sum.py", ["--model", "multiclass", "--target", "12"], "--target 12"),
    "target_not_a_label": ("min_adv_card.py", ["--model", "multiclass", "--target", "seven"], "--target seven"),
    "target_is_the_prediction": ("min_adv_card.py", ["--model", "multiclass", "--index", "0", "--target", "7"],
                                 "predicted class 7"),
    "all_with_labels": ("min_adv_sum.py", ["--target", "all", "3"], "all"),
    "time_limit_zero": ("min_adv_card.py", ["--time-limit", "0"], "--time-limit"),
    "cplex_over_its_licence": ("min_adv_card.py", ["--model", "multiclass", "--index", "0", "--target", "5",
                                                   "--solver", "cplex"], "Community Edition"),
    "highs_has_no_miqp": ("min_adv_sum.py", ["--model", "multiclass", "--index", "0", "--target", "1",
                                             "--solver", "highs"], "MIQP"),
}


def bad_run(run_script, name):
    script, args, _ = BAD_INPUTS[name]
    return run_script(script, *args, "--json", f"{{dir}}/{name}.json", "--figure", f"{{dir}}/{name}.png")


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_one_error_line_and_nothing_written(name, run_script, workdir):
    process = bad_run(run_script, name)
    lines = process.stderr.strip().splitlines()
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and BAD_INPUTS[name][2] in lines[-1], lines
    assert not (workdir / f"{name}.json").exists() and not (workdir / f"{name}.png").exists()


def test_missing_solver_says_what_to_install(monkeypatch):
    import argparse

    from explain_mnist import adversarial, solvers
    from explain_mnist.errors import UserError

    monkeypatch.setitem(solvers._installed, "scip", False)
    args = argparse.Namespace(solver="scip", model="twoclass", index=2, image=None, data=None, target=["all"],
                              time_limit=None, threads=1)
    with pytest.raises(UserError, match="pip install pyscipopt"):
        adversarial.run_min_adversarial(args, "l0")


@pytest.mark.parametrize("script,flags", [("min_adv_card.py", ["--target", "--model", "--json"]),
                                          ("min_adv_sum.py", ["--norm", "{l2,l1,linf}", "--target"])])
def test_help_shows_the_flags(run_script, script, flags):
    process = run_script(script, "--help")
    assert process.returncode == 0
    for flag in flags:
        assert flag in process.stdout


def test_ctrl_c_keeps_the_targets_done_and_writes_the_partial_result(workdir, x_test):
    """A real Ctrl-C on a terminal, sent once the progress bar shows the first of nine targets done."""
    import fcntl
    import pty
    import select
    import signal
    import struct
    import termios

    env = dict(os.environ, KERAS_HOME=str(workdir / "keras_home"), TF_CPP_MIN_LOG_LEVEL="3")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))   # a pty starts 0 columns wide
    path = workdir / "interrupted.json"
    process = subprocess.Popen([sys.executable, "min_adv_card.py", "--model", "multiclass", "--index", "0",
                                "--json", str(path), "--no-figure"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    shown = b""
    try:
        while b"1/9" not in shown and process.poll() is None:
            ready, _, _ = select.select([master], [], [], 240)
            if not ready:
                break
            shown += os.read(master, 4096)
        assert b"1/9" in shown, shown
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    assert process.returncode == 130, out
    assert "INTERRUPTED" in out and str(path) in out
    result = json.loads(path.read_text())
    rows = result["results"]
    assert result["interrupted"] is True and 1 <= len(rows) < 9
    assert rows[0]["status"] in STATUSES and all(r["status"] in STATUSES for r in rows[:-1])
    assert rows[-1]["status"] in STATUSES + ("interrupted",)
    found = [r for r in rows if r["adversarial"] is not None]
    assert found, rows
    X = np.array([r["adversarial"] for r in found])
    assert list(keras_classes("multiclass", X)) == [r["target"] for r in found]
    for r, x in zip(found, X):
        assert r["objective"] == np.count_nonzero(np.abs(x - x_test[0]) > 0)
        assert r["bound"] is None or r["bound"] <= r["objective"]
