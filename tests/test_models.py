"""Model names and cards: what a class stands for, a folder given as a model, cards without local paths."""
import json

import pytest

from explain_mnist import models
from explain_mnist.errors import UserError


def test_class_label_names_the_digit():
    assert models.class_label(0, ["1", "3"]) == "class 0 (digit 1)"
    assert models.class_label(7, [str(d) for d in range(10)]) == "class 7 (digit 7)"
    assert models.class_label(1, ["cat", "dog"]) == "class 1 (dog)"
    assert models.class_label(2, None) == "class 2"
    assert models.class_label(None, ["1", "3"]) == "-"
    assert models.class_name(1, ["1", "3"]) == "digit 3" and models.class_name(0, None) is None


def test_label_in_classes():
    assert models.label_in_classes(7, ["1", "3"], 2) is False
    assert models.label_in_classes(3, ["1", "3"], 2) is True
    assert models.label_in_classes(7, None, 10) is True
    assert models.label_in_classes(7, None, 2) is None


def test_shipped_cards_name_the_class_digits(twoclass_net, multiclass_net):
    assert twoclass_net.meta["class_names"] == ["1", "3"]
    assert multiclass_net.meta["class_names"] == [str(d) for d in range(10)]


def test_folder_given_as_model_is_called_a_folder(tmp_path):
    (tmp_path / "net.keras").mkdir()
    for path in (tmp_path, tmp_path / "net.keras"):
        with pytest.raises(UserError, match="is a folder, not a model file"):
            models.load_network(str(path))
    with pytest.raises(UserError, match="not found"):
        models.load_network(str(tmp_path / "absent.keras"))


@pytest.mark.parametrize("name", models.SHIPPED_MODELS)
def test_model_cards_hold_no_local_paths(name):
    card = json.loads((models.MODELS_DIR / f"{name}.json").read_text())
    assert card["data_source"].startswith("MNIST training set (60,000 images, IDX files)")
    assert "/" not in card["data_source"] and "shared" not in card["data_source"]
    assert ("digits 1 vs 3" in card["data_source"]) == (name == "twoclass")
