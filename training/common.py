"""Shared plumbing of the training scripts: flags, devices, data, checkpoints.

Scripts follow the tensorflow/models shape: `define_flags()`, `run(flags,
datasets_override=None)` returning metrics, `main(argv)`, `app.run(main)`.
`run` takes any object with the flags as attributes, so tests and the
quickstart call it with `config(SPEC, epochs=1, ...)` instead of the command line.
"""

import json
import os
import shutil
import tempfile
import time
import types

from absl import flags as absl_flags
from absl import logging

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_dualsig as kd  # noqa: E402

# Flags defined through `define_flags` belong to the calling script, so that
# `--help` lists them (absl credits the module that calls DEFINE_*).
absl_flags.disclaim_key_flags()

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
DATASETS = ("cluttered_mnist", "CUB", "CARS", "ILSVRC", "OpenImages", "custom")


def flag(name, default, help_text, kind=None, choices=None):
    """One flag of a script's spec: (name, default, help, kind, choices)."""
    if kind is None:
        kind = {bool: "bool", int: "integer", float: "float", list: "list"}.get(
            type(default), "string"
        )
    return (name, default, help_text, kind, choices)


# Flags every training script shares.
COMMON = [
    flag("dataset", "cluttered_mnist", "Dataset name.", choices=DATASETS),
    flag(
        "data_root",
        None,
        "wsolevaluation image root (dataset/<NAME>); for cluttered_mnist, the "
        "folder of the generated dataset (default: under ~/.keras).",
    ),
    flag("metadata_root", None, "wsolevaluation metadata root (metadata/<NAME>)."),
    flag("num_classes", None, "Number of classes (custom datasets).", "integer"),
    flag(
        "image_size",
        None,
        "Input size; default 96 (cluttered_mnist) or 224.",
        "integer",
    ),
    flag("batch_size", 32, "Global batch size."),
    flag("model_dir", "runs/model", "Where checkpoints, logs and models go."),
    flag("seed", 0, "Random seed (data order, augmentation, initialisation)."),
    flag("mixed_precision", False, "mixed_float16 on GPU, mixed_bfloat16 on CPU/TPU."),
    flag("jit_compile", False, "Compile train steps with XLA."),
    flag("strategy", "default", "tf.distribute strategy.", choices=STRATEGIES),
    flag("num_cpu_devices", 1, "Split the CPU into this many logical devices."),
    flag("tpu", "", "TPU address for --strategy=tpu ('' = local)."),
    flag("max_images", None, "Use at most this many images per split.", "integer"),
    flag(
        "embedded_size",
        "full",
        "Size of the embedded cluttered_mnist dataset.",
        choices=("full", "small"),
    ),
]

# Split sizes of the embedded dataset ("full" keeps the library's defaults).
EMBEDDED_SIZES = {
    "full": {},
    "small": {"num_train": 1000, "num_val": 100, "num_test": 200},
}


def define_flags(spec):
    """Defines absl flags from a spec (skipping ones already defined)."""
    for name, default, help_text, kind, choices in spec:
        if name in absl_flags.FLAGS:
            continue
        if choices:
            absl_flags.DEFINE_enum(name, default, list(choices), help_text)
        else:
            getattr(absl_flags, f"DEFINE_{kind}")(name, default, help_text)


def config(spec, **overrides):
    """The spec's defaults as a namespace, with overrides (for tests and scripts)."""
    values = {name: default for name, default, *_ in spec}
    unknown = set(overrides) - set(values)
    if unknown:
        raise ValueError(f"Unknown flags {sorted(unknown)}; known: {sorted(values)}")
    values.update(overrides)
    return types.SimpleNamespace(**values)


def from_absl(spec):
    """The parsed absl flags of a spec as a namespace."""
    return types.SimpleNamespace(
        **{name: getattr(absl_flags.FLAGS, name) for name, *_ in spec}
    )


# ----------------------------------------------------------------------------
# Devices and precision.


