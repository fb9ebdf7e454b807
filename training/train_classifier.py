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
from training import common  # noqa: E402

SPEC = [
    *common.COMMON,
    *common.OPTIMIZER_FLAGS,
    common.flag("arch", "small_cnn", "small_cnn or a keras.applications name."),
    common.flag("pretrained", False, "Start from ImageNet weights (downloads them)."),
    common.flag("epochs", 6, "Training epochs."),
    common.flag("augment", True, "Random resized crop and flip."),
    common.flag("dropout", 0.3, "Dropout before the classifier."),
]
CLASSIFIER_FILE = "classifier.keras"


def define_flags():
    common.define_flags(SPEC)


def build_classifier(arch, num_classes, image_size, pretrained=False, dropout=0.3):
    """The small CNN, or a keras.applications backbone + GAP -> Dropout -> Dense."""
    if arch == "small_cnn":
        return kd.small_cnn(num_classes, (image_size, image_size, 3), dropout=dropout)
    constructor = getattr(keras.applications, arch, None)
    if constructor is None:
        raise ValueError(
            f"Invalid value received for argument `arch`. Expected 'small_cnn' or "
            f"a keras.applications model name such as 'ResNet50'. Received: "
            f"arch={arch!r}"
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
        flags: namespace with the SPEC flags (see `common.config`).
        datasets_override: optional dict with "train" (a dataset of (images,
            labels) batches covering all remaining epochs), "steps",
            "validation", "num_classes", "image_size"; replaces the loaders.

    Returns:
        dict: "val_accuracy" (last epoch, NaN without validation), "history"
        (per-epoch logs of all epochs, with "epoch_seconds"), "model_path".
    """
    strategy = common.setup(flags)
    chief = common.is_chief(strategy)
    if datasets_override:
        source = {
            "num_classes": datasets_override["num_classes"],
            "image_size": datasets_override["image_size"],
        }
    else:
        source = common.dataset_source(flags)
    source["arch"] = flags.arch
    with strategy.scope():
        restored = common.restore(flags.model_dir, strategy)
        if restored:
            model, first_epoch, history = restored
        else:
            model = build_classifier(
                flags.arch,
                source["num_classes"],
                source["image_size"],
                flags.pretrained,
                flags.dropout,
            )
            first_epoch, history = 0, {}
        if datasets_override:
            train, steps = datasets_override["train"], datasets_override["steps"]
            validation = datasets_override.get("validation")
        else:
            train, steps = common.epoch_datasets(
                source, flags, first_epoch, flags.augment
            )
            validation = common.validation_dataset(source, flags)
        if not restored:
            model.compile(
                optimizer=common.sgd(flags, steps),
                loss="sparse_categorical_crossentropy",
                metrics=["sparse_categorical_accuracy"],
                jit_compile=flags.jit_compile,
            )
        logging.info(
            "Training %s: %d classes, %d steps/epoch, %s",
            model.name,
            source["num_classes"],
            steps,
            common.epoch_range(first_epoch, flags.epochs),
        )
        history = common.fit(
            model, flags, train, steps, validation, first_epoch, history, chief
        )
        path = os.path.join(flags.model_dir, CLASSIFIER_FILE)
        common.save_model(model, path, chief)
    if chief:
        common.write_model_info(
            flags.model_dir,
            arch=flags.arch,
            image_size=source["image_size"],
            num_classes=source["num_classes"],
            dataset=getattr(flags, "dataset", None),
        )
        common.write_json(os.path.join(flags.model_dir, common.HISTORY_FILE), history)
        logging.info("Saved %s", path)
    accuracy = history.get("val_sparse_categorical_accuracy", [float("nan")])[-1]
    return {"val_accuracy": accuracy, "history": history, "model_path": path}


def main(argv):
    del argv
    metrics = run(common.from_absl(SPEC))
    logging.info("Validation accuracy: %.4f", metrics["val_accuracy"])


if __name__ == "__main__":
    define_flags()
    app.run(main)
