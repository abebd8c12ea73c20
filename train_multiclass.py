"""Train the 784-10-10-10 multiclass network and save it to models/multiclass.keras with a model card."""
from explain_mnist.cli import run


def main():
    from explain_mnist.training import training_main
    training_main("multiclass", default_epochs=10, description=__doc__)


if __name__ == "__main__":
    run(main)
