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
from training import common  # noqa: E402

SPEC = [
    *common.COMMON,
    *common.OPTIMIZER_FLAGS,
    common.flag("classifier", None, "Path of the trained classifier (.keras)."),
    common.flag("epochs", 3, "Training epochs."),
    common.flag("init", "fresh", "Branch initialisation.", choices=("fresh", "copy")),
    common.flag("augment", True, "Random resized crop and flip (not with caching)."),
    common.flag("cache_features", False, "Train the branch on cached trunk features."),
    common.flag("shuffle_buffer", 4096, "Shuffle buffer without augmentation."),
]
DUAL_FILE = "dual_sigmoid.keras"


def define_flags():
    common.define_flags(SPEC)


def fixed_order_epochs(elements, flags, first_epoch, steps):
    """Batches of epochs [first_epoch, epochs) from a fixed-order dataset.

    Each epoch is shuffled with a seed derived from (seed, epoch) alone: the
    cached and uncached paths, fed the same fixed order, see identical batches,
    and a resumed run sees the batches of an uninterrupted one.

    Returns:
        A dataset of (x, labels) batches, or None when no epoch is left.
    """
    dataset = None
    for epoch in range(first_epoch, flags.epochs):
        part = elements.shuffle(
            flags.shuffle_buffer,
            seed=common.epoch_seed(flags, epoch),
            reshuffle_each_iteration=False,
        )
        part = part.batch(flags.batch_size, drop_remainder=True).take(steps)
        dataset = part if dataset is None else dataset.concatenate(part)
    return None if dataset is None else dataset.prefetch(tf.data.AUTOTUNE)


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


