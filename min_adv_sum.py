"""Compute a provably smallest adversarial change of an image by squared error (L2), L1 or L-inf."""
from explain_mnist.cli import not_implemented


def main():
    not_implemented("min_adv_sum.py", "Adversarial scripts")


if __name__ == "__main__":
    main()
