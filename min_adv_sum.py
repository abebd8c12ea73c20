"""Compute a provably smallest adversarial change of an image by squared error (L2), L1 or L-inf.

For each target label (or the one other label of a two-class model) the smallest change, pixels moving either way
within [0, 1], so that the model predicts that label (winning by a logit margin of 1e-3): a verified image from an
attack, bounds over the region a better image would lie in, then the MIP (a mixed-integer QP for L2) or, for L-inf,
bisection on the radius with the verifier and a MIP in what is left. Every image is re-classified by the model.
Ctrl-C stops the search: what was found so far is printed and written to --json (marked "interrupted"), exit
code 130.
"""
from explain_mnist.cli import check_common, make_parser, run


def parser():
    p = make_parser(__doc__, default_figure=None)
    p.add_argument("--norm", choices=("l2", "l1", "linf"), default="l2",
                   help="what to minimise: the sum of squared changes, of absolute changes, or the largest change")
    p.add_argument("--target", nargs="+", default=["all"], metavar="all|any|T",
                   help="target labels: all (each other label in turn), any (the smallest over all other labels), "
                        "or one or more labels")
    return p


def main():
    args = parser().parse_args()
    check_common(args)
    from explain_mnist.adversarial import report, run_min_adversarial
    return report(args, run_min_adversarial(args, args.norm))


if __name__ == "__main__":
    run(main)
