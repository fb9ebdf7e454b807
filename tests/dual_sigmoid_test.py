import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.models import run_model_saving_test

import keras_dualsig as kd

SIZE = 16
NUM_CLASSES = 4


def small_cnn(activation="softmax", dropout=0.3, num_classes=NUM_CLASSES):
    """Conv -> BN -> Conv -> GAP -> [Dropout] -> Dense classifier."""
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(
        x
    )
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="drop")(x)
    outputs = keras.layers.Dense(
        num_classes, activation=activation, name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((n, SIZE, SIZE, 3), dtype=np.float32)
    labels = rng.integers(0, NUM_CLASSES, n)
    return images, labels


def branch_names(dual):
    return [layer.name for layer in dual.sigmoid_head]


def test_outputs_and_attributes():
    model = small_cnn()
    images, _ = data(8)
    dual = kd.dual_sigmoid(model)
    assert isinstance(dual, kd.DualSigmoidModel)
    assert dual.feature_layer == "last_conv"
    assert dual.num_classes == NUM_CLASSES
    assert branch_names(dual) == ["gap_sigmoid", "drop_sigmoid", "predictions_sigmoid"]
    outputs = dual(images)
    assert set(outputs) == {"softmax", "sigmoid"}
    assert outputs["sigmoid"].dtype == tf.float32
    assert outputs["sigmoid"].shape == (8, NUM_CLASSES)
    sig = np.asarray(outputs["sigmoid"])
    assert np.all((sig > 0) & (sig < 1))
    np.testing.assert_array_equal(np.asarray(outputs["softmax"]), model(images))


def test_logits_are_the_pre_activation_scores():
    model = small_cnn()
    images, _ = data(4)
    dual = kd.dual_sigmoid(model)
    logits = dual.logits(images)
    # Independent computation: features -> GAP -> Dense in NumPy.
    feature_model = keras.Model(model.input, model.get_layer("last_conv").output)
    pooled = np.asarray(feature_model(images)).mean(axis=(1, 2))
    kernel, bias = model.get_layer("predictions").get_weights()
    np.testing.assert_allclose(logits["softmax"], pooled @ kernel + bias, atol=1e-5)
    branch_kernel, branch_bias = dual.get_layer("predictions_sigmoid").get_weights()
    np.testing.assert_allclose(
        logits["sigmoid"], pooled @ branch_kernel + branch_bias, atol=1e-5
    )
    np.testing.assert_allclose(
        dual(images)["sigmoid"], 1 / (1 + np.exp(-logits["sigmoid"])), atol=1e-6
    )


def test_freezing_and_fit_change_nothing_original():
    model = small_cnn()
    images, labels = data(32)
    before = np.asarray(model(images))
    dual = kd.dual_sigmoid(model)
    np.testing.assert_allclose(
        dual.predict(images, verbose=0)["softmax"], before, atol=1e-6
    )
    branch_vars = {id(v) for layer in dual.sigmoid_head for v in layer.weights}
    assert dual.trainable_weights
    assert all(id(v) in branch_vars for v in dual.trainable_weights)
    assert all(
        v.path.split("/")[0].endswith("_sigmoid") for v in dual.trainable_weights
    )
    frozen = {v.path: np.array(v) for v in dual.non_trainable_weights}
    assert any("moving_mean" in path for path in frozen)
    trained_before = [np.array(v) for v in dual.trainable_weights]

    dual.compile(optimizer=keras.optimizers.SGD(0.5))
    dual.fit(images, labels, epochs=2, batch_size=8, verbose=0)

    for v in dual.non_trainable_weights:
        np.testing.assert_array_equal(np.array(v), frozen[v.path], err_msg=v.path)
    assert any(
        not np.array_equal(np.array(v), old)
        for v, old in zip(dual.trainable_weights, trained_before, strict=True)
    )
    np.testing.assert_allclose(
        dual.predict(images, verbose=0)["softmax"], before, atol=1e-6
    )
    np.testing.assert_allclose(model(images), before, atol=1e-6)


def test_training_improves_sigmoid_branch():
    # Separable data: the class is which colour channel is brightest.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 96)
    images = rng.random((96, SIZE, SIZE, 3), dtype=np.float32) * 0.2
    images[np.arange(96), :, :, labels] += 0.8
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=30, verbose=0)
    dual = kd.dual_sigmoid(model)
    dual.compile(optimizer=keras.optimizers.Adam(0.05))
    history = dual.fit(images, labels, epochs=20, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert history.history["sigmoid_accuracy"][-1] > 0.9


@pytest.mark.parametrize("label_format", ["int", "int_column", "one_hot", "dataset"])
def test_fit_label_formats(label_format):
    dual = kd.dual_sigmoid(small_cnn())
    images, labels = data(16)
    dual.compile(optimizer="sgd")
    if label_format == "int_column":
        labels = labels[:, None]
    elif label_format == "one_hot":
        labels = keras.utils.to_categorical(labels, NUM_CLASSES)
    if label_format == "dataset":
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
        history = dual.fit(dataset, epochs=1, verbose=0)
    else:
        history = dual.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "softmax_accuracy", "sigmoid_accuracy"}
    assert np.isfinite(history.history["loss"][0])


