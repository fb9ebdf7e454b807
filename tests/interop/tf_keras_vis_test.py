"""tf-keras-vis reads the sigmoid branch through keras_dualsig.interop."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_dualsig as kd
from keras_dualsig import cams
from keras_dualsig.interop import tf_keras_vis as kd_vis

pytest.importorskip("tf_keras_vis")
from tf_keras_vis.gradcam import Gradcam  # noqa: E402
from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus  # noqa: E402
from tf_keras_vis.layercam import Layercam  # noqa: E402
from tf_keras_vis.scorecam import Scorecam  # noqa: E402

# tf-keras-vis divides by (max - min + 1e-7), kd.cams min-max is exact: after
# rescaling tf-keras-vis's maps to a maximum of 1 both agree to float32
# rounding (max abs difference seen: about 1e-7).
ATOL = 1e-5
AT_FEATURES = {
    "penultimate_layer": kd_vis.FEATURES,
    "seek_penultimate_conv_layer": False,
}


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(5, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    dual = kd.dual_sigmoid(model, seed=0)
    # Branch weights unlike the softmax head's, with both signs.
    dual.sigmoid_head[-1].set_weights(
        [np.random.default_rng(1).normal(0, 1, (16, 5)), np.zeros(5)]
    )
    images = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    return model, dual, images, np.array([0, 1, 2, 4])


def _rescaled(maps):
    maps = np.asarray(maps)  # tf-keras-vis returns tensors with expand_cam=False.
    return maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-30)


def test_gradcam_agrees_on_sigmoid_branch(setup):
    _, dual, images, class_index = setup
    theirs = Gradcam(kd_vis.branch_model(dual))(
        kd_vis.LogitScore(class_index), images, expand_cam=False, **AT_FEATURES
    )
    ours = cams.GradCAM(dual)(images, class_index, positive_weights=False, resize=False)
    assert ours.shape == theirs.shape == (4, 7, 7)
    np.testing.assert_allclose(_rescaled(theirs), ours, atol=ATOL)
    # The clamp (the paper's default) is what differs from tf-keras-vis.
    clamped = cams.GradCAM(dual)(images, class_index, resize=False)
    assert np.abs(clamped - ours).max() > 0.01


def test_gradcam_through_model_modifier_and_inner_layer(setup):
    _, dual, images, class_index = setup
    visualizer = Gradcam(dual, model_modifier=kd_vis.branch_modifier(), clone=False)
    theirs = visualizer(
        kd_vis.LogitScore(class_index),
        images,
        penultimate_layer="c1",
        seek_penultimate_conv_layer=False,
        expand_cam=False,
    )
    ours = cams.GradCAM(dual, layer="c1")(
        images, class_index, positive_weights=False, resize=False
    )
    np.testing.assert_allclose(_rescaled(theirs), ours, atol=ATOL)


def test_layercam_and_scorecam_agree(setup):
    _, dual, images, class_index = setup
    model = kd_vis.branch_model(dual)
    theirs = Layercam(model)(
        kd_vis.LogitScore(class_index), images, expand_cam=False, **AT_FEATURES
    )
    ours = cams.LayerCAM(dual)(images, class_index, resize=False)
    np.testing.assert_allclose(_rescaled(theirs), ours, atol=ATOL)
    # Scorecam weights are exp(logit), proportional to the softmax over
    # channels that kd.cams.ScoreCAM (and pytorch-grad-cam) use.
    theirs = Scorecam(model)(
        kd_vis.LogitScore(class_index, from_softmax=True),
        images,
        expand_cam=False,
        batch_size=32,
        **AT_FEATURES,
    )
    ours = cams.ScoreCAM(dual)(images, class_index, resize=False)
    np.testing.assert_allclose(_rescaled(theirs), ours, atol=ATOL)


def test_gradcam_plus_plus_runs(setup):
    _, dual, images, class_index = setup
    maps = GradcamPlusPlus(kd_vis.branch_model(dual))(
        kd_vis.LogitScore(class_index), images, **AT_FEATURES
    )
    assert maps.shape == (4, 32, 32) and np.isfinite(maps).all()


def test_softmax_branch_of_plain_classifier(setup):
    model, _, images, class_index = setup
    theirs = Gradcam(kd_vis.branch_model(model, "softmax"))(
        kd_vis.LogitScore(class_index), images, expand_cam=False, **AT_FEATURES
    )
    ours = cams.GradCAM(model)(images, class_index, branch="softmax", resize=False)
    np.testing.assert_allclose(_rescaled(theirs), ours, atol=ATOL)


def test_branch_model_outputs_logits_and_zero(setup):
    _, dual, images, _ = setup
    out = kd_vis.branch_model(dual)([images]).numpy()
    np.testing.assert_allclose(out[:, :5], dual.logits(images)["sigmoid"], atol=1e-6)
    np.testing.assert_array_equal(out[:, 5], 0.0)
    score = kd_vis.LogitScore(2, from_softmax=True)
    probs = np.exp(out) / np.exp(out).sum(-1, keepdims=True)
    np.testing.assert_allclose(score(probs), np.exp(out[:, 2]), rtol=1e-5)


def test_errors(setup):
    model, dual, _, _ = setup
    with pytest.raises(ValueError, match="argument `branch`"):
        kd_vis.branch_model(model, "sigmoid")
    with pytest.raises(ValueError, match="argument `branch`"):
        kd_vis.branch_model(dual, "logits")
    with pytest.raises(ValueError, match="argument `class_index`"):
        kd_vis.LogitScore(1.5)
    with pytest.raises(ValueError, match="argument `class_index`"):
        kd_vis.LogitScore(7)(np.zeros((2, 6), "float32"))


def test_import_does_not_need_tf_keras_vis():
    code = (
        "import sys, keras_dualsig.interop.tf_keras_vis;"
        "print('tf_keras_vis' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_positive_weights_modifier_gives_the_clamped_maps(setup):
    # Before: the tf-keras-vis route gave unclamped sigmoid-branch maps, the
    # package's default clamps, and nothing offered the clamp there.
    _, dual, images, class_index = setup
    theirs = Gradcam(kd_vis.branch_model(dual))(
        kd_vis.LogitScore(class_index),
        images,
        expand_cam=False,
        gradient_modifier=kd_vis.positive_weights,
        **AT_FEATURES,
    )
    ours = cams.GradCAM(dual)(images, class_index, resize=False)  # Clamped.
    np.testing.assert_allclose(_rescaled(theirs), ours, atol=ATOL)


def test_from_softmax_must_be_a_bool():
    with pytest.raises(ValueError, match="argument `from_softmax`.*'no'"):
        kd_vis.LogitScore([0], from_softmax="no")
