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


# arguments that need numpy before any work (an index out of range, had the packages been there)
MISSING_PACKAGE_RUNS = {"verify.py": ["--model", "twoclass", "--index", "99999", "--epsilon", "0.01"],
                        "min_adv_card.py": ["--model", "twoclass", "--index", "99999"],
                        "min_adv_sum.py": ["--model", "twoclass", "--index", "99999"],
                        "min_explanation.py": ["--model", "twoclass", "--index", "99999"],
                        "binary.py": ["verify", "--index", "99999", "--flips", "1"],
                        "train_twoclass.py": ["--help"], "train_multiclass.py": ["--help"],
                        "train_cnn_simple.py": ["--help"]}


@pytest.mark.parametrize("script,missing", [(script, "numpy") for script in sorted(MISSING_PACKAGE_RUNS)]
                         + [("verify.py", "threadpoolctl")])
def test_a_missing_package_is_named_in_one_line(script, missing):
    # a None entry in sys.modules makes importing that package fail as if it were not installed
    argv = [script] + MISSING_PACKAGE_RUNS[script]
    code = (f"import runpy, sys; sys.modules[{missing!r}] = None; sys.argv = {argv!r}; "
            f"runpy.run_path({script!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: the Python package '{missing}' is not installed")
    assert done.stderr.count("\n") == 1 and "requirements.txt" in done.stderr


@pytest.mark.parametrize("module", ["explain_mnist.no_such_module", "sqlite3"])
def test_a_missing_module_of_our_own_or_of_python_is_an_internal_error(module, capsys, monkeypatch):
    import importlib

    from explain_mnist import cli

    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "sqlite3", None)     # as in a Python built without it
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda: importlib.import_module(module))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: internal error (RuntimeError: cannot import {module})")


def test_an_interrupt_exits_130_with_one_line(capsys):
    from explain_mnist import cli

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_info:
        cli.run(interrupted)
    assert exit_info.value.code == cli.EXIT_INTERRUPTED == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted: ") and err.count("\n") == 1


# ----------------------------------------------------------------------------- output files, checked before any work

def one_error_line(done):
    """Assert that a run ended with exit code 2 and a single `error:` line (nothing else: no work was started)."""
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines   # no "data: ..." line: nothing was loaded
    assert "Traceback" not in done.stderr
    return lines[0]


def _bad_outputs(tmp):
    (tmp / "plain").write_text("")
    os.mkfifo(tmp / "pipe")
    return {
        "missing_parent": (["--json", "/proc/nope/r.json"],
                           ["/proc/nope/r.json", "cannot create the folder /proc/nope"]),
        "parent_is_file": (["--json", f"{tmp}/plain/r.json"], [f"{tmp}/plain/r.json", "is a file, not a folder"]),
        "device": (["--json", "/dev/full"], ["/dev/full", "device, not a regular file"]),
        "fifo": (["--figure", f"{tmp}/pipe"], [f"{tmp}/pipe", "fifo, not a regular file"]),
        "folder": (["--json", str(tmp)], [str(tmp), "is a folder"]),
        "figure_suffix": (["--figure", f"{tmp}/f.jpg"], [".jpg", "supported: .png, .pdf, .svg"]),
        "figure_stdout": (["--figure", "-"], ["--figure -", "standard output"]),
        "figure_parent_missing": (["--figure", "/proc/nope/f.png"], ["/proc/nope/f.png", "cannot create"]),
        "figure_and_no_figure": (["--figure", f"{tmp}/f.png", "--no-figure"], ["--no-figure", "not allowed with"]),
    }


@pytest.mark.parametrize("case", ["missing_parent", "parent_is_file", "device", "fifo", "folder", "figure_suffix",
                                  "figure_stdout", "figure_parent_missing", "figure_and_no_figure"])
def test_unusable_output_is_refused_before_any_work(tmp_path, case):
    if case == "device" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    args, words = _bad_outputs(tmp_path)[case]
    before = sorted(os.listdir(tmp_path))
    line = one_error_line(run_script("verify.py", "--epsilon", "0.1", *args))
    for word in words:
        assert word in line, line
    assert sorted(os.listdir(tmp_path)) == before
    if case == "device":
        import stat
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_unwritable_folder_is_refused_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = one_error_line(run_script("verify.py", "--epsilon", "0.1", "--json", f"{locked}/r.json"))
    finally:
        locked.chmod(0o700)
    assert f"{locked}/r.json" in line and "cannot write in" in line