def setup(flags):
    """Devices, the distribution strategy, seeds, determinism and precision.

    Call it first: logical CPU devices and MultiWorkerMirroredStrategy can only
    be configured before TensorFlow initialises its runtime, so the strategy is
    made before anything else touches TensorFlow.

    Returns:
        The `tf.distribute.Strategy` of --strategy.
    """
    _split_cpu(flags.num_cpu_devices)
    strategy = make_strategy(flags)
    keras.utils.set_random_seed(flags.seed)
    # Same batches + deterministic kernels = the same weights after a resume.
    tf.config.experimental.enable_op_determinism()
    if flags.mixed_precision:
        policy = (
            "mixed_float16"
            if tf.config.list_physical_devices("GPU")
            else "mixed_bfloat16"
        )
        keras.config.set_dtype_policy(policy)
        logging.info("Mixed precision: %s", policy)
    else:
        keras.config.set_dtype_policy("float32")
    return strategy


def _split_cpu(num_devices):
    """Splits the CPU into `num_devices` logical devices (for MirroredStrategy)."""
    if not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(
            "Invalid value received for argument `num_cpu_devices`. Expected an "
            f"int >= 1. Received: num_cpu_devices={num_devices!r}"
        )
    if num_devices == 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_devices
        )
    except RuntimeError as err:  # The runtime is up: fine if already split so.
        if len(tf.config.list_logical_devices("CPU")) != num_devices:
            raise RuntimeError(
                f"--num_cpu_devices={num_devices} must be applied before "
                "TensorFlow initialises its devices; run the script in a fresh "
                "process."
            ) from err


def make_strategy(flags):
    """The `tf.distribute.Strategy` named by --strategy.

    - "default": one device.
    - "mirrored": every local GPU, else the logical CPU devices
      (--num_cpu_devices); synchronous all-reduce.
    - "multi_worker": MultiWorkerMirroredStrategy over the cluster in the
      TF_CONFIG environment variable (each worker runs the same command).
    - "tpu": TPUStrategy on --tpu ('' = the local TPU VM).
    """
    name = flags.strategy
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        logging.info("MirroredStrategy over %s", devices)
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        # Workers and this task's index come from the TF_CONFIG variable.
        if "TF_CONFIG" not in os.environ:
            logging.warning("--strategy=multi_worker without TF_CONFIG: one worker.")
        _fix_keras_multi_worker_logs()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        logging.info(
            "MultiWorkerMirroredStrategy: %d replicas, chief=%s",
            strategy.num_replicas_in_sync,
            is_chief(strategy),
        )
        return strategy
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=flags.tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        f"Invalid value received for argument `strategy`. Expected one of "
        f"{STRATEGIES}. Received: strategy={name!r}"
    )


