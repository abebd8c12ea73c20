"""Train the simple CNN: Conv2D(10, 3x3) -> AveragePooling2D(6x6) -> ReLU -> Dense(10) and save it to models/cnn_simple.keras with a model card."""
from explain_mnist.cli import run


def main():
    from explain_mnist.training import training_main
    training_main("cnn_simple", default_epochs=30, description=__doc__)


if __name__ == "__main__":
    run(main)
