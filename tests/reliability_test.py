"""What the model surgery, the loss and the CAMs refuse, and what they support.

Each case was a silent failure (a wrong result with no error, or an error
that does not say what is wrong) before; each test fails on that code.
README, "What it refuses", lists the same cases.
"""

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid
from keras.ops import convert_to_numpy as to_numpy

import keras_dualsig as kd

L = keras.layers
SIZE = 8


def _classifier(head, name="tiny"):
    inputs = keras.Input((SIZE, SIZE, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    for layer in head:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def _images(n=4, seed=0):
    return np.random.default_rng(seed).random((n, SIZE, SIZE, 3), dtype=np.float32)


# ------------------------------------------------------------ model surgery


@pytest.mark.parametrize(
    "head, fragment",
    [
        ([L.Dense(1, activation="sigmoid")], "at least 2 classes"),
        ([L.Dense(1, activation="softmax")], "at least 2 classes"),
        ([L.Dense(3, activation="sigmoid")], "per-class sigmoids (multi-label)"),
        ([L.Dense(3), L.Activation("sigmoid")], "per-class sigmoids (multi-label)"),
        (
            [L.Dense(3), L.Lambda(lambda z: keras.ops.softmax(z), name="opaque")],
            "'opaque' (Lambda)",
        ),
        (
            [
                L.Lambda(lambda z: z * 2.0, name="scale"),
                L.Dense(3, activation="softmax"),
            ],
            "Lambda layer(s) ['scale']",
        ),
    ],
    ids=[
        "binary_unit",
        "one_class",
        "multi_label",
        "sigmoid_layer",
        "lambda_softmax",
        "lambda_inside",
    ],
)
def test_heads_the_surgery_does_not_fit_are_refused(head, fragment):
    # Before: accepted; a Lambda softmax gave a sigmoid of probabilities, the
    # others failed later or reported meaningless accuracies.
    with raises_invalid("model", fragment):
        kd.dual_sigmoid(_classifier(head))


def test_logits_and_softmax_layer_heads_are_accepted():
    for head in (
        [L.Dense(3)],
        [L.Dense(3), L.Softmax()],
        [L.Dense(3, activation="softmax")],
    ):
        dual = kd.dual_sigmoid(_classifier(head))
        assert dual.heads["softmax"].final_activation in ("linear", "softmax")


def test_multi_input_head_is_refused_with_the_reason():
    image = keras.Input((SIZE, SIZE, 3))
    extra = keras.Input((2,))
    x = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, name="features")(image))
    x = L.Concatenate(name="merge")([x, extra])
    model = keras.Model([image, extra], L.Dense(3, activation="softmax")(x))
    with raises_invalid("model", "'merge', which has several inputs"):
        kd.dual_sigmoid(model)


def test_cams_refuse_several_image_inputs():
    first, second = keras.Input((SIZE, SIZE, 3)), keras.Input((SIZE, SIZE, 3))
    x = L.Add()([L.Conv2D(4, 3)(first), L.Conv2D(4, 3)(second)])
    x = L.GlobalAveragePooling2D()(L.Conv2D(4, 1, name="features")(x))
    model = keras.Model([first, second], L.Dense(3, activation="softmax")(x))
    with raises_invalid("model", "one image input", "2 inputs"):
        kd.cams.GradCAM(model)


def _channels_first_classifier():
    # Channels-first feature map (B, c, h, w) read through a channels_first
    # pooling; TensorFlow's CPU kernels have no channels_first convolution,
    # so the layout comes from a Permute.
    inputs = keras.Input((SIZE, SIZE, 3))
    x = L.Conv2D(5, 3, padding="same", activation="relu", name="conv")(inputs)
    x = L.Permute((3, 1, 2), name="features")(x)
    x = L.GlobalAveragePooling2D(data_format="channels_first", name="gap")(x)
    return keras.Model(inputs, L.Dense(3, activation="softmax", name="fc")(x))


