"""Tests of training/models.py: model_info.json, loading the right kind of model."""

import keras
import pytest
from helpers.errors import raises_invalid

import keras_dualsig as kd
from training import models


def test_model_info_round_trip(tmp_path):
    models.write_model_info(str(tmp_path), arch="small_cnn", image_size=32)
    info = models.read_model_info(str(tmp_path / "model.keras"))
    assert info == {"arch": "small_cnn", "image_size": 32}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    classifier = kd.small_cnn(10, (32, 32, 3), width=8)
    classifier.save(folder / "classifier.keras")
    kd.dual_sigmoid(classifier).save(folder / "dual.keras")
    return folder


def test_load_checks_the_kind_of_model(saved):
    classifier = models.load_classifier(str(saved / "classifier.keras"))
    assert not isinstance(classifier, kd.DualSigmoidModel)
    dual = models.load_dual(str(saved / "dual.keras"))
    assert isinstance(dual, kd.DualSigmoidModel)
    assert models.num_classes(classifier) == models.num_classes(dual) == 10
    assert models.input_size(dual, "dual.keras", None) == 32
    assert models.input_size(classifier, "classifier.keras", 32) == 32


def test_input_size_of_a_flexible_model():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    assert models.input_size(model, "m.keras", None) is None
    assert models.input_size(model, "m.keras", 40) == 40
    with raises_invalid("image_size", "None or 32"):
        models.input_size(kd.small_cnn(3, (32, 32, 3)), "m.keras", 40)
