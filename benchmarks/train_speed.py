"""Epoch time of stage 2 on cached features, uncached, and naive fine-tuning.

Three trainings on the same images, measured in one run through the training
scripts' `run()` (each epoch's time is the "epoch_seconds" the checkpoint
callback records: training plus validation, without the checkpoint write):

- naive: ordinary fine-tuning, the whole classifier trainable
  (`train_classifier`, augmentation off);
- uncached: stage 2, the sigmoid branch trained on images through the frozen
  trunk (`train_sigmoid --noaugment`);
- cached: stage 2 on trunk features computed once (`train_sigmoid
  --cache_features`); its first epoch includes the feature extraction.

Both stage-2 paths reach the same weights (tests/training/train_sigmoid_test.py).
The trunk is a keras.applications backbone with random weights (speed does not
depend on them) on the embedded cluttered-MNIST images.

    python benchmarks/train_speed.py              # MobileNetV2, 96 px, ~1 min on 2 cores
    python benchmarks/train_speed.py --arch=ResNet50 --image_size=128
"""

import os

# oneDNN crashes in some TensorFlow kernels on CI CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import keras_dualsig as kd  # noqa: E402

# The training scripts are a folder beside this one, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training import flags as flags_lib  # noqa: E402
from training import models, train_classifier, train_sigmoid  # noqa: E402


def define_flags():
    flags.DEFINE_string("arch", "MobileNetV2", "keras.applications trunk.")
    flags.DEFINE_integer("image_size", 96, "Input size (the images are 96 px).")
    flags.DEFINE_integer("num_images", 640, "Training images.")
    flags.DEFINE_integer("num_val", 32, "Validation images (validated each epoch).")
    flags.DEFINE_integer("batch_size", 32, "Batch size.")
    flags.DEFINE_integer("epochs", 4, "Epochs per path (the first one warms up).")
    flags.DEFINE_integer("seed", 0, "Seed.")
    flags.DEFINE_string("work_dir", None, "Kept if given; else a deleted temp dir.")
    flags.DEFINE_bool("verbose", False, "Show the scripts' logs and progress bars.")


def main(argv):
    del argv
    args = flags.FLAGS
    if args.epochs < 2:
        raise ValueError(
            "Invalid value received for argument `epochs`. Expected an int >= 2 "
            f"(epochs after the first are the point). Received: epochs={args.epochs}"
        )
    if not args.verbose:
        keras.utils.disable_interactive_logging()  # Progress bars off.
        logging.set_verbosity(logging.WARNING)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="train_speed_")
    try:
        rows = measure(args, work_dir)
    finally:
        if not args.work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
    print_table(args, rows)


def measure(args, work_dir):
    data = kd.datasets.cluttered_mnist(
        root=os.path.join(work_dir, "data"),
        seed=args.seed,
        num_train=args.num_images,
        num_val=args.num_val,
        num_test=1,
    )
    common_flags = {
        "dataset": "custom",
        "data_root": data.data_root,
        "metadata_root": data.metadata_root,
        "num_classes": data.num_classes,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "augment": False,
    }

    # The stage-1 classifier, untrained: the weights do not change the speed.
    classifier_dir = os.path.join(work_dir, "classifier")
    os.makedirs(classifier_dir)
    classifier = train_classifier.build_classifier(
        args.arch, data.num_classes, args.image_size
    )
    classifier_path = os.path.join(classifier_dir, train_classifier.CLASSIFIER_FILE)
    classifier.save(classifier_path)
    models.write_model_info(
        classifier_dir,
        arch=args.arch,
        image_size=args.image_size,
        num_classes=data.num_classes,
        dataset="custom",
    )
    parameters = classifier.count_params()
    print(
        f"{args.arch} at {args.image_size} px ({parameters / 1e6:.1f} M parameters), "
        f"{args.num_images} training images, batch {args.batch_size}, "
        f"{args.epochs} epochs per path."
    )

    rows = {}
    naive = train_classifier.run(
        flags_lib.config(
            train_classifier.SPEC,
            **common_flags,
            arch=args.arch,
            model_dir=os.path.join(work_dir, "naive"),
        )
    )
    rows["naive full fit (all layers trainable)"] = naive["history"]["epoch_seconds"]
    for name, cache in (("uncached (--noaugment)", False), ("cached", True)):
        result = train_sigmoid.run(
            flags_lib.config(
                train_sigmoid.SPEC,
                **common_flags,
                classifier=classifier_path,
                cache_features=cache,
                model_dir=os.path.join(work_dir, "cached" if cache else "uncached"),
            )
        )
        seconds = list(result["history"]["epoch_seconds"])
        # The extraction happens before fit; it belongs to the first epoch.
        seconds[0] += result["feature_seconds"]
        rows[f"stage 2, {name}"] = seconds
        if cache:
            rows["_features"] = result["feature_seconds"]
    return rows


def print_table(args, rows):
    features = rows.pop("_features")
    later = {name: float(np.median(seconds[1:])) for name, seconds in rows.items()}
    cached = later["stage 2, cached"]
    print()
    print("| path | first epoch (s) | later epochs (s/epoch) | cached is faster by |")
    print("|---|---:|---:|---:|")
    for name, seconds in rows.items():
        ratio = "-" if name == "stage 2, cached" else f"{later[name] / cached:.0f}x"
        print(f"| {name} | {seconds[0]:.2f} | {later[name]:.3f} | {ratio} |")
    print()
    print(
        f"Cached first epoch includes {features:.2f} s of feature extraction "
        f"({args.num_images + args.num_val} images). Later epochs: median of "
        f"epochs 2-{args.epochs}."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