def test_channels_first_maps_are_read_in_their_layout():
    # Before: a (B, c, h, w) map was read as (B, h=c, w=h, c=w): wrong maps,
    # no error. Grad-CAM at the head input equals the same model's
    # channels_last map (the conv output) transposed.
    model = _channels_first_classifier()
    images = _images()
    first = kd.cams.GradCAM(model)(images, branch="softmax", resize=False)
    last = kd.cams.GradCAM(model, layer="conv")(images, branch="softmax", resize=False)
    assert first.shape == (4, SIZE, SIZE)
    np.testing.assert_allclose(first, last, atol=1e-5)


def test_inner_layer_of_unknown_layout_is_refused_in_a_channels_first_model():
    model = _channels_first_classifier()
    inputs = model.inputs[0]
    x = L.Activation("relu", name="act")(model.get_layer("features").output)
    x = L.GlobalAveragePooling2D(data_format="channels_first")(x)
    other = keras.Model(inputs, L.Dense(3, activation="softmax")(x))
    with raises_invalid("layer", "layout can be told"):
        kd.cams.GradCAM(other, layer="features")


# ------------------------------------------------------------------ labels


def _compiled_dual():
    dual = kd.dual_sigmoid(_classifier([L.Dense(3, activation="softmax")]))
    dual.compile(optimizer="sgd")
    return dual


@pytest.mark.parametrize(
    "labels, fragment",
    [
        (np.array([0, 1.5, 2, 1]), "labels including [1.5]"),
        (np.array([0, 1, 5, 1]), "class labels in [0, 3)"),
        (np.array([0, -1, 2, 1]), "class labels in [0, 3)"),
        (np.ones((4, 2)), "integer labels (batch,) or one-hot labels (batch, 3)"),
        (np.full((4, 3), 2.0), "one-hot (or soft) labels"),
    ],
    ids=["fractional", "too_large", "negative", "wrong_width", "not_one_hot"],
)
def test_bad_labels_are_refused_before_training(labels, fragment):
    # Before: fractional labels were rounded; out-of-range ones failed deep
    # in a graph error after training started.
    dual = _compiled_dual()
    weights = [to_numpy(v) for v in dual.trainable_weights]
    with raises_invalid("y", fragment):
        dual.fit(_images(), labels, epochs=1, verbose=0)
    for old, variable in zip(weights, dual.trainable_weights, strict=True):
        np.testing.assert_array_equal(to_numpy(variable), old)


def test_bad_validation_labels_are_refused():
    dual = _compiled_dual()
    with raises_invalid("validation_data", "class labels in [0, 3)"):
        dual.fit(
            _images(),
            np.array([0, 1, 2, 1]),
            validation_data=(_images(2, seed=1), np.array([0, 9])),
            epochs=1,
            verbose=0,
        )


def test_label_forms_can_change_between_fits():
    # Before: one-hot labels after an integer-label fit failed ("Cannot take
    # the length of shape with unknown rank").
    dual = _compiled_dual()
    images, labels = _images(), np.array([0, 1, 2, 1])
    integer = dual.evaluate(images, labels, verbose=0, return_dict=True)
    dual.fit(images, labels, epochs=1, verbose=0)
    dual.fit(images, np.eye(3)[labels], epochs=1, verbose=0)
    dual.fit(images, labels, epochs=1, verbose=0)
    one_hot = dual.evaluate(images, np.eye(3)[labels], verbose=0, return_dict=True)
    again = dual.evaluate(images, labels, verbose=0, return_dict=True)
    assert one_hot["loss"] == pytest.approx(again["loss"], rel=1e-6)
    assert integer["loss"] != pytest.approx(again["loss"], rel=1e-9)  # It trained.


def test_loss_refuses_fractional_labels():
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True)
    with raises_invalid("y_true", "labels including [0.5]"):
        loss(np.array([0.5, 1.0]), np.zeros((2, 3), "float32"))