def _fix_keras_multi_worker_logs():
    """Works around Keras 3 reducing scalar step logs with `axis=0`.

    Under MultiWorkerMirroredStrategy, Keras (3.x up to at least 3.15) reduces
    the per-step logs with `strategy.reduce("MEAN", v, axis=0)`, which fails on
    scalars ("Invalid reduction dimension 0 for input with 0 dimensions";
    keras-team/keras#20585, tensorflow/tensorflow#72388). The logs are
    per-replica metric results, so their mean over replicas (`axis=None`, an
    all-reduce across the workers) is what was meant. Idempotent.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_keras_dualsig_fix", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        # Exactly the case Keras gets wrong; everything else goes through it.
        if reduction in ("auto", "mean") and (
            tf_trainer._collective_all_reduce_multi_worker(strategy)
        ):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values
            )
        return original(values, strategy, reduction)

    reduce_per_replica._keras_dualsig_fix = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def is_chief(strategy):
    """Whether this process keeps checkpoints, logs and outputs.

    True except on the non-chief workers of a multi-worker strategy.
    """
    return bool(getattr(strategy.extended, "should_checkpoint", True))


# ----------------------------------------------------------------------------
# Data.


def dataset_source(flags):
    """Resolves the dataset flags.

    Returns:
        dict with data_root, metadata_root, mask_root, mask_metadata_root,
        num_classes, image_size, class_names.
    """
    if flags.dataset == "cluttered_mnist":
        info = kd.datasets.cluttered_mnist(
            root=flags.data_root, **EMBEDDED_SIZES[flags.embedded_size]
        )
        return {
            "name": "cluttered_mnist",
            "data_root": info.data_root,
            "metadata_root": info.metadata_root,
            "mask_root": info.mask_root,
            "mask_metadata_root": info.mask_metadata_root,
            "num_classes": info.num_classes,
            "image_size": flags.image_size or info.image_size,
            "class_names": list(info.class_names),
        }
    if not flags.data_root or not flags.metadata_root:
        raise ValueError(
            f"--dataset={flags.dataset} needs --data_root and --metadata_root "
            "(the wsolevaluation layout: dataset/<NAME> and metadata/<NAME>)."
        )
    num_classes = flags.num_classes or kd.datasets.WSOL_DATASETS.get(flags.dataset)
    if not num_classes:
        raise ValueError(f"--dataset={flags.dataset} needs --num_classes.")
    masks = kd.datasets.WSOL_LOCALIZATION.get(flags.dataset) == "masks"
    return {
        "name": flags.dataset,
        "data_root": flags.data_root,
        "metadata_root": flags.metadata_root,
        "mask_root": flags.data_root if masks else None,
        "mask_metadata_root": None,
        "num_classes": num_classes,
        "image_size": flags.image_size or 224,
        "class_names": None,
    }


def _take(dataset, flags):
    return dataset.take(flags.max_images) if flags.max_images else dataset


# keras.applications model name prefix -> module with its preprocess_input.
_PREPROCESS_MODULES = {
    "ResNet": "resnet",
    "VGG16": "vgg16",
    "VGG19": "vgg19",
    "InceptionV3": "inception_v3",
    "InceptionResNetV2": "inception_resnet_v2",
    "MobileNetV2": "mobilenet_v2",
    "MobileNetV3": "mobilenet_v3",
    "MobileNet": "mobilenet",
    "EfficientNetV2": "efficientnet_v2",
    "EfficientNet": "efficientnet",
    "DenseNet": "densenet",
    "ConvNeXt": "convnext",
    "Xception": "xception",
    "NASNet": "nasnet",
    "RegNet": "regnet",
}


def preprocess_for(arch):
    """The input preprocessing of an architecture (None: images in [0, 1])."""
    if arch in (None, "small_cnn"):
        return None
    for prefix, module in sorted(
        _PREPROCESS_MODULES.items(), key=lambda kv: -len(kv[0])
    ):
        if arch.startswith(prefix):
            return getattr(keras.applications, module).preprocess_input
    raise ValueError(
        "Invalid value received for argument `arch`. Expected 'small_cnn' or a "
        f"keras.applications model name. Received: arch={arch!r}"
    )


def write_model_info(model_dir, **info):
    """Records how a saved model reads its inputs (arch, image size, dataset)."""
    write_json(os.path.join(model_dir, "model_info.json"), info)


def read_model_info(model_path):
    path = os.path.join(os.path.dirname(model_path) or ".", "model_info.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_split(source, split, flags, **kwargs):
    """`load_wsol` on one split of the resolved source."""
    kwargs.setdefault("preprocess", preprocess_for(source.get("arch")))
    dataset = kd.datasets.load_wsol(
        source["data_root"],
        source["metadata_root"],
        split,
        image_size=source["image_size"],
        num_classes=source["num_classes"],
        mask_root=source["mask_root"],
        **kwargs,
    )
    return dataset


def num_examples(source, split, flags):
    count = len(
        kd.datasets.read_wsol_metadata(
            source["data_root"],
            source["metadata_root"],
            split,
            num_classes=source["num_classes"],
            mask_root=source["mask_root"],
        )
    )
    return min(count, flags.max_images) if flags.max_images else count


def epoch_seed(flags, epoch):
    """The data seed of one epoch: a function of (seed, epoch) alone."""
    return flags.seed * 100_003 + epoch


def epoch_range(first_epoch, epochs):
    """Describes the epochs left, for the logs: "epochs 3-6 of 6"."""
    if first_epoch >= epochs:
        return f"all {epochs} epochs done already (outputs rewritten)"
    return f"epochs {first_epoch + 1}-{epochs} of {epochs}"


def epoch_datasets(source, flags, first_epoch, augment=True):
    """Training batches of epochs [first_epoch, epochs), one after the other.

    Each epoch's order and augmentation derive from (seed, epoch) alone, so a
    run resumed at epoch k sees exactly the batches an uninterrupted run sees.
    With --max_images every epoch uses the same first max_images images.

    Returns:
        (dataset of (images, labels) batches, or None when no epoch is left;
        steps per epoch).
    """
    count = num_examples(source, "train", flags)
    steps = count // flags.batch_size
    if steps == 0:
        raise ValueError(
            f"--batch_size={flags.batch_size} exceeds the training split's size "
            f"({count} images)."
        )
    dataset = None
    for epoch in range(first_epoch, flags.epochs):
        seed = epoch_seed(flags, epoch)
        options = {
            "training": augment,
            "seed": seed,
            "as_supervised": True,
            "verify_images": epoch == first_epoch,
        }
        if flags.max_images:
            # Take before shuffling, so that every epoch sees the same subset.
            part = load_split(source, "train", flags, shuffle=False, **options)
            part = part.take(flags.max_images).shuffle(
                flags.max_images, seed=seed, reshuffle_each_iteration=False
            )
        else:
            part = load_split(source, "train", flags, shuffle=True, **options)
        part = part.batch(flags.batch_size, drop_remainder=True).take(steps)
        dataset = part if dataset is None else dataset.concatenate(part)
    if dataset is None:
        return None, steps
    return dataset.prefetch(tf.data.AUTOTUNE), steps


def validation_dataset(source, flags):
    dataset = load_split(source, "val", flags, as_supervised=True)
    return _take(dataset, flags).batch(flags.batch_size).prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------
# Optimisation and checkpoints.


def sgd(flags, steps_per_epoch):
    """SGD with Nesterov momentum, step decay (x decay_factor) and weight decay."""
    boundaries = (
        [
            epoch * steps_per_epoch
            for epoch in range(flags.decay_every, flags.epochs, flags.decay_every)
        ]
        if flags.decay_every
        else []
    )
    values = [
        flags.learning_rate * flags.decay_factor**i for i in range(len(boundaries) + 1)
    ]
    schedule = (
        keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        if boundaries
        else flags.learning_rate
    )
    return keras.optimizers.SGD(
        learning_rate=schedule,
        momentum=flags.momentum,
        nesterov=True,
        weight_decay=flags.weight_decay or None,
    )


OPTIMIZER_FLAGS = [
    flag("learning_rate", 0.01, "Initial learning rate."),
    flag("momentum", 0.9, "Nesterov momentum."),
    flag("weight_decay", 1e-4, "Weight decay (0 disables)."),
    flag(
        "decay_every", 0, "Multiply the learning rate by --decay_factor every N epochs."
    ),
    flag("decay_factor", 0.1, "Step decay factor."),
]

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
HISTORY_FILE = "history.json"


class Checkpoint(keras.callbacks.Callback):
    """Saves the model (with optimizer state) and the history after every epoch.

    Writes `<model_dir>/checkpoint/epoch-NNNN.keras`, then `state.json` (the
    epoch, the model file, the history, the random-seed states) atomically
    (temporary file + rename), then deletes older model files: a run killed at
    any moment leaves a state that names a complete model of the same epoch.

    Non-chief workers of a multi-worker strategy save too (saving may run
    collective ops), into a temporary folder they delete at once, as
    TensorFlow's multi-worker guide recommends.

    Besides the Keras logs, the history records "epoch_seconds" (training and
    validation time of each epoch, without the checkpoint).
    """

    def __init__(self, model_dir, history=None, chief=True):
        super().__init__()
        self.directory = os.path.join(model_dir, CHECKPOINT_DIR)
        self.history = {key: list(values) for key, values in (history or {}).items()}
        self.chief = chief
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.history.setdefault("epoch_seconds", []).append(seconds)
        save_checkpoint(self.model, self.directory, epoch + 1, self.history, self.chief)


def save_checkpoint(model, directory, epoch, history, chief=True):
    """Writes one checkpoint (see `Checkpoint`) after `epoch` finished epochs."""
    target = directory if chief else tempfile.mkdtemp(prefix="keras_dualsig_worker_")
    os.makedirs(target, exist_ok=True)
    name = f"epoch-{epoch:04d}.keras"
    model.save(os.path.join(target, name))
    state = {
        "epoch": epoch,
        "model": name,
        "history": history,
        "seed_generators": [np.asarray(v).tolist() for v in _seed_states(model)],
    }
    write_json(os.path.join(target, STATE_FILE), state)
    # The new state is in place: older model files are garbage now.
    for old in os.listdir(target):
        if old.startswith("epoch-") and old.endswith(".keras") and old != name:
            os.remove(os.path.join(target, old))
    if not chief:
        shutil.rmtree(target, ignore_errors=True)


def _seed_states(model):
    """The state variables of the model's random seed generators (Dropout...).

    `model.save` keeps weights only; without these states a resumed run would
    draw other dropout masks than an uninterrupted one.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def restore(model_dir, strategy=None):
    """The last checkpoint of a run, or None.

    Args:
        model_dir: the run's folder.
        strategy: the run's strategy; under a multi-worker strategy the workers
            check that they all resume from the same epoch (they read the
            chief's checkpoints, so model_dir must be on a shared filesystem).

    Returns:
        (model, number of finished epochs, history) or None.
    """
    directory = os.path.join(model_dir, CHECKPOINT_DIR)
    state_path = os.path.join(directory, STATE_FILE)
    state = None
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        _check_workers_agree(strategy, state["epoch"] if state else 0, model_dir)
    if state is None:
        return None
    model = keras.models.load_model(
        os.path.join(directory, state.get("model", "model.keras"))
    )
    saved = state.get("seed_generators", [])
    variables = _seed_states(model)
    if len(saved) == len(variables):
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
    else:
        logging.warning(
            "The checkpoint has %d seed states, the model %d: not restored.",
            len(saved),
            len(variables),
        )
    logging.info("Resuming from %s after epoch %d.", directory, state["epoch"])
    return model, state["epoch"], state["history"]


