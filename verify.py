"""Decide whether every image in an L-inf box around an image (or a VNN-LIB property) keeps its class."""
from explain_mnist.cli import not_implemented


def main():
    not_implemented("verify.py", "verify.py and the fast verifier")


if __name__ == "__main__":
    main()
