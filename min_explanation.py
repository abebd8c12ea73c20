"""Compute a provably minimal set of pixels that forces the model's prediction (a formal explanation).

Not implemented yet (issue 13): the flags below are the ones it will take; without --help it exits with code 2.
"""
from explain_mnist.cli import make_parser, not_implemented


def parser():
    p = make_parser(__doc__)
    p.add_argument("--epsilon", type=float, default=None,
                   help="free pixels range over an L-inf ball of this radius around the image (default: all of [0, 1])")
    p.add_argument("--order", choices=("sensitivity", "index"), default="sensitivity",
                   help="the order in which pixels are tried")
    p.add_argument("--smallest", action="store_true", help="a cardinality-minimal explanation (implicit hitting sets)")
    p.add_argument("--indices", default=None, metavar="A:B", help="a batch: test images A to B-1")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes for a batch")
    p.add_argument("--out-dir", default=None, help="folder of the per-image results of a batch")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="run the batch on this Dask cluster (needs dask.distributed)")
    return p


def main():
    not_implemented("min_explanation.py", "13, formal explanations", parser())


if __name__ == "__main__":
    main()
