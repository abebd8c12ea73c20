"""Train binarized networks and encode them exactly as MIP, integer program and CNF."""
from explain_mnist.cli import not_implemented


def main():
    not_implemented("binary.py", "binary.py")


if __name__ == "__main__":
    main()