def _check_workers_agree(strategy, epoch, model_dir):
    """Raises unless every worker resumes from the same epoch (a collective)."""
    local = strategy.run(lambda: tf.constant([epoch], tf.int64))
    epochs = sorted(set(strategy.gather(local, axis=0).numpy().tolist()))
    if len(epochs) > 1:
        raise RuntimeError(
            f"Workers found checkpoints of different epochs {epochs} in "
            f"{model_dir}: --model_dir must be a folder every worker reads (a "
            "shared filesystem), since only the chief writes checkpoints."
        )


def fit(model, flags, train, steps, validation, first_epoch, history, chief):
    """`model.fit` with checkpoints, TensorBoard and a progress bar.

    Call it inside the strategy's scope. Returns the history of all epochs,
    restored ones included (with "epoch_seconds", see `Checkpoint`).
    """
    checkpoint = Checkpoint(flags.model_dir, history, chief)
    if train is None or first_epoch >= flags.epochs:
        return checkpoint.history
    callbacks = [checkpoint]
    if chief:
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(flags.model_dir, "logs"))
        )
    train = _shard_by_data(train)
    if validation is not None:
        validation = _shard_by_data(validation)
    if tf.distribute.has_strategy():
        _build_without_reading(model, train)
    model.fit(
        train,
        epochs=flags.epochs,
        initial_epoch=first_epoch,
        steps_per_epoch=steps,
        validation_data=validation,
        callbacks=callbacks,
        shuffle=False,  # Every epoch is shuffled by its own seed already.
        verbose=1 if chief else 0,
    )
    return checkpoint.history


