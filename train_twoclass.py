"""Train the two-class (digit 1 vs 3) 784-20-1 network and save it to models/twoclass.keras with a model card."""
from explain_mnist.cli import run


def main():
    from explain_mnist.training import training_main
    training_main("twoclass", default_epochs=5, description=__doc__)


if __name__ == "__main__":
    run(main)
