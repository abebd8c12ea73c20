"""explain-mnist: provable facts about neural networks on MNIST, computed with exact methods."""
from explain_mnist.errors import UserError
from explain_mnist.network import Affine, Network, ReLU

__all__ = ["Affine", "Network", "ReLU", "UserError"]