def _shard_by_data(dataset):
    """Multi-worker: each worker keeps its share of every global batch.

    The pipelines read files inside `map`, so TensorFlow's default (AUTO) would
    try file sharding first and fall back to this with a warning.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def _build_without_reading(model, dataset):
    """Builds the model's training state from shapes, as Keras would from data.

    Under a tf.distribute strategy, Keras 3's `fit` first pulls a batch from a
    throwaway iterator to build the model, metrics and optimizer
    (`_maybe_symbolic_build`). Under MultiWorkerMirroredStrategy that fails
    (`strategy.reduce` of a nested batch; keras-team/keras#20585). Under any
    strategy it also costs determinism: the throwaway iterator advances the
    shuffle and augmentation seeds of the first epochs' pipelines (`load_wsol`
    reshuffles on every iteration), so distributed and resumed runs would see
    other batches than a single device. Building from the dataset's element
    spec creates the same state; detaching the model's strategy then skips
    Keras' step, and `fit`, called in the strategy's scope, uses the scope's.
    """
    model._symbolic_build(data_batch=dataset.element_spec)
    model._distribute_strategy = None


def save_model(model, path, chief=True):
    """Saves a final model; non-chief workers save to a temporary folder.

    Every worker saves (saving may run collective ops); only the chief's file
    stays.
    """
    if chief:
        model.save(path)
        return
    folder = tempfile.mkdtemp(prefix="keras_dualsig_worker_")
    try:
        model.save(os.path.join(folder, os.path.basename(path)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_json(path, payload):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(path + ".tmp", path)
