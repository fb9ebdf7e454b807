r"""Stage 1: train the softmax classifier (the baseline).

Fine-tunes a keras.applications backbone (ImageNet weights with --pretrained)
or trains the built-in small CNN on any dataset `kd.datasets.load_wsol` reads.
Checkpoints every epoch; re-running the same command resumes.

  python -m training.train_classifier --model_dir=runs/cls --epochs=6
  python -m training.train_classifier --dataset=CUB --arch=ResNet50 --pretrained \
      --data_root=dataset/CUB --metadata_root=metadata/CUB --model_dir=runs/cub
"""

import os

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
from absl import app, logging  # noqa: E402

import keras_dualsig as kd  # noqa: E402
from keras_dualsig._errors import invalid  # noqa: E402
from training import (  # noqa: E402
    checkpoints,
    data,
    devices,
    files,
    fitting,
    keras_hub_archs,
    models,
    optimizer,
)
from training import flags as flags_lib  # noqa: E402
from training.flags import flag  # noqa: E402

SCRIPT = "train_classifier"
SPEC = [
    *flags_lib.COMMON,
    *optimizer.FLAGS,
    *checkpoints.FLAGS,
    flag(
        "arch",
        "small_cnn",
        "small_cnn, a keras.applications name (ResNet50, ...), vit_tiny (a small "
        "keras-hub ViT, offline) or keras_hub:<preset> (downloaded).",
    ),
    flag("pretrained", False, "Start from ImageNet weights (downloads them)."),
    flag(
        "epochs",
        6,
        "Training epochs.",
        minimum=1,
        compared=optimizer.schedule_changed,
    ),
    flag("augment", True, "Random resized crop and flip."),
    flag(
        "dropout",
        0.3,
        "Dropout before the classifier.",
        minimum=0,
        maximum=1,
        open_maximum=True,
    ),
]
CLASSIFIER_FILE = "classifier.keras"


def define_flags():
    flags_lib.define(SPEC)


