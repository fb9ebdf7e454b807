"""Devices, distribution strategies, seeds, determinism and precision.

`setup(flags)` is the first call of every script: logical CPU devices and
MultiWorkerMirroredStrategy can only be configured before TensorFlow
initialises its runtime.
"""

import os

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import logging  # noqa: E402

from keras_dualsig import _keras_internals  # noqa: E402
from keras_dualsig._errors import check_positive_int, invalid  # noqa: E402
from training.flags import STRATEGIES  # noqa: E402


def check_flags(flags):
    """Refuses device flags that the chosen --strategy would silently ignore.

    Raises:
        ValueError: (Keras template) for --num_cpu_devices > 1 without
            --strategy=mirrored, or --tpu without --strategy=tpu.
    """
    if flags.num_cpu_devices > 1 and flags.strategy != "mirrored":
        raise invalid(
            "num_cpu_devices",
            "1 unless --strategy=mirrored (only MirroredStrategy uses the "
            f"logical CPU devices; --strategy={flags.strategy})",
            flags.num_cpu_devices,
        )
    if flags.tpu and flags.strategy != "tpu":
        raise invalid(
            "tpu",
            f"'' unless --strategy=tpu (--strategy={flags.strategy})",
            flags.tpu,
        )


def setup(flags):
    """Devices, the distribution strategy, seeds, determinism and precision.

    Call it first: logical CPU devices and MultiWorkerMirroredStrategy can only
    be configured before TensorFlow initialises its runtime, so the strategy is
    made before anything else touches TensorFlow.

    Args:
        flags: namespace with `num_cpu_devices`, `strategy`, `tpu`, `seed` and
            `mixed_precision`.

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
    check_positive_int(num_devices, "num_cpu_devices")
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
        _keras_internals.fix_multi_worker_logs()
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
    raise invalid("strategy", f"one of {STRATEGIES}", name)


def is_chief(strategy):
    """Whether this process keeps checkpoints, logs and outputs.

    True except on the non-chief workers of a multi-worker strategy.
    """
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def is_multi_worker(strategy):
    """Whether `strategy` spans several processes (workers must agree on files)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
