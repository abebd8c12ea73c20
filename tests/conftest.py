"""Shared fixtures: a private KERAS_HOME, the shipped models and the shipped MNIST test set, loaded once per session."""
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest

os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="keras_home_")  # never the user's ~/.keras
os.environ["EXPLAIN_MNIST_CACHE"] = tempfile.mkdtemp(prefix="explain_mnist_cache_")  # nor ~/.cache
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.pop("MNIST_PATH", None)
# a shell that starts a job in the background sets SIGINT to "ignore", which every child inherits, so the Ctrl-C
# tests' scripts would never see theirs; a handler here is reset to the default in each child, which Python needs
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from explain_mnist.threads import limit_threads  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread():
    """Run every test with the scripts' default of one BLAS thread (and pass it to the scripts run as processes)."""
    limit_threads()


@pytest.fixture(scope="session")
def test_set():
    from explain_mnist.data import load_test_set
    return load_test_set(verbose=False)


@pytest.fixture(scope="session")
def twoclass_net():
    from explain_mnist.models import load_network
    return load_network("twoclass")


@pytest.fixture(scope="session")
def multiclass_net():
    from explain_mnist.models import load_network
    return load_network("multiclass")


@pytest.fixture(scope="session")
def cnn_net():
    from explain_mnist.models import load_network
    return load_network("cnn_simple")


@pytest.fixture(scope="session")
def shipped_nets(twoclass_net, multiclass_net, cnn_net):
    return {"twoclass": twoclass_net, "multiclass": multiclass_net, "cnn_simple": cnn_net}
