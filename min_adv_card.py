"""Compute a provably smallest adversarial change of an image by the number of changed pixels (L0).

Not implemented yet (issue 12): the flags below are the ones it will take; without --help it exits with code 2.
"""
from explain_mnist.cli import make_parser, not_implemented


def parser():
    p = make_parser(__doc__)
    p.add_argument("--target", nargs="+", default=["all"], metavar="all|any|T",
                   help="target labels: all (each other label in turn), any (the smallest over all other labels), "
                        "or one or more labels")
    return p


def main():
    not_implemented("min_adv_card.py", "12, minimal adversarial examples", parser())


if __name__ == "__main__":
    main()
