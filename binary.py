"""Binarized networks: trained here, encoded exactly as MIP, integer program and CNF, and verified.

Not implemented yet (issue 14): the commands and flags below are the ones it will take; without --help it exits
with code 2.
"""
from explain_mnist.cli import ArgumentParser, not_implemented

ENCODINGS = ("mip", "ip", "cnf")


def parser():
    p = ArgumentParser(description=__doc__)
    commands = p.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser("train", help="train the 784-200-100-10 binarized network, save models/binary.keras "
                                "and its exact integer form models/binary_net.npz")
    train.add_argument("--epochs", type=int, default=None, help="training epochs")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--data", default=None, help="MNIST training data (mnist.npz or a folder of IDX files)")
    check = commands.add_parser("check", help="with the input fixed, every encoding reproduces the network's "
                                "prediction on N test images")
    check.add_argument("--count", type=int, default=100, help="test images to check")
    verify = commands.add_parser("verify", help="can flipping at most K binarized pixels change the label?")
    verify.add_argument("--index", type=int, default=0, help="MNIST test image")
    verify.add_argument("--flips", type=int, default=None, metavar="K", help="at most this many flipped pixels")
    verify.add_argument("--target", type=int, default=None, help="only this label counts as a change")
    minflips = commands.add_parser("minflips", help="the fewest flipped pixels that change the label")
    minflips.add_argument("--index", type=int, default=0, help="MNIST test image")
    for sub in (check, verify, minflips):
        sub.add_argument("--model", default="models/binary_net.npz", help="the integer form of a binarized network")
        sub.add_argument("--encodings", default=",".join(ENCODINGS), help="comma-separated: mip, ip, cnf")
        sub.add_argument("--cardinality", default=None, help="PySAT cardinality encoding of the CNF "
                         "(seqcounter, totalizer, sortnetwrk, cardnetwrk, mtotalizer, kmtotalizer; default: the "
                         "fastest measured)")
        sub.add_argument("--sat-solver", default=None, help="PySAT solver (cadical153, glucose4, minicard, "
                         "gluecard4, ...; default: the fastest measured)")
        sub.add_argument("--solver", default="auto", choices=("auto", "highs", "scip", "cplex"),
                         help="MIP / IP solver")
        sub.add_argument("--time-limit", type=float, default=None, help="seconds per query (default: no limit)")
        sub.add_argument("--json", default=None, help="write the result as JSON to this file")
    for sub in (verify, minflips):
        sub.add_argument("--figure", default=None, help="write the figure (.png, .pdf or .svg)")
        sub.add_argument("--no-figure", action="store_true", help="do not draw a figure")
    return p


def main():
    not_implemented("binary.py", "14, binarized networks", parser())


if __name__ == "__main__":
    main()
