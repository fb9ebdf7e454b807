r"""Stage 2: attach the sigmoid branch to a trained classifier and train it.

`kd.dual_sigmoid` clones the classifier's head into a per-class sigmoid branch;
only the branch trains, with class-balanced binary cross-entropy (docs/method.md, "Loss").
SGD with Nesterov momentum and step decay by default. Checkpoints every epoch;
re-running the same command resumes.

  python -m training.train_sigmoid --classifier=runs/cls/classifier.keras \
      --model_dir=runs/sig --epochs=3 --learning_rate=0.01

With --cache_features the frozen trunk runs once over the training split and
the branch trains on its cached features (augmentation is then off; same
weights as the uncached path with --noaugment, much faster per epoch).
"""

import os
import time

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, logging  # noqa: E402

import keras_dualsig as kd  # noqa: E402
from keras_dualsig._errors import invalid  # noqa: E402
from training import (  # noqa: E402
    checkpoints,
    data,
    devices,
    files,
    fitting,
    models,
    optimizer,
)
from training import flags as flags_lib  # noqa: E402
from training.flags import flag  # noqa: E402

SCRIPT = "train_sigmoid"
SPEC = [
    *flags_lib.COMMON,
    *optimizer.FLAGS,
    *checkpoints.FLAGS,
    flag("classifier", None, "Path of the trained classifier (.keras).", path=True),
    flag(
        "epochs",
        3,
        "Training epochs.",
        minimum=1,
        compared=optimizer.schedule_changed,
    ),
    flag("init", "fresh", "Branch initialisation.", choices=("fresh", "copy")),
    flag("augment", True, "Random resized crop and flip (not with caching)."),
    flag("cache_features", False, "Train the branch on cached trunk features."),
    flag("shuffle_buffer", 4096, "Shuffle buffer without augmentation.", minimum=1),
]
DUAL_FILE = "dual_sigmoid.keras"


def define_flags():
    flags_lib.define(SPEC)


def run(flags, datasets_override=None):
    """Trains the sigmoid branch; returns {"history", "model_path", ...}.

    Resumes from `<model_dir>/checkpoint` when a previous run left one.

    Args:
        flags: namespace with the SPEC flags (see `flags.config`).
        datasets_override: optional `data.DatasetsOverride` (or a dict of its
            fields): "train", "validation", "num_classes", "image_size"
            replace the loaders.

    Returns:
        dict: "history" (per-epoch logs of all epochs, with "epoch_seconds"),
        "model_path", "model" (the trained DualSigmoidModel), "feature_seconds"
        (time of the feature extraction with --cache_features, else 0).
    """
    check_flags(flags)
    info = models.read_model_info(flags.classifier, "classifier")
    strategy = devices.setup(flags)
    chief = devices.is_chief(strategy)
    if flags.cache_features and flags.augment:
        logging.info("--cache_features: augmentation off (features are computed once).")
    with strategy.scope():
        classifier = models.load_classifier(flags.classifier)
        source = data.resolve_for(
            classifier, flags.classifier, info, flags, datasets_override, "classifier"
        )
        steps = data.steps_per_epoch(source, flags)
        dual = kd.dual_sigmoid(classifier, init=flags.init, seed=flags.seed)
        trained, first_epoch, history = _resume_or_compile(dual, flags, steps, strategy)
    train, validation, feature_seconds = _training_data(
        dual, source, flags, first_epoch, steps, chief
    )
    logging.info(
        "Training the sigmoid branch of %s (%s)%s: %d steps/epoch, %s",
        dual.name,
        ", ".join(layer.name for layer in dual.sigmoid_head),
        " on cached features" if flags.cache_features else "",
        steps,
        data.epoch_range(first_epoch, flags.epochs),
    )
    with strategy.scope():
        history = fitting.fit(
            trained,
            flags,
            train,
            steps,
            validation,
            first_epoch,
            history,
            chief,
            checkpoints.record(flags, SPEC, SCRIPT),
        )
        if flags.cache_features:
            _copy_branch(trained, dual)
        else:
            dual = trained
        path = os.path.join(flags.model_dir, DUAL_FILE)
        checkpoints.save_model(dual, path, chief)
    if chief:
        _write_outputs(flags, source, info, dual, history)
        logging.info("Saved %s", path)
    return {
        "history": history,
        "model_path": path,
        "model": dual,
        "feature_seconds": feature_seconds,
    }


def check_flags(flags):
    """Validates every flag at start (types, ranges, combinations).

    Raises:
        ValueError: (Keras template) naming the flag, its value and what is
            accepted.
    """
    flags_lib.validate(flags, SPEC)
    if not flags.classifier:
        raise invalid(
            "classifier", "the path of the stage-1 .keras file", flags.classifier
        )
    devices.check_flags(flags)
    data.check_flags(flags)