def build_classifier(arch, num_classes, image_size, pretrained=False, dropout=0.3):
    """The small CNN, a keras-hub model, or keras.applications + GAP -> Dense.

    keras-hub: `vit_tiny` (offline) or `keras_hub:<preset>` (see
    training/keras_hub_archs.py).
    """
    if arch == "small_cnn":
        return kd.small_cnn(num_classes, (image_size, image_size, 3), dropout=dropout)
    if keras_hub_archs.is_keras_hub(arch):
        return keras_hub_archs.build(
            arch, num_classes, image_size, pretrained=pretrained, dropout=dropout
        )
    constructor = getattr(keras.applications, arch, None)
    if constructor is None:
        raise invalid(
            "arch",
            "'small_cnn', 'vit_tiny', 'keras_hub:<preset>' or a keras.applications "
            "model name such as 'ResNet50'",
            arch,
        )
    try:
        backbone = constructor(
            include_top=False,
            weights="imagenet" if pretrained else None,
            input_shape=(image_size, image_size, 3),
        )
    except Exception as err:  # Download failures surface as many error types.
        raise RuntimeError(
            f"Could not load ImageNet weights for {arch} (no network?): {err}. "
            "Run without --pretrained to train from scratch, or place the weights "
            "file in ~/.keras/models/."
        ) from err
    inputs = keras.Input((image_size, image_size, 3))
    x = backbone(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    head = keras.layers.Dense(num_classes, activation="softmax", name="predictions")
    return keras.Model(inputs, head(x), name=f"{arch.lower()}_classifier")


def run(flags, datasets_override=None):
    """Trains the classifier; returns {"val_accuracy", "history", "model_path"}.

    Resumes from `<model_dir>/checkpoint` when a previous run left one.

    Args:
        flags: namespace with the SPEC flags (see `flags.config`).
        datasets_override: optional `data.DatasetsOverride` (or a dict of its
            fields): "train", "validation", "num_classes", "image_size"
            replace the loaders.

    Returns:
        dict: "val_accuracy" (last epoch, NaN without validation), "history"
        (per-epoch logs of all epochs, with "epoch_seconds"), "model_path".
    """
    check_flags(flags)
    strategy = devices.setup(flags)
    chief = devices.is_chief(strategy)
    source = data.resolve(flags, datasets_override, arch=flags.arch)
    with strategy.scope():
        restored = checkpoints.resume(flags, SPEC, SCRIPT, strategy)
        if restored:
            _check_fits(restored.model, source, flags)
        model, first_epoch, history = restored or (_build(flags, source), 0, {})
        train, steps = _training_batches(source, flags, first_epoch)
        if not restored:
            _compile(model, flags, steps)
        logging.info(
            "Training %s: %d classes, %d steps/epoch, %s",
            model.name,
            source.num_classes,
            steps,
            data.epoch_range(first_epoch, flags.epochs),
        )
        validation = data.validation_batches(source, flags)
        history = fitting.fit(
            model,
            flags,
            train,
            steps,
            validation,
            first_epoch,
            history,
            chief,
            checkpoints.record(flags, SPEC, SCRIPT),
        )
        path = os.path.join(flags.model_dir, CLASSIFIER_FILE)
        checkpoints.save_model(model, path, chief)
    if chief:
        _write_outputs(flags, source, history)
        logging.info("Saved %s", path)
    accuracy = history.get("val_sparse_categorical_accuracy", [float("nan")])[-1]
    return {"val_accuracy": accuracy, "history": history, "model_path": path}


def check_flags(flags):
    """Validates every flag at start (types, ranges, combinations).

    Raises:
        ValueError: (Keras template) naming the flag, its value and what is
            accepted.
    """
    flags_lib.validate(flags, SPEC)
    devices.check_flags(flags)
    data.check_flags(flags)
    if flags.arch == "small_cnn" and flags.pretrained:
        raise invalid(
            "pretrained",
            "False with --arch=small_cnn (ImageNet weights exist only for "
            "keras.applications models)",
            flags.pretrained,
        )
    data.preprocess_for(flags.arch)  # An unknown architecture fails here.


def _check_fits(model, source, flags):
    """Refuses a checkpoint whose model cannot read this run's data."""
    models.input_size(model, flags.model_dir, source.image_size)
    models.check_classes(model, flags.model_dir, source.num_classes, "num_classes")


def _build(flags, source):
    return build_classifier(
        flags.arch,
        source.num_classes,
        source.image_size,
        flags.pretrained,
        flags.dropout,
    )


def _training_batches(source, flags, first_epoch):
    """(batches of the remaining epochs, steps per epoch)."""
    if source.override is None:
        return data.epoch_datasets(source, flags, first_epoch, flags.augment)
    # In-memory data is used as given (no augmentation), shuffled per epoch.
    steps = data.steps_per_epoch(source, flags)
    elements = source.elements("train", flags.max_images)
    buffer_size = source.count("train", flags.max_images)
    train = data.fixed_order_epochs(elements, flags, first_epoch, steps, buffer_size)
    return train, steps


def _compile(model, flags, steps):
    model.compile(
        optimizer=optimizer.sgd(flags, steps),
        loss="sparse_categorical_crossentropy",
        metrics=["sparse_categorical_accuracy"],
        jit_compile=flags.jit_compile,
    )


def _write_outputs(flags, source, history):
    """model_info.json (how the classifier reads images) and history.json."""
    models.write_model_info(
        flags.model_dir,
        arch=flags.arch,
        image_size=source.image_size,
        num_classes=source.num_classes,
        dataset=source.name,
    )
    files.write_history(flags.model_dir, history)


def main(argv):
    del argv
    metrics = run(flags_lib.from_absl(SPEC))
    logging.info("Validation accuracy: %.4f", metrics["val_accuracy"])


if __name__ == "__main__":
    define_flags()
    app.run(main)
