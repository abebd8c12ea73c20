"""Model names and cards: what a class stands for, a folder given as a model, cards without local paths; the cache
of converted networks."""
import json
import shutil

import numpy as np
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


def _cache_files(folder):
    return sorted(folder.glob("network-*.pkl"))


def _refuse_reading(monkeypatch):
    """Make the Keras reader fail, so that a load can only come from the cache."""
    from explain_mnist import keras_io

    def refuse(path):
        raise AssertionError("the Keras reader was called")
    monkeypatch.setattr(keras_io, "read_keras", refuse)


def test_cached_network_computes_what_the_file_computes(tmp_path, monkeypatch, test_set):
    from explain_mnist.keras_io import read_keras
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    model = tmp_path / "m.keras"
    shutil.copy(models.MODELS_DIR / "multiclass.keras", model)
    shutil.copy(models.MODELS_DIR / "multiclass.json", model.with_suffix(".json"))
    fresh = read_keras(model)
    models.load_network(str(model))
    assert len(_cache_files(tmp_path / "cache")) == 1
    _refuse_reading(monkeypatch)
    cached = models.load_network(str(model))
    X = test_set.x[:50].astype(np.float64)
    assert np.array_equal(cached.forward(X), fresh.forward(X))
    assert cached.meta["path"] == str(model) and cached.meta["class_names"] == [str(d) for d in range(10)]


def test_cache_is_keyed_by_the_file_content(tmp_path, monkeypatch):
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    model = tmp_path / "m.keras"
    shutil.copy(models.MODELS_DIR / "twoclass.keras", model)
    assert models.load_network(str(model)).n_outputs == 1
    shutil.copy(models.MODELS_DIR / "multiclass.keras", model)
    assert models.load_network(str(model)).n_outputs == 10
    assert len(_cache_files(tmp_path / "cache")) == 2


def test_unreadable_or_unwritable_cache_is_a_miss(tmp_path, monkeypatch):
    model = tmp_path / "m.keras"
    shutil.copy(models.MODELS_DIR / "twoclass.keras", model)
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "cache"))
    models.load_network(str(model))
    (entry,) = _cache_files(tmp_path / "cache")
    entry.write_bytes(b"not a pickle")
    assert models.load_network(str(model)).n_outputs == 1
    assert entry.read_bytes() != b"not a pickle"          # rewritten by the fresh conversion
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv(models.CACHE_ENV, str(tmp_path / "a_file"))
    assert models.load_network(str(model)).n_outputs == 1
    monkeypatch.setenv(models.CACHE_ENV, "off")
    assert models.network_cache_dir() is None
    _refuse_reading(monkeypatch)
    with pytest.raises(AssertionError, match="Keras reader was called"):
        models.load_network(str(model))