def test_default_loss_equals_class_balanced_bce():
    dual = kd.dual_sigmoid(small_cnn(dropout=0))
    images, labels = data(8)
    dual.compile(optimizer="sgd")
    reported = dual.evaluate(images, labels, batch_size=8, verbose=0, return_dict=True)
    logits = np.asarray(dual.logits(images)["sigmoid"], np.float64)
    expected = np.mean(
        [
            (
                (NUM_CLASSES - 1) * np.logaddexp(0, -z[y])
                + np.logaddexp(0, np.delete(z, y)).sum()
            )
            / NUM_CLASSES
            for z, y in zip(logits, labels, strict=True)
        ]
    )
    assert reported["loss"] == pytest.approx(expected, rel=1e-5)
    softmax_acc = np.mean(np.argmax(dual(images)["softmax"], -1) == labels)
    assert reported["softmax_accuracy"] == pytest.approx(softmax_acc)


def test_keras_arguments_keep_working():
    dual = kd.dual_sigmoid(small_cnn())
    images, labels = data(32)
    seen = []
    callback = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: seen.append(logs)
    )
    dual.compile(optimizer="sgd")
    history = dual.fit(
        images,
        labels,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[callback],
        validation_data=(images[:8], labels[:8]),
        class_weight={0: 1.0, 1: 2.0, 2: 1.0, 3: 0.5},
    )
    assert len(seen) == 2
    assert "val_sigmoid_accuracy" in history.history
    predictions = dual.predict(images, verbose=0)
    assert predictions["sigmoid"].shape == (32, NUM_CLASSES)


def test_class_weight_changes_the_loss():
    images, labels = data(16)
    losses = []
    for class_weight in (None, {0: 10.0, 1: 1.0, 2: 1.0, 3: 1.0}):
        keras.utils.set_random_seed(0)
        dual = kd.dual_sigmoid(small_cnn(dropout=0), seed=0)
        dual.compile(optimizer="sgd")
        history = dual.fit(
            images,
            labels,
            batch_size=16,
            epochs=1,
            verbose=0,
            class_weight=class_weight,
        )
        losses.append(history.history["loss"][0])
    assert losses[0] != pytest.approx(losses[1])


def test_user_loss_and_metrics():
    dual = kd.dual_sigmoid(small_cnn())
    images, labels = data(16)
    dual.compile(
        optimizer="sgd",
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=["accuracy", keras.metrics.AUC(name="auc")],
    )
    history = dual.fit(
        images, keras.utils.to_categorical(labels, NUM_CLASSES), epochs=1, verbose=0
    )
    assert {"sigmoid_accuracy", "sigmoid_auc"} <= set(history.history)
    dual.compile(
        optimizer="sgd",
        loss={"sigmoid": kd.ClassBalancedBinaryCrossentropy(pos_weight=1.0)},
        metrics={"softmax": ["accuracy"]},
    )
    history = dual.fit(images, labels, epochs=1, verbose=0)
    assert "softmax_accuracy" in history.history


