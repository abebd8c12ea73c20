"""Decide whether every image in an L-inf box around an image (or a VNN-LIB property's box) keeps its class.

Prints the verdict (robust / not_robust / unknown); a not_robust verdict carries a counterexample inside the box
that the model itself re-classifies.
"""
from explain_mnist.cli import check_common, make_parser, run
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
    from explain_mnist.verification import run_verify, save_outputs
    result = run_verify(args)
    save_outputs(args, result)
    status = {"robust": "ROBUST (proved)", "not_robust": "NOT ROBUST (counterexample re-checked by the model)",
              "unknown": "UNKNOWN (not decided)"}[result["verdict"]]
    if result["stages"].get("mip_solver"):
        print(f"MIP solver: {result['stages']['mip_solver']}")
    print(f"{result['input']}: class {result['predicted']}, {status}; by {result['method']}, "
          f"{result['nodes']} nodes, {result['seconds']:.2f} s")
    if result["message"]:
        print(result["message"])
    if result["verdict"] == "unknown" and result["lower_bound"] is not None:
        print(f"best proven lower bound of the margin: {result['lower_bound']:.4g} (not a proof either way)")


if __name__ == "__main__":
    run(main)
