"""No silent failure in the training scripts: every case here used to be
accepted and give a plausible-looking wrong result, or fail later with a
misleading error; each is now refused (or recovered from) with the reason.

Groups: numeric and other flags validated at start; flags silently ignored;
resuming with flags that change the result; truncated checkpoint, state and
model files; the wrong kind of model; odd inputs.
"""

import json
import math
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.errors import raises_invalid
from tensorflow.python.framework import config as tf_config

import keras_dualsig as kd
from training import (
    checkpoints,
    evaluate,
    optimizer,
    quickstart,
    train_classifier,
    train_sigmoid,
)
from training import flags as flags_lib


@pytest.fixture(scope="module")
def data(tiny_data):
    # 16 images of 32 px per run: one step per epoch.
    return {**tiny_data, "image_size": 32, "max_images": 16}


def _classifier_flags(data, model_dir, **overrides):
    return flags_lib.config(
        train_classifier.SPEC,
        **{**data, "model_dir": str(model_dir), "epochs": 1, **overrides},
    )


def _sigmoid_flags(data, model_dir, **overrides):
    values = {k: v for k, v in data.items() if k != "image_size"}
    return flags_lib.config(
        train_sigmoid.SPEC,
        **{**values, "model_dir": str(model_dir), "epochs": 1, **overrides},
    )


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A classifier (stage 1) and a dual model (stage 2), one epoch each."""
    classifier = train_classifier.run(
        _classifier_flags(data, tmp_path_factory.mktemp("classifier"))
    )
    dual = train_sigmoid.run(
        _sigmoid_flags(
            {**data, "classifier": classifier["model_path"]},
            tmp_path_factory.mktemp("sigmoid"),
        )
    )
    tf_config.disable_op_determinism()
    return {"classifier": classifier["model_path"], "dual": dual["model_path"]}


def _evaluate_flags(data, model, output_dir, **overrides):
    values = {k: v for k, v in data.items() if k != "image_size"}
    return flags_lib.config(
        evaluate.SPEC,
        **{
            **values,
            "model": model,
            "output_dir": str(output_dir),
            "methods": ["gradcam"],
            "num_figure_images": 2,
            **overrides,
        },
    )


# ----------------------------------------------------------------------------
# Flags validated at start: the flag, the value and what is accepted.

BAD_TRAINING_FLAGS = [
    ("learning_rate", 0.0, "a finite float > 0"),
    ("learning_rate", -0.1, "a finite float > 0"),
    ("learning_rate", math.nan, "a finite float > 0"),
    ("learning_rate", math.inf, "a finite float > 0"),
    ("batch_size", 0, "an int >= 1"),
    ("batch_size", -16, "an int >= 1"),
    ("image_size", 0, "None (unset) or an int >= 1"),
    ("image_size", -32, "None (unset) or an int >= 1"),
    ("max_images", 0, "None (unset) or an int >= 1"),
    ("max_images", -5, "None (unset) or an int >= 1"),
    ("epochs", 0, "an int >= 1"),
    ("epochs", -1, "an int >= 1"),
    ("decay_every", -2, "an int >= 0"),
    ("decay_factor", 0.0, "a finite float > 0 and <= 1"),
    ("decay_factor", 1.5, "a finite float > 0 and <= 1"),
    ("momentum", 1.0, "a finite float >= 0 and < 1"),
    ("momentum", -0.5, "a finite float >= 0 and < 1"),
    ("weight_decay", -1e-4, "a finite float >= 0"),
    ("dropout", 1.0, "a finite float >= 0 and < 1"),
    ("num_classes", 1, "None (unset) or an int >= 2"),
    ("seed", -1, "an int >= 0 and <= 4294967295"),
    ("seed", 2**32, "an int >= 0 and <= 4294967295"),
    ("batch_size", 16.0, "an int"),
    ("augment", "no", "True or False"),
]


@pytest.mark.parametrize("name, value, expected", BAD_TRAINING_FLAGS)
def test_bad_training_flags_are_refused_at_start(data, tmp_path, name, value, expected):
    with raises_invalid(name, expected):
        train_classifier.run(_classifier_flags(data, tmp_path, **{name: value}))
    assert not (tmp_path / "checkpoint").exists()


def test_bad_flags_of_the_other_scripts(data, trained, tmp_path):
    flags = {**data, "classifier": trained["classifier"]}
    with raises_invalid("shuffle_buffer", "an int >= 1"):
        train_sigmoid.run(_sigmoid_flags(flags, tmp_path, shuffle_buffer=0))
    with raises_invalid("max_images", "an int >= 1"):
        train_sigmoid.run(_sigmoid_flags(flags, tmp_path, max_images=0))
    for name, value in (("scorecam_channels", 0), ("num_figure_images", -1)):
        with raises_invalid(name, "an int >="):
            evaluate.run(
                _evaluate_flags(data, trained["dual"], tmp_path, **{name: value})
            )
    for methods in ([], ["gradcam", "gradcam"], ["nope"]):
        with raises_invalid("methods", "distinct CAM names among cam, gradcam"):
            evaluate.run(
                _evaluate_flags(data, trained["dual"], tmp_path, methods=methods)
            )
    # A string is not a list of names (it used to be read letter by letter).
    with raises_invalid("methods", "a list of strings"):
        evaluate.run(_evaluate_flags(data, trained["dual"], tmp_path, methods="cam"))
    with raises_invalid("classifier_epochs", "an int >= 1"):
        quickstart.run(flags_lib.config(quickstart.SPEC, classifier_epochs=0))
    assert not os.listdir(tmp_path)


# ----------------------------------------------------------------------------
# Flags that the chosen settings used to ignore silently.

IGNORED_FLAGS = [
    ("num_cpu_devices", {"num_cpu_devices": 2}, "unless --strategy=mirrored"),
    ("tpu", {"tpu": "grpc://10.0.0.1:8470"}, "unless --strategy=tpu"),
    ("pretrained", {"pretrained": True}, "False with --arch=small_cnn"),
    (
        "metadata_root",
        {"dataset": "cluttered_mnist", "metadata_root": "elsewhere"},
        "None with --dataset=cluttered_mnist",
    ),
    (
        "num_classes",
        {"dataset": "cluttered_mnist", "metadata_root": None, "num_classes": 7},
        "None or 10 with --dataset=cluttered_mnist",
    ),
    ("embedded_size", {"embedded_size": "small"}, "unless --dataset=cluttered_mnist"),
]


@pytest.mark.parametrize("name, overrides, expected", IGNORED_FLAGS)
def test_flags_the_settings_ignore_are_refused(
    data, tmp_path, name, overrides, expected
):
    values = {**data, "data_root": str(tmp_path / "none"), **overrides}
    with raises_invalid(name, expected):
        train_classifier.run(_classifier_flags(values, tmp_path / "run"))
    assert not (tmp_path / "run").exists() and not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("model_dir", "runs/other", "evaluate does not use it"),
        ("jit_compile", True, "evaluate does not use it"),
        # mirrored and multi_worker evaluate (tests/training/evaluate_shards_test.py).
        ("strategy", "tpu", "run shards"),
    ],
)
def test_evaluate_refuses_the_shared_flags_it_does_not_use(
    data, trained, tmp_path, name, value, expected
):
    with raises_invalid(name, expected):
        evaluate.run(_evaluate_flags(data, trained["dual"], tmp_path, **{name: value}))


# ----------------------------------------------------------------------------
# Resuming: flags that change the result must match the checkpoint's.


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """Classifier runs of 1 and 2 epochs (one checkpoint each), run once."""
    folder = tmp_path_factory.mktemp("runs")
    results = {
        epochs: train_classifier.run(
            _classifier_flags(data, folder / f"epochs{epochs}", epochs=epochs)
        )
        for epochs in (1, 2)
    }
    tf_config.disable_op_determinism()
    return folder, results


def _interrupted(runs, tmp_path, epochs=1):
    """A copy of the run stopped after `epochs` epochs (1 or 2)."""
    model_dir = tmp_path / "run"
    shutil.copytree(runs[0] / f"epochs{epochs}", model_dir)
    return model_dir


def test_resume_refuses_changed_flags_and_lists_them(data, runs, tmp_path):
    model_dir = _interrupted(runs, tmp_path)
    # The first differing flag (in --help order) is named; all are listed.
    with raises_invalid(
        "image_size",
        "--image_size: 32 -> 48",
        "--learning_rate: 0.01 -> 0.1",
        "--allow_flag_changes",
    ) as error:
        train_classifier.run(
            _classifier_flags(
                data, model_dir, epochs=2, learning_rate=0.1, image_size=48
            )
        )
    # Flags that do not change the result are not listed.
    assert "--epochs" not in str(error.value)
    state = json.loads((model_dir / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1  # Nothing was trained.
    assert state["script"] == "train_classifier"
    assert state["flags"]["learning_rate"] == 0.01


def test_resume_allows_flags_that_do_not_change_the_result(data, runs, tmp_path):
    model_dir = _interrupted(runs, tmp_path)
    # More epochs (without decay) and another spelling of --model_dir.
    result = train_classifier.run(
        _classifier_flags(data, str(model_dir) + "/", epochs=2)
    )
    assert len(result["history"]["loss"]) == 2


def test_allow_flag_changes_continues_and_logs_the_differences(
    data, runs, tmp_path, caplog
):
    model_dir = _interrupted(runs, tmp_path)
    result = train_classifier.run(
        _classifier_flags(
            data, model_dir, epochs=2, batch_size=8, allow_flag_changes=True
        )
    )
    assert len(result["history"]["loss"]) == 2
    assert "--batch_size: 16 -> 8" in caplog.text
    # The next checkpoint records the flags it was trained with.
    state = json.loads((model_dir / "checkpoint" / "state.json").read_text())
    assert state["flags"]["batch_size"] == 8


def test_resume_refuses_fewer_epochs_than_done(data, runs, tmp_path):
    model_dir = _interrupted(runs, tmp_path, epochs=2)
    with raises_invalid("epochs", "at least the 2 epochs the checkpoint"):
        train_classifier.run(_classifier_flags(data, model_dir, epochs=1))


def test_resume_refuses_more_epochs_that_move_the_decay(data, tmp_path):
    # Run for 3 epochs decaying after epoch 2, stopped after 1: asking for 5
    # epochs adds a decay after epoch 4 that the saved schedule lacks.
    model_dir = tmp_path / "run"
    train_classifier.run(_classifier_flags(data, model_dir, epochs=1, decay_every=2))
    with raises_invalid("epochs", "--epochs: 1 -> 5"):
        train_classifier.run(
            _classifier_flags(data, model_dir, epochs=5, decay_every=2)
        )


def test_resume_refuses_another_scripts_checkpoint(data, runs, trained, tmp_path):
    model_dir = _interrupted(runs, tmp_path)
    flags = {**data, "classifier": trained["classifier"]}
    for cache_features in (False, True):
        with raises_invalid("model_dir", "a folder of train_sigmoid runs"):
            train_sigmoid.run(
                _sigmoid_flags(
                    flags, model_dir, epochs=2, cache_features=cache_features
                )
            )


def test_resume_refuses_another_classifier(data, trained, tmp_path):
    flags = {**data, "classifier": trained["classifier"]}
    train_sigmoid.run(_sigmoid_flags(flags, tmp_path / "run"))
    # Another classifier, same architecture: the checkpoint's would be used.
    other = tmp_path / "other"
    other.mkdir()
    keras.models.load_model(trained["classifier"]).save(other / "classifier.keras")
    info = os.path.join(os.path.dirname(trained["classifier"]), "model_info.json")
    (other / "model_info.json").write_text(open(info).read())
    with raises_invalid("classifier", "--classifier:"):
        train_sigmoid.run(
            _sigmoid_flags(
                {**flags, "classifier": str(other / "classifier.keras")},
                tmp_path / "run",
                epochs=2,
            )
        )


# ----------------------------------------------------------------------------
# Truncated files: reported by name; the previous checkpoint takes over.


def _final_weights(path):
    return keras.models.load_model(path).get_weights()


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("victim", ["state.json", "epoch-0002.keras"])
def test_truncated_checkpoint_falls_back_to_the_previous_one(
    data, runs, tmp_path, caplog, victim
):
    model_dir = _interrupted(runs, tmp_path, epochs=2)
    straight = runs[1][2]
    checkpoint = model_dir / "checkpoint"
    _truncate(checkpoint / victim)
    resumed = train_classifier.run(_classifier_flags(data, model_dir, epochs=2))

    assert str(checkpoint / victim) in caplog.text
    assert "state.previous.json (epoch 1)" in caplog.text
    # Epoch 2 trained again from epoch 1: the uninterrupted weights.
    for a, b in zip(
        _final_weights(straight["model_path"]),
        _final_weights(resumed["model_path"]),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert resumed["history"]["loss"] == straight["history"]["loss"]


def test_no_readable_checkpoint_is_an_error_naming_the_files(data, runs, tmp_path):
    model_dir = _interrupted(runs, tmp_path, epochs=2)
    checkpoint = model_dir / "checkpoint"
    _truncate(checkpoint / "state.json")
    _truncate(checkpoint / "epoch-0001.keras")
    with raises_invalid(
        "model_dir",
        "state.json is truncated or not JSON",
        "epoch-0001.keras is truncated",
        "to start afresh",
    ):
        train_classifier.run(_classifier_flags(data, model_dir, epochs=3))


def test_truncated_or_missing_model_files(data, trained, tmp_path):
    broken = tmp_path / "classifier"
    broken.mkdir()
    (broken / "classifier.keras").write_bytes(
        open(trained["classifier"], "rb").read()[:1000]
    )
    info = os.path.join(os.path.dirname(trained["classifier"]), "model_info.json")
    (broken / "model_info.json").write_text(open(info).read())
    flags = {**data, "classifier": str(broken / "classifier.keras")}
    with raises_invalid("classifier", "classifier.keras is truncated"):
        train_sigmoid.run(_sigmoid_flags(flags, tmp_path / "run"))
    # model_info.json names the preprocessing: truncated or missing, refused.
    (broken / "model_info.json").write_text('{"arch": "sma')
    with raises_invalid("classifier", "model_info.json is truncated or not JSON"):
        train_sigmoid.run(_sigmoid_flags(flags, tmp_path / "run"))
    (broken / "model_info.json").unlink()
    with raises_invalid("classifier", "naming its input preprocessing"):
        train_sigmoid.run(_sigmoid_flags(flags, tmp_path / "run"))


def test_a_diverged_epoch_is_not_checkpointed(tmp_path):
    callback = checkpoints.Checkpoint(str(tmp_path))
    callback.on_epoch_begin(0)
    with pytest.raises(FloatingPointError, match="diverged in epoch 1"):
        callback.on_epoch_end(0, {"loss": float("nan"), "accuracy": 0.1})
    assert not (tmp_path / "checkpoint").exists()


def test_a_diverged_run_stops_with_the_reason(data, tmp_path):
    # Every step of the epoch (64 images, 4 steps) counts in its mean loss.
    with pytest.raises(FloatingPointError, match="lower --learning_rate"):
        train_classifier.run(
            _classifier_flags(data, tmp_path, max_images=None, learning_rate=1e30)
        )
    assert not (tmp_path / "checkpoint").exists()
    assert not (tmp_path / "classifier.keras").exists()


# ----------------------------------------------------------------------------
# The wrong kind of model, and models that disagree with the data.


def test_dual_model_as_classifier_is_refused(data, trained, tmp_path):
    flags = {**data, "classifier": trained["dual"]}
    with raises_invalid("classifier", "a plain classifier", "DualSigmoidModel"):
        train_sigmoid.run(_sigmoid_flags(flags, tmp_path))


def test_plain_classifier_in_evaluate_is_refused(data, trained, tmp_path):
    with raises_invalid("model", "a dual-sigmoid model", "classifier.keras"):
        evaluate.run(_evaluate_flags(data, trained["classifier"], tmp_path))


def test_image_size_must_be_the_models(data, trained, tmp_path):
    # The model reads 32 px images: --image_size=48 used to be overridden by
    # model_info.json without a word.
    with raises_invalid("image_size", "None or 32, the input size of"):
        evaluate.run(_evaluate_flags(data, trained["dual"], tmp_path, image_size=48))
    flags = {**data, "classifier": trained["classifier"]}
    with raises_invalid("image_size", "None or 32"):
        train_sigmoid.run(_sigmoid_flags(flags, tmp_path, image_size=48))


def test_evaluate_refuses_a_model_with_other_classes(data, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    dual = kd.dual_sigmoid(kd.small_cnn(12, (32, 32, 3), width=8))
    dual.save(model_dir / "dual_sigmoid.keras")
    (model_dir / "model_info.json").write_text('{"arch": "small_cnn"}')
    with raises_invalid("model", "the dataset's 10 classes", "with 12 classes"):
        evaluate.run(
            _evaluate_flags(data, str(model_dir / "dual_sigmoid.keras"), tmp_path)
        )


# ----------------------------------------------------------------------------
# Odd inputs.


def test_no_figures_is_a_valid_request(data, trained, tmp_path):
    results = evaluate.run(
        _evaluate_flags(data, trained["dual"], tmp_path, num_figure_images=0)
    )
    assert results["num_images"] == 16
    assert (tmp_path / "report.md").exists()
    assert not (tmp_path / "figures").exists()


def test_step_decay_starts_with_the_epoch_after_the_drop():
    flags = flags_lib.config(
        train_classifier.SPEC,
        learning_rate=0.1,
        decay_every=2,
        decay_factor=0.5,
        epochs=5,
    )
    schedule = optimizer.learning_rate(flags, steps_per_epoch=3)
    # Keras calls the schedule with the number of steps done: steps 0-5 are
    # epochs 1-2 (0.1), 6-11 epochs 3-4 (0.05), from 12 epoch 5 (0.025).
    expected = [0.1] * 6 + [0.05] * 6 + [0.025] * 3
    actual = [float(schedule(step)) for step in range(15)]
    np.testing.assert_allclose(actual, expected, rtol=1e-7)


def test_model_info_records_the_data_it_was_trained_on(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((16, 32, 32, 3), dtype=np.float32)
    train = tf.data.Dataset.from_tensor_slices((images, rng.integers(0, 3, 16)))
    flags = flags_lib.config(
        train_classifier.SPEC, model_dir=str(tmp_path), epochs=1, batch_size=16
    )
    train_classifier.run(
        flags,
        datasets_override={"train": train, "num_classes": 3, "image_size": 32},
    )
    info = json.loads((tmp_path / "model_info.json").read_text())
    # Not the --dataset default (cluttered_mnist) the override replaced.
    assert info["dataset"] == "custom"
