"""The shared CLI contract: one-line errors with exit code 2, atomic writes, scripts that exist."""
import json
import os
import subprocess
import sys

import pytest

from explain_mnist import results
from explain_mnist.data import REPO_ROOT

SCRIPTS = ["train_twoclass.py", "train_multiclass.py", "train_cnn_simple.py", "min_explanation.py",
           "min_adv_sum.py", "min_adv_card.py", "binary.py", "verify.py"]


def run_script(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_exists_and_is_thin(script):
    path = REPO_ROOT / script
    assert path.is_file()
    assert len(path.read_text().splitlines()) <= 150


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_bad_flag(script):
    bad = run_script(script, "--no-such-flag")
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and bad.stderr.startswith("error: ")


def test_training_script_validates_arguments():
    done = run_script("train_twoclass.py", "--epochs", "0")
    assert done.returncode == 2 and done.stderr.strip() == "error: --epochs must be at least 1, got 0"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    results.write_json(path, {"a": 1})

    def failing(f):
        f.write(b"{half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        results.write_atomic(path, failing)
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["r.json"]


def test_jsonable_converts_numpy_and_dataclasses():
    import dataclasses

    import numpy as np

    @dataclasses.dataclass
    class R:
        x: np.ndarray
        v: np.float32
        inf: float

    out = results.to_jsonable(R(np.arange(3), np.float32(1.5), float("inf")))
    assert json.loads(json.dumps(out)) == {"x": [0, 1, 2], "v": 1.5, "inf": "inf"}


def test_run_turns_an_unexpected_exception_into_one_line(capsys, monkeypatch):
    from explain_mnist import cli

    def broken():
        raise RuntimeError("something\nbroke")

    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(broken)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: internal error (RuntimeError: something broke)") and err.count("\n") == 1
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(RuntimeError):
        cli.run(broken)
