import numpy as np
import pytest

import keras_dualsig as kd


def test_shapes_and_surgery():
    model = kd.small_cnn(10, (96, 96, 3))
    assert model.output.shape == (None, 10)
    assert model.get_layer("features").output.shape == (None, 12, 12, 128)
    dual = kd.dual_sigmoid(model)
    assert dual.feature_layer == "features"
    images = np.random.default_rng(0).random((2, 96, 96, 3), dtype=np.float32)
    np.testing.assert_allclose(model(images).numpy().sum(axis=1), 1.0, atol=1e-5)


def test_logits_option_and_bad_arguments():
    model = kd.small_cnn(3, (32, 32, 1), width=8, classifier_activation=None)
    assert model.get_layer("predictions").activation.__name__ == "linear"
    with pytest.raises(ValueError, match=r"argument `num_classes`"):
        kd.small_cnn(1)
    with pytest.raises(ValueError, match=r"argument `input_shape`"):
        kd.small_cnn(3, (32, 32))