def run_with_umask(mask, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, env=env,
                          timeout=300, preexec_fn=lambda: os.umask(mask))


@pytest.fixture(scope="module")
def symlink_run(tmp_path_factory):
    """verify.py writing its JSON through a symbolic link and a PDF figure, under umask 027."""
    folder = tmp_path_factory.mktemp("symlink")
    (folder / "results").mkdir()
    (folder / "link.json").symlink_to(folder / "results" / "r.json")
    done = run_with_umask(0o027, "verify.py", "--model", "twoclass", "--index", "2", "--epsilon", "0.1",
                          "--json", str(folder / "link.json"), "--figure", str(folder / "f.pdf"))
    assert done.returncode == 0, done.stderr
    return folder, done


def test_json_is_written_through_a_symlink_with_the_umask(symlink_run):
    folder, _ = symlink_run
    link, target = folder / "link.json", folder / "results" / "r.json"
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text())["verdict"] == "not_robust"
    assert sorted(os.listdir(folder)) == ["f.pdf", "link.json", "results"]
    assert os.stat(target).st_mode & 0o777 == 0o640
    assert os.stat(folder / "f.pdf").st_mode & 0o777 == 0o640


def test_pdf_suffix_gives_a_pdf(symlink_run):
    folder, _ = symlink_run
    assert (folder / "f.pdf").read_bytes().startswith(b"%PDF-")


def test_screen_and_json_name_the_class_and_both_times(symlink_run):
    folder, done = symlink_run
    result = json.loads((folder / "results" / "r.json").read_text())
    assert result["predicted"] == 0 and result["predicted_name"] == "digit 1"
    assert result["counterexample_class"] == 1 and result["counterexample_name"] == "digit 3"
    assert result["label"] == 1 and result["label_in_model_classes"] is True
    assert result["wall_seconds"] >= result["seconds"] >= 0
    assert "class 0 (digit 1), NOT ROBUST" in done.stdout and "the counterexample is class 1 (digit 3)" in done.stdout
    assert "s to solve" in done.stdout and "s in all" in done.stdout
    assert "note:" not in done.stderr and "\r" not in done.stderr   # stderr is no terminal: no progress line