def test_init_fresh_statistics():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(256, 1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers[-2:]:
        layer.set_weights([w + 1.0 for w in layer.get_weights()])
    dual = kd.dual_sigmoid(model, seed=7)
    kernel, bias = dual.get_layer("fc_sigmoid").get_weights()
    assert kernel.shape == (256, 64)
    assert np.std(kernel) == pytest.approx(0.01, rel=0.05)
    assert abs(np.mean(kernel)) < 0.001
    np.testing.assert_array_equal(bias, 0.0)


def test_init_fresh_conv_head_is_glorot_uniform():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(128, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(64, 1, name="class_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Softmax()(x)
    dual = kd.dual_sigmoid(keras.Model(inputs, outputs))
    kernel, bias = dual.get_layer("class_conv_sigmoid").get_weights()
    limit = np.sqrt(6.0 / (128 + 64))
    assert np.abs(kernel).max() <= limit
    assert np.std(kernel) == pytest.approx(limit / np.sqrt(3.0), rel=0.05)
    np.testing.assert_array_equal(bias, 0.0)


def test_init_copy():
    model = small_cnn()
    images, _ = data(4)
    dual = kd.dual_sigmoid(model, init="copy")
    for source, clone in zip(
        model.get_layer("predictions").get_weights(),
        dual.get_layer("predictions_sigmoid").get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(source, clone)
    logits = dual.logits(images)
    np.testing.assert_allclose(logits["sigmoid"], logits["softmax"], atol=1e-6)


def test_seed_makes_fresh_init_reproducible():
    model = small_cnn()
    first = (
        kd.dual_sigmoid(model, seed=3).get_layer("predictions_sigmoid").get_weights()
    )
    second = (
        kd.dual_sigmoid(model, seed=3).get_layer("predictions_sigmoid").get_weights()
    )
    np.testing.assert_array_equal(first[0], second[0])


def test_trainable_flag_never_unfreezes_the_original():
    dual = kd.dual_sigmoid(small_cnn())
    count = len(dual.trainable_weights)
    dual.trainable = False
    assert not dual.trainable_weights
    dual.trainable = True
    assert len(dual.trainable_weights) == count
    assert all(
        v.path.split("/")[0].endswith("_sigmoid") for v in dual.trainable_weights
    )


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision(policy):
    keras.config.set_dtype_policy(policy)
    model = small_cnn()
    images, labels = data(16)
    before = np.asarray(model(images))
    dual = kd.dual_sigmoid(model)
    outputs = dual(images)
    assert outputs["sigmoid"].dtype == tf.float32
    np.testing.assert_array_equal(np.asarray(outputs["softmax"]), before)
    dual.compile(optimizer="sgd")
    history = dual.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    np.testing.assert_array_equal(np.asarray(dual(images)["softmax"]), before)


def test_save_and_load_round_trip(tmp_path):
    images, labels = data(16)
    dual = kd.dual_sigmoid(small_cnn(dropout=0))
    dual.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    dual.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
    loaded = run_model_saving_test(dual, images, tmp_path)
    assert loaded.feature_layer == dual.feature_layer
    assert branch_names(loaded) == branch_names(dual)
    assert [v.path for v in loaded.trainable_weights] == [
        v.path for v in dual.trainable_weights
    ]
    # Training goes on from the same optimizer state (momentum included).
    for model in (dual, loaded):
        model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(dual.trainable_weights, loaded.trainable_weights, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-6)


def test_bad_input_messages():
    with pytest.raises(ValueError, match=r"argument `model`. Expected a keras.Model"):
        kd.dual_sigmoid("resnet")
    # Ends in a rank-4 tensor.
    inputs = keras.Input((SIZE, SIZE, 3))
    spatial = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs), name="spatial")
    with pytest.raises(ValueError, match=r"argument `model`.*\(batch, num_classes\)"):
        kd.dual_sigmoid(spatial)
    # Rank 2 but no spatial map and pooling before the weights.
    vector_in = keras.Input((10,))
    mlp = keras.Model(vector_in, keras.layers.Dense(3, activation="softmax")(vector_in))
    with pytest.raises(ValueError, match=r"argument `model`.*no classifier head found"):
        kd.dual_sigmoid(mlp)
    # Several outputs.
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    two = keras.Model(inputs, [keras.layers.Dense(3)(x), keras.layers.Dense(2)(x)])
    with pytest.raises(ValueError, match=r"argument `model`.*single-output.*2 outputs"):
        kd.dual_sigmoid(two)
    model = small_cnn()
    with pytest.raises(ValueError, match=r"argument `head_start`.*head_start='nope'"):
        kd.dual_sigmoid(model, head_start="nope")
    with pytest.raises(ValueError, match=r"argument `head_start`.*rank-4"):
        kd.dual_sigmoid(model, head_start="predictions")
    with pytest.raises(ValueError, match=r"argument `init`.*init='random'"):
        kd.dual_sigmoid(model, init="random")
    dual = kd.dual_sigmoid(model)
    with pytest.raises(ValueError, match=r"argument `model`.*already has a sigmoid"):
        kd.dual_sigmoid(dual)


def test_head_start_matches_auto_detection():
    model = small_cnn()
    auto = kd.dual_sigmoid(model)
    named = kd.dual_sigmoid(model, head_start="gap")
    assert named.feature_layer == auto.feature_layer
    assert branch_names(named) == branch_names(auto)
    # Starting the head earlier moves the feature layer back.
    earlier = kd.dual_sigmoid(model, head_start="last_conv")
    assert branch_names(earlier)[0] == "last_conv_sigmoid"
    assert earlier.feature_layer == "bn"
    images, _ = data(4)
    np.testing.assert_array_equal(np.asarray(earlier(images)["softmax"]), model(images))


def test_branch_model_shares_weights_and_matches():
    dual = kd.dual_sigmoid(small_cnn())
    images, labels = data(16)
    branch = dual.branch_model()
    features = dual.trunk(images)
    np.testing.assert_allclose(branch(features), dual(images)["sigmoid"], atol=1e-6)
    assert {id(v) for v in branch.trainable_weights} == {
        id(v) for v in dual.trainable_weights
    }
    branch.compile(
        optimizer=keras.optimizers.SGD(0.5), loss=kd.ClassBalancedBinaryCrossentropy()
    )
    branch.fit(np.asarray(features), labels, epochs=1, verbose=0)
    np.testing.assert_allclose(branch(features), dual(images)["sigmoid"], atol=1e-6)


FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_loads_a_file_saved_by_version_0_1(tmp_path):
    # Written by keras_dualsig 0.1.0 (tests/fixtures/make_v0_1_fixture.py):
    # the head layers were stored as lists with a separate logits mode.
    loaded = keras.models.load_model(
        os.path.join(FIXTURES, "dual_sigmoid_v0_1.keras"), safe_mode=True
    )
    recorded = np.load(os.path.join(FIXTURES, "dual_sigmoid_v0_1.npz"))
    images = recorded["images"]
    assert isinstance(loaded, kd.DualSigmoidModel)
    assert loaded.feature_layer == "bn" and loaded.num_classes == 3
    outputs = loaded.predict(images, verbose=0)
    for key in ("softmax", "sigmoid"):
        np.testing.assert_array_equal(outputs[key], recorded[key])
    logits = loaded.logits(images)
    for key in ("softmax", "sigmoid"):
        np.testing.assert_allclose(
            np.asarray(logits[key]), recorded[f"{key}_logits"], atol=1e-6
        )
    np.testing.assert_allclose(
        kd.cams.GradCAM(loaded)(images), recorded["gradcam"], atol=1e-5
    )
    # Saved again, it is in today's format and still round-trips.
    run_model_saving_test(loaded, images, tmp_path)
