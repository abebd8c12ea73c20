"""The thread setting: one BLAS thread by default whatever the environment says, and the same nodes either way."""
import json
import os
import subprocess
import sys

from explain_mnist.data import REPO_ROOT

MNISTFC = REPO_ROOT.parent / "shared" / "benchmarks" / "mnistfc"
FORCED = {name: "8" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


def python(code, **env):
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_limit_threads_overrides_the_environment():
    before, after, variable = python("import numpy; from explain_mnist.threads import blas_threads, limit_threads; "
                                     "import os; b = blas_threads(); limit_threads(); "
                                     "print(b, blas_threads(), os.environ['OPENBLAS_NUM_THREADS'])", **FORCED)
    assert int(before) > 1   # the environment's count took effect at import ...
    assert (int(after), variable) == (1, "1")   # ... and the product's setting replaced it


def test_threads_flag_sets_the_pools():
    code = ("import sys; from explain_mnist import cli; from explain_mnist.threads import blas_threads; "
            "p = cli.make_parser('t'); a = p.parse_args(sys.argv[1:]); cli.check_common(a); print(blas_threads())")
    done = subprocess.run([sys.executable, "-c", code, "--threads", "2"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, **FORCED))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2"]


def test_a_forced_high_thread_count_gives_the_same_nodes(tmp_path):
    results = []
    for name, env in (("one", {name: "1" for name in FORCED}), ("forced", FORCED)):
        out = tmp_path / f"{name}.json"
        done = subprocess.run([sys.executable, "verify.py", "--model", str(MNISTFC / "mnist-net_256x2.onnx"),
                               "--vnnlib", str(MNISTFC / "prop_5_0.03.vnnlib"), "--no-figure", "--json", str(out)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=dict(os.environ, **env))
        assert done.returncode == 0, done.stderr
        results.append(json.loads(out.read_text()))
    assert results[0]["method"] == "bab" and results[0]["nodes"] > 0
    assert results[0]["blas_threads"] == results[1]["blas_threads"] == 1   # measured during the run
    assert (results[1]["verdict"], results[1]["nodes"]) == (results[0]["verdict"], results[0]["nodes"])
