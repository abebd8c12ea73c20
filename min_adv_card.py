"""Compute a provably smallest adversarial change of an image by the number of changed pixels (L0)."""
from explain_mnist.cli import not_implemented


def main():
    not_implemented("min_adv_card.py", "Adversarial scripts")


if __name__ == "__main__":
    main()
