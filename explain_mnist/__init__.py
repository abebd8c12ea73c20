"""explain-mnist: provable facts about neural networks on MNIST, computed with exact methods."""
from explain_mnist.errors import UserError

__all__ = ["Affine", "Network", "ReLU", "UserError"]


def __getattr__(name: str):
    # the network classes load numpy: imported on first use, so that a script started without the project's
    # packages reaches `cli.run` and says so in one line
    if name in ("Affine", "Network", "ReLU"):
        from explain_mnist import network
        return getattr(network, name)
    raise AttributeError(f"module 'explain_mnist' has no attribute {name!r}")
