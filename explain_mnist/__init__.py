"""explain-mnist: provable facts about neural networks on MNIST, computed with exact methods."""
from typing import TYPE_CHECKING

from explain_mnist.errors import UserError

if TYPE_CHECKING:
    from explain_mnist.network import Affine, Network, ReLU

__all__ = ["Affine", "Network", "ReLU", "UserError"]


def __getattr__(name: str):
    # the network classes load numpy: imported on first use, so that a script started without the project's
    # packages reaches `cli.run` and says so in one line
    if name in ("Affine", "Network", "ReLU"):
        from explain_mnist import network
        return getattr(network, name)
    raise AttributeError(f"module 'explain_mnist' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