@pytest.fixture(scope="module")
def stdout_run(tmp_path_factory):
    """verify.py --json - with an SVG figure, on test image 0 (a 7) and the 1-vs-3 model."""
    folder = tmp_path_factory.mktemp("stdout")
    done = subprocess.run([sys.executable, str(REPO_ROOT / "verify.py"), "--model", "twoclass", "--index", "0",
                           "--epsilon", "0.05", "--json", "-", "--figure", "f.svg"], cwd=folder, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr
    return folder, done


def test_json_dash_makes_stdout_pure_json(stdout_run):
    folder, done = stdout_run
    result = json.loads(done.stdout)
    assert result["verdict"] == "robust" and result["index"] == 0
    assert "ROBUST (proved)" in done.stderr
    assert sorted(os.listdir(folder)) == ["f.svg"]   # no file named "-"
    assert (folder / "f.svg").read_bytes().startswith(b"<?xml") and b"<svg" in (folder / "f.svg").read_bytes()


def test_label_outside_the_model_classes_is_said(stdout_run):
    _, done = stdout_run
    result = json.loads(done.stdout)
    assert result["label"] == 7 and result["label_in_model_classes"] is False
    notes = [line for line in done.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "test image 0 is a 7, not one of the model's classes" in notes[0]
    assert "class 0 = digit 1, class 1 = digit 3" in notes[0]


# ----------------------------------------------------------------------------- a stand-in verifier: unknown, Ctrl-C

FAKE_RUN = """
import json, os, runpy, sys
import numpy as np
from explain_mnist import cli, verification
from explain_mnist.network import Affine, Network, ReLU
from explain_mnist.verifier import Verdict

spec = json.loads(os.environ["FAKE_VERDICT"])

def load_model(args):
    rng = np.random.default_rng(0)
    net = Network([Affine(rng.normal(size=(4, 784)), np.zeros(4)), ReLU(),
                   Affine(rng.normal(size=(2, 4)), np.zeros(2))])
    net.meta["class_names"] = ["1", "3"]
    return net

class FakeVerifier:
    def __init__(self, net, progress=None, **options):
        self.progress = progress
    def verify(self, lo, hi, c):
        if self.progress is not None:
            self.progress("branch-and-bound", 1234, -0.5, 2.0)
        verdict = Verdict("unknown", method="bab", nodes=42, seconds=1.5, lower_bound=-0.123456,
                          message=spec["message"])
        verdict.interrupted = spec["interrupted"]
        return verdict

cli.load_model = load_model
verification.Verifier = FakeVerifier
sys.argv = ["verify.py", *sys.argv[1:]]
runpy.run_path("verify.py", run_name="__main__")
"""


def fake_run(verdict, *args, stderr=subprocess.PIPE):
    env = dict(os.environ, FAKE_VERDICT=json.dumps(verdict))
    return subprocess.run([sys.executable, "-c", FAKE_RUN, "--index", "2", "--epsilon", "0.1", *args], cwd=REPO_ROOT,
                          stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, timeout=300)


def test_unknown_prints_the_lower_bound_once():
    message = "limit hit after 42 nodes; best proven lower bound of the margin -0.1235"
    done = fake_run({"interrupted": False, "message": message}, "--no-figure")
    assert done.returncode == 0, done.stderr
    assert "UNKNOWN" in done.stdout and done.stdout.count("-0.1235") == 1, done.stdout
    plain = fake_run({"interrupted": False, "message": ""}, "--no-figure")
    assert plain.stdout.count("-0.1235") == 1, plain.stdout   # a message without the bound: the bound on its own line


def test_interrupted_run_writes_the_partial_result_and_exits_130(tmp_path):
    done = fake_run({"interrupted": True, "message": "interrupted"}, "--json", str(tmp_path / "r.json"),
                    "--figure", str(tmp_path / "f.png"))
    assert done.returncode == 130, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["interrupted"] is True and result["verdict"] == "unknown"
    assert result["lower_bound"] == pytest.approx(-0.123456) and result["nodes"] == 42
    assert "INTERRUPTED" in done.stdout and done.stdout.count("-0.1235") == 1
    assert str(tmp_path / "r.json") in done.stdout
    assert not (tmp_path / "f.png").exists()


def test_progress_line_on_a_terminal_only():
    import pty
    master, slave = pty.openpty()
    try:
        done = fake_run({"interrupted": False, "message": ""}, "--no-figure", stderr=slave)
    finally:
        os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    assert done.returncode == 0
    text = shown.decode()
    assert "\rbranch-and-bound: 1,234 nodes, margin lower bound -0.5, 2.0 s" in text, text
    quiet = fake_run({"interrupted": False, "message": ""}, "--no-figure")
    assert "branch-and-bound" not in quiet.stderr and "\r" not in quiet.stderr


def test_progress_line_updates_in_place_and_erases_itself():
    import io

    from explain_mnist.cli import ProgressLine

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    line = ProgressLine(stream)
    assert line.enabled
    line("bab", 10, -1.25, 0.5)
    line("bab", 2000, 0.001, 1.0)
    line.close()
    shown = stream.getvalue()
    assert shown.count("\r") == 4 and "bab: 2,000 nodes, margin lower bound 0.001, 1.0 s" in shown
    assert shown.endswith("\r") and "\n" not in shown
    quiet = io.StringIO()
    silent = ProgressLine(quiet)
    silent("bab", 10, -1.0, 0.5)
    silent.close()
    assert not silent.enabled and quiet.getvalue() == ""


def test_wall_time_counts_from_the_process_start():
    code = "import time; time.sleep(0.5); from explain_mnist import cli; print(cli.wall_seconds())"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert 0.5 <= float(done.stdout) < 3600


# ----------------------------------------------------------------------------- inputs said plainly

def test_image_with_nan_says_nan(tmp_path):
    import numpy as np
    x = np.full(784, 0.5)
    x[3] = np.nan
    np.save(tmp_path / "nan.npy", x)
    line = one_error_line(run_script("verify.py", "--image", str(tmp_path / "nan.npy"), "--epsilon", "0.1"))
    assert "NaN" in line and "outside" not in line


def test_complex_image_is_refused(tmp_path):
    import numpy as np
    np.save(tmp_path / "c.npy", np.full((28, 28), 0.5 + 0.1j))
    done = run_script("verify.py", "--image", str(tmp_path / "c.npy"), "--epsilon", "0.1")
    line = one_error_line(done)
    assert "complex" in line and "Warning" not in done.stderr


def test_folder_given_as_model_is_called_a_folder(tmp_path):
    done = run_script("verify.py", "--model", str(tmp_path), "--epsilon", "0.1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (f"error: model {tmp_path} is a folder, not a model file; give a "
                                                    f".keras or .onnx file or a shipped name (twoclass, multiclass, "
                                                    f"cnn_simple)")


# ----------------------------------------------------------------------------- help

def test_verify_help_shows_each_default_once():
    done = run_script("verify.py", "--help")
    text = " ".join(done.stdout.split())
    assert done.returncode == 0
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "every model (default: 0)" in text and "(default 0)" not in text
    assert ".png, .pdf or .svg" in text and "- writes it to standard output" in text


def test_binary_subcommands_show_their_flags():
    done = run_script("binary.py", "verify", "--help")
    assert done.returncode == 0 and "--flips" in done.stdout and "--json" in done.stdout
    done = run_script("binary.py", "verify")
    assert done.returncode == 2 and done.stderr.strip() == "error: give the number of flips: --flips K"


def test_min_explanation_help_shows_its_flags():
    done = run_script("min_explanation.py", "--help")
    assert done.returncode == 0
    for flag in ["--epsilon", "--order", "--smallest", "--indices", "--jobs", "--out-dir", "--dask-scheduler"]:
        assert flag in done.stdout, flag


# ----------------------------------------------------------------------------- benchmarks keep the shipped tables

def test_benchmark_output_paths():
    import argparse

    from benchmarks import report
    shipped = REPO_ROOT / "benchmarks" / "refine.json"
    args = argparse.Namespace(out=None, update_results=False)
    assert report.output_json(args, shipped) == report.SCRATCH / "refine.json"
    assert report.saved_json(args, shipped) == shipped
    args.update_results = True
    assert report.output_json(args, shipped) == shipped
    args.out = "/tmp/x.json"
    assert str(report.output_json(args, shipped)) == "/tmp/x.json" == str(report.saved_json(args, shipped))


def test_benchmark_report_without_update_leaves_results_md_alone():
    results_md = REPO_ROOT / "benchmarks" / "RESULTS.md"
    before = results_md.read_bytes()
    done = run_script("benchmarks/bench_refine.py", "--report")
    assert done.returncode == 0, done.stderr
    assert "## Refined intermediate bounds" in done.stdout and "--update-results" in done.stderr
    assert results_md.read_bytes() == before


MNISTFC = REPO_ROOT.parent / "shared" / "benchmarks" / "mnistfc"


@pytest.mark.skipif(not (MNISTFC / "mnist-net_256x2.onnx").is_file(), reason="mnistfc benchmark folder is absent")
def test_partial_mnistfc_run_keeps_the_shipped_tables(tmp_path):
    shipped = [REPO_ROOT / "benchmarks" / name for name in ("RESULTS.md", "mnistfc_256x2.json")]
    before = [path.read_bytes() for path in shipped]
    done = run_script("benchmarks/bench_mnistfc.py", "--nets", "256x2", "--props", "2", "--limit", "30",
                      "--out", str(tmp_path / "x.json"))
    assert done.returncode == 0, done.stderr
    assert [path.read_bytes() for path in shipped] == before
    rows = json.loads((tmp_path / "x.json").read_text())
    assert [r["property"] for r in rows] == ["prop_2_0.03.vnnlib", "prop_2_0.05.vnnlib"]
    assert "| 256x2" in done.stdout or "mnist-net_256x2.onnx | prop_2_0.03" in done.stdout


@pytest.mark.skipif(not (MNISTFC / "mnist-net_256x6.onnx").is_file(), reason="mnistfc benchmark folder is absent")
def test_ctrl_c_prints_the_best_bound_and_writes_the_partial_result(tmp_path):
    """A real Ctrl-C on an instance that stays open for minutes, sent once the progress line shows the search runs."""
    import pty
    import select
    import signal

    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "verify.py", "--model", str(MNISTFC / "mnist-net_256x6.onnx"),
                                "--vnnlib", str(MNISTFC / "prop_0_0.03.vnnlib"), "--json", str(tmp_path / "r.json")],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    shown = b""
    try:
        while b"nodes" not in shown and process.poll() is None:
            ready, _, _ = select.select([master], [], [], 240)
            if not ready:
                break
            shown += os.read(master, 4096)
        assert b"nodes, margin lower bound" in shown, shown
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    assert process.returncode == 130, out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["interrupted"] is True and result["verdict"] == "unknown" and result["nodes"] >= 0
    assert "INTERRUPTED" in out and "best proven lower bound of the margin" in out and "r.json" in out