def run(flags, datasets_override=None):
    """Trains the sigmoid branch; returns {"history", "model_path", ...}.

    Resumes from `<model_dir>/checkpoint` when a previous run left one.

    Args:
        flags: namespace with the SPEC flags (see `common.config`).
        datasets_override: optional dict with "train" (fixed-order, unbatched
            (images, labels) elements), "num_examples", "validation" (batches
            or None), "num_classes", "image_size"; replaces the loaders.

    Returns:
        dict: "history" (per-epoch logs of all epochs, with "epoch_seconds"),
        "model_path", "model" (the trained DualSigmoidModel), "feature_seconds"
        (time of the feature extraction with --cache_features, else 0).
    """
    if not flags.classifier:
        raise ValueError(
            "Invalid value received for argument `classifier`. Expected the path "
            "of the stage-1 .keras file. Received: classifier=None"
        )
    strategy = common.setup(flags)
    chief = common.is_chief(strategy)
    info = common.read_model_info(flags.classifier)
    if datasets_override:
        source = {
            "num_classes": datasets_override["num_classes"],
            "image_size": datasets_override["image_size"],
        }
        num_examples = datasets_override["num_examples"]
    else:
        source = common.dataset_source(flags)
        source["image_size"] = info.get("image_size", source["image_size"])
        num_examples = common.num_examples(source, "train", flags)
    source["arch"] = info.get("arch")
    augment = flags.augment and not flags.cache_features
    if flags.cache_features and flags.augment:
        logging.info("--cache_features: augmentation off (features are computed once).")
    steps = num_examples // flags.batch_size
    if steps == 0:
        raise ValueError(
            f"--batch_size={flags.batch_size} exceeds the training split's size "
            f"({num_examples} images)."
        )

    def fixed_order_images():
        if datasets_override:
            return datasets_override["train"]
        # In memory after the first epoch (the uncached path reads it each epoch).
        elements = common.load_split(
            source,
            "train",
            flags,
            shuffle=False,
            as_supervised=True,
            cache=not flags.cache_features,
        )
        return common._take(elements, flags)

    with strategy.scope():
        classifier = keras.models.load_model(flags.classifier)
        if classifier.output.shape[-1] != source["num_classes"]:
            raise ValueError(
                f"The classifier {flags.classifier} has "
                f"{classifier.output.shape[-1]} classes, the dataset "
                f"{source['num_classes']}."
            )
        dual = kd.dual_sigmoid(classifier, init=flags.init, seed=flags.seed)
        restored = common.restore(flags.model_dir, strategy)
        first_epoch, history = 0, {}
        if restored:
            trained, first_epoch, history = restored
            if isinstance(trained, kd.DualSigmoidModel) == flags.cache_features:
                raise ValueError(
                    f"The checkpoint in {flags.model_dir} was written "
                    f"{'without' if flags.cache_features else 'with'} "
                    "--cache_features; resume with the same flags or use another "
                    "--model_dir."
                )
        elif flags.cache_features:
            trained = dual.branch_model()
            trained.compile(
                optimizer=common.sgd(flags, steps),
                loss=kd.ClassBalancedBinaryCrossentropy(),
                metrics=[
                    keras.metrics.SparseCategoricalAccuracy(name="sigmoid_accuracy")
                ],
                jit_compile=flags.jit_compile,
            )
        else:
            trained = dual
            dual.compile(
                optimizer=common.sgd(flags, steps), jit_compile=flags.jit_compile
            )

    feature_seconds = 0.0
    train = validation = None
    if first_epoch >= flags.epochs:
        pass  # Finished already: only the outputs are (re)written below.
    elif flags.cache_features:
        start = time.perf_counter()
        logging.info("Computing trunk features of %d images once.", num_examples)
        batches = fixed_order_images().batch(flags.batch_size)
        features, labels = extract_features(dual.trunk, batches, num_examples, chief)
        elements = tf.data.Dataset.from_tensor_slices((features, labels))
        train = fixed_order_epochs(elements, flags, first_epoch, steps)
        if datasets_override:
            images = datasets_override.get("validation")
        else:
            images = common.validation_dataset(source, flags)
        if images is not None:
            count = (
                None if datasets_override else common.num_examples(source, "val", flags)
            )
            validation = tf.data.Dataset.from_tensor_slices(
                extract_features(dual.trunk, images, count, chief)
            ).batch(flags.batch_size)
        feature_seconds = time.perf_counter() - start
    else:
        if augment and not datasets_override:
            train, steps = common.epoch_datasets(source, flags, first_epoch, True)
        else:
            train = fixed_order_epochs(fixed_order_images(), flags, first_epoch, steps)
        if datasets_override:
            validation = datasets_override.get("validation")
        else:
            validation = common.validation_dataset(source, flags)

    logging.info(
        "Training the sigmoid branch of %s (%s)%s: %d steps/epoch, %s",
        classifier.name,
        ", ".join(layer.name for layer in dual.sigmoid_head),
        " on cached features" if flags.cache_features else "",
        steps,
        common.epoch_range(first_epoch, flags.epochs),
    )
    with strategy.scope():
        history = common.fit(
            trained, flags, train, steps, validation, first_epoch, history, chief
        )
        if flags.cache_features:
            _copy_branch(trained, dual)
        else:
            dual = trained
        path = os.path.join(flags.model_dir, DUAL_FILE)
        common.save_model(dual, path, chief)
    if chief:
        common.write_model_info(
            flags.model_dir,
            arch=info.get("arch"),
            image_size=source["image_size"],
            num_classes=dual.num_classes,
            dataset=info.get("dataset"),
        )
        common.write_json(os.path.join(flags.model_dir, common.HISTORY_FILE), history)
        logging.info("Saved %s", path)
    return {
        "history": history,
        "model_path": path,
        "model": dual,
        "feature_seconds": feature_seconds,
    }


def main(argv):
    del argv
    metrics = run(common.from_absl(SPEC))
    logging.info("Final loss: %.4f", metrics["history"].get("loss", [float("nan")])[-1])


if __name__ == "__main__":
    define_flags()
    app.run(main)
