"""Decide whether every image in an L-inf box around an image (or a VNN-LIB property's box) keeps its class.

Prints the verdict (robust / not_robust / unknown); a not_robust verdict carries a counterexample inside the box
that the model itself re-classifies. Ctrl-C stops the search: the best bound proven so far is printed (and written
to --json, marked "interrupted"), exit code 130.
"""
from explain_mnist.cli import EXIT_INTERRUPTED, ProgressLine, check_common, make_parser, run, summary_stream
from explain_mnist.errors import UserError


def main():
    p = make_parser(__doc__, default_model="twoclass")
    p.add_argument("--epsilon", type=float, default=None, help="L-inf radius of the box (pixels clipped to [0, 1])")
    p.add_argument("--vnnlib", default=None, help="a VNN-LIB robustness property (its box and label) instead of "
                   "--index/--image and --epsilon")
    p.add_argument("--node-limit", type=int, default=200_000, help="branch-and-bound node budget before the MIP")
    args = p.parse_args()
    check_common(args)
    if args.vnnlib is None and args.epsilon is None:
        raise UserError("give --epsilon EPS (0 < EPS <= 1) or --vnnlib PROPERTY")
    if args.epsilon is not None and not 0 < args.epsilon <= 1:
        raise UserError(f"--epsilon must be in (0, 1], got {args.epsilon:g}")
    if args.vnnlib is not None and (args.epsilon is not None or args.index is not None or args.image is not None):
        raise UserError("--vnnlib gives the box and label itself; drop --epsilon, --index and --image")
    from explain_mnist.models import class_label
    from explain_mnist.verification import run_verify, save_outputs
    progress = ProgressLine()
    try:
        result = run_verify(args, progress=progress if progress.enabled else None)
    finally:
        progress.close()
    out = summary_stream(args)
    names = result["class_names"]
    if result["interrupted"]:
        save_outputs(args, result, figure=False)
        bound = result["lower_bound"]
        print(f"{result['input']}: {class_label(result['predicted'], names)}, INTERRUPTED after {result['nodes']} "
              f"nodes, {result['seconds']:.2f} s; best proven lower bound of the margin: "
              + ("none" if bound is None else f"{bound:.4g}") + " (not a proof either way)"
              + (f"; partial result written to {args.json}" if args.json and args.json != "-" else ""), file=out)
        return EXIT_INTERRUPTED
    save_outputs(args, result)
    proof = "proved" if not result["tolerance"] else f"proved up to the MIP's tolerance {result['tolerance']:.3g}"
    status = {"robust": f"ROBUST ({proof})", "not_robust": "NOT ROBUST (counterexample re-checked by the model)",
              "unknown": "UNKNOWN (not decided)"}[result["verdict"]]
    if result["stages"].get("mip_solver"):
        print(f"MIP solver: {result['stages']['mip_solver']}", file=out)
    print(f"{result['input']}: {class_label(result['predicted'], names)}, {status}; by {result['method']}, "
          f"{result['nodes']} nodes, {result['seconds']:.2f} s to solve, {result['wall_seconds']:.1f} s in all",
          file=out)
    if result["verdict"] == "not_robust":
        print(f"the counterexample is {class_label(result['counterexample_class'], names)}", file=out)
    if result["message"]:
        print(result["message"], file=out)
    if result["verdict"] == "unknown" and result["lower_bound"] is not None and "lower bound" not in result["message"]:
        print(f"best proven lower bound of the margin: {result['lower_bound']:.4g} (not a proof either way)", file=out)

if __name__ == "__main__":
    run(main)
