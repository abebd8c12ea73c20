"""Compute a provably minimal set of pixels that forces the model's prediction (a formal explanation)."""
from explain_mnist.cli import not_implemented


def main():
    not_implemented("min_explanation.py", "Explanations")


if __name__ == "__main__":
    main()
