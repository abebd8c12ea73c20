"""Compute a provably smallest adversarial change of an image by the number of changed pixels (L0).

For each target label (or the one other label of a two-class model) the fewest pixels to change, each to any value
in [0, 1], so that the model predicts that label (winning by a logit margin of 1e-3): a verified image from an
attack, then bounds over the region a better image would lie in, then a MIP that proves the optimum. Every image is
re-classified by the model itself. Ctrl-C stops the search: what was found so far is printed and written to --json
(marked "interrupted"), exit code 130.
"""
from explain_mnist.cli import check_common, make_parser, run

NORM = "l0"


def parser():
    p = make_parser(__doc__, default_figure=None)
    p.add_argument("--target", nargs="+", default=["all"], metavar="all|any|T",
                   help="target labels: all (each other label in turn), any (the smallest over all other labels), "
                        "or one or more labels")
    return p


def main():
    args = parser().parse_args()
    check_common(args)
    from explain_mnist.adversarial import report, run_min_adversarial
    return report(args, run_min_adversarial(args, NORM))


if __name__ == "__main__":
    run(main)