def _resume_or_compile(dual, flags, steps, strategy):
    """(model to train, finished epochs, history): the checkpoint's, or new.

    With --cache_features the model trained is the branch alone (features ->
    sigmoid probabilities); otherwise the whole dual model.
    """
    restored = checkpoints.resume(flags, SPEC, SCRIPT, strategy)
    if restored:
        trained, first_epoch, history = restored
        if isinstance(trained, kd.DualSigmoidModel) == flags.cache_features:
            written = "without" if flags.cache_features else "with"
            raise invalid(
                "cache_features",
                f"{not flags.cache_features}: the checkpoint in {flags.model_dir} "
                f"was written {written} --cache_features (or use another "
                "--model_dir)",
                flags.cache_features,
            )
        return trained, first_epoch, history
    if flags.cache_features:
        trained = dual.branch_model()
        trained.compile(
            optimizer=optimizer.sgd(flags, steps),
            loss=kd.ClassBalancedBinaryCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="sigmoid_accuracy")],
            jit_compile=flags.jit_compile,
        )
        return trained, 0, {}
    dual.compile(optimizer=optimizer.sgd(flags, steps), jit_compile=flags.jit_compile)
    return dual, 0, {}


def _training_data(dual, source, flags, first_epoch, steps, chief):
    """(training batches, validation batches, feature extraction seconds).

    Training batches are None when every epoch is done already.
    """
    if first_epoch >= flags.epochs:
        return None, None, 0.0  # Finished: only the outputs are (re)written.
    validation = data.validation_batches(source, flags)
    if not flags.cache_features:
        if flags.augment and source.override is None:
            train, _ = data.epoch_datasets(source, flags, first_epoch, True)
        else:
            train = data.fixed_order_epochs(
                _fixed_order_images(source, flags),
                flags,
                first_epoch,
                steps,
                flags.shuffle_buffer,
            )
        return train, validation, 0.0
    start = time.perf_counter()
    num_examples = source.count("train", flags.max_images)
    logging.info("Computing trunk features of %d images once.", num_examples)
    batches = _fixed_order_images(source, flags).batch(flags.batch_size)
    features, labels = extract_features(dual.trunk, batches, num_examples, chief)
    elements = tf.data.Dataset.from_tensor_slices((features, labels))
    train = data.fixed_order_epochs(
        elements, flags, first_epoch, steps, flags.shuffle_buffer
    )
    if validation is not None:
        count = source.count("val", flags.max_images)
        validation = tf.data.Dataset.from_tensor_slices(
            extract_features(dual.trunk, validation, count, chief)
        ).batch(flags.batch_size)
    return train, validation, time.perf_counter() - start


def _fixed_order_images(source, flags):
    """The training split's (image, label) elements in file order."""
    # In memory after the first epoch (the uncached path reads it each epoch).
    return source.elements(
        "train",
        flags.max_images,
        shuffle=False,
        as_supervised=True,
        cache=not flags.cache_features,
    )


def extract_features(trunk, images, num_examples, verbose=True):
    """Runs the frozen trunk once over a dataset of (images, labels) batches.

    Args:
        trunk: the frozen feature extractor (`DualSigmoidModel.trunk`).
        images: dataset of (images, labels) batches, in a fixed order.
        num_examples: number of images, for the progress bar.
        verbose: show a progress bar.

    Returns:
        (features (N, h, w, c), labels (N,)) NumPy arrays, in dataset order.
    """
    forward = tf.function(lambda x: trunk(x, training=False), reduce_retracing=True)
    features, labels = [], []
    progress = keras.utils.Progbar(
        num_examples, unit_name="image", verbose=1 if verbose else 0
    )
    for batch_images, batch_labels in images:
        features.append(np.asarray(forward(batch_images)))
        labels.append(np.asarray(batch_labels))
        progress.add(len(batch_labels))
    return np.concatenate(features), np.concatenate(labels)


def _copy_branch(source, dual):
    """Copies branch weights by layer name (branch model -> dual)."""
    for layer in dual.sigmoid_head:
        layer.set_weights(source.get_layer(layer.name).get_weights())


def _write_outputs(flags, source, info, dual, history):
    """model_info.json (how the dual model reads images) and history.json."""
    models.write_model_info(
        flags.model_dir,
        arch=info.get("arch"),
        image_size=source.image_size,
        num_classes=dual.num_classes,
        dataset=info.get("dataset"),
    )
    files.write_history(flags.model_dir, history)


def main(argv):
    del argv
    metrics = run(flags_lib.from_absl(SPEC))
    logging.info("Final loss: %.4f", metrics["history"].get("loss", [float("nan")])[-1])


if __name__ == "__main__":
    define_flags()
    app.run(main)
