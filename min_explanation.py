"""Compute a provably minimal set of pixels that forces the model's prediction (a formal explanation).

Every image that agrees with the input on the explanation's pixels (the other pixels anywhere in [0, 1], or within
--epsilon of the input) keeps the predicted class, proved by the verifier; freeing any one pixel of it admits an
image of another class (its witness, re-classified by the model itself and saved beside the JSON as .npz).
--smallest: the smallest such set (implicit hitting sets). --indices A:B: a batch, one result per image under
--out-dir, resumable, in --jobs processes or on a Dask cluster.
"""
from explain_mnist.cli import check_common, make_parser, run, summary_stream


def parser():
    p = make_parser(__doc__)
    p.add_argument("--epsilon", type=float, default=None,
                   help="free pixels range over an L-inf ball of this radius around the image (default: all of [0, 1])")
    p.add_argument("--order", choices=("sensitivity", "index"), default="sensitivity",
                   help="the order in which pixels are tried")
    p.add_argument("--smallest", action="store_true", help="a cardinality-minimal explanation (implicit hitting sets)")
    p.add_argument("--indices", default=None, metavar="A:B", help="a batch: test images A to B-1")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes for a batch")
    p.add_argument("--out-dir", default=None, help="folder of the per-image results of a batch "
                   "(default: results/explanations_<model>)")
    p.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="run the batch on this Dask cluster (needs dask.distributed)")
    return p


def main():
    args = parser().parse_args()
    from explain_mnist.explanation_run import check_arguments
    check_arguments(args)
    check_common(args)
    out = summary_stream(args)
    if args.indices is not None:
        from explain_mnist.explanation_run import run_batch
        summary = run_batch(args)
        size, seconds = summary["size"], summary["seconds"]
        print(f"{summary['indices'][1] - summary['indices'][0]} images ({summary['computed']} computed, "
              f"{summary['skipped']} already done) in {summary['out_dir']}: sizes median {size['median']:g} "
              f"(min {size['min']:g}, max {size['max']:g}), seconds per image median {seconds['median']:.2f} "
              f"(max {seconds['max']:.2f}); statuses "
              + ", ".join(f"{k} {v}" for k, v in sorted(summary["statuses"].items()))
              + f"; batch wall time {summary['wall_seconds_batch']:.1f} s", file=out)
        if summary["figure"]:
            print(f"figure: {summary['figure']}", file=out)
        return
    from explain_mnist.explanation_run import describe, run_one
    result = run_one(args)
    print(describe(result), file=out)
    if result["message"]:
        print(result["message"], file=out)
    print(f"{result['wall_seconds']:.1f} s in all", file=out)


if __name__ == "__main__":
    run(main)
