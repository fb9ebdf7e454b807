"""The models the scripts read and write, and what is recorded about them.

Beside every model it saves, a training script writes `model_info.json`: how
the model reads its inputs (architecture, hence preprocessing; image size) and
what it was trained on. The next stage reads it back, and refuses a model of
the wrong kind (a dual model where a classifier is expected, or the reverse)
or one whose inputs it cannot know.
"""

import os
import zipfile

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402

import keras_dualsig as kd  # noqa: E402
from keras_dualsig._errors import invalid  # noqa: E402
from training import files  # noqa: E402

MODEL_INFO_FILE = "model_info.json"
_INFO_EXAMPLE = '{"arch": "small_cnn" or a keras.applications name, "image_size": N}'


def write_model_info(model_dir, **info):
    """Records how a saved model reads its inputs (arch, image size, dataset)."""
    files.write_json(os.path.join(model_dir, MODEL_INFO_FILE), info)


def info_path(model_path):
    """The path of the `model_info.json` beside a model file."""
    return os.path.join(os.path.dirname(model_path) or ".", MODEL_INFO_FILE)


def read_model_info(model_path, argument="model"):
    """The `model_info.json` beside `model_path` as a dict.

    Args:
        model_path: the model file.
        argument: the flag that named the model, for error messages.

    Returns:
        dict with at least "arch" (it decides the input preprocessing).

    Raises:
        ValueError: (Keras template) naming the file when it is missing,
            truncated or has no "arch": the scripts would otherwise feed the
            model images preprocessed for another architecture.
    """
    path = info_path(model_path)
    expected = (
        f"a model with the {MODEL_INFO_FILE} the training scripts write beside "
        f"it, naming its input preprocessing: {_INFO_EXAMPLE}"
    )
    if not os.path.exists(path):
        raise invalid(argument, expected, received=f"{model_path} without {path}")
    try:
        info = files.read_json(path)
    except ValueError as err:
        raise invalid(argument, expected, received=f"{model_path}; {err}") from err
    if not isinstance(info, dict) or "arch" not in info:
        raise invalid(
            argument, expected, received=f"{model_path}; {path} holds {info!r}"
        )
    return info


def load_file(path):
    """`keras.models.load_model`, with the reason a file cannot be read.

    Raises:
        ValueError: a phrase naming the file when it does not exist, is
            truncated (Keras itself says "File not found" then) or cannot
            be loaded.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist")
    if path.endswith(".keras") and not _complete_zip(path):
        raise ValueError(f"{path} is truncated or not a .keras zip file")
    try:
        return keras.models.load_model(path)
    except Exception as err:  # Keras raises many types for unreadable files.
        raise ValueError(f"{path} cannot be loaded ({err})") from err


def load(path, argument):
    """Loads the model file a flag names.

    Raises:
        ValueError: (Keras template, naming `argument`) when `path` is not
            set or the file cannot be read (see `load_file`).
    """
    if not path:
        raise invalid(argument, "the path of a .keras model file", path)
    try:
        return load_file(path)
    except ValueError as err:
        raise invalid(
            argument, "the path of a complete .keras model file", received=str(err)
        ) from err


def _complete_zip(path):
    """Whether `path` is a zip archive whose members all read back intact."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _describe(model, path):
    return f"{path}: {type(model).__name__} {model.name!r}"


def load_classifier(path, argument="classifier"):
    """Loads a plain Keras classifier (stage 1's output) for train_sigmoid.

    Raises:
        ValueError: (Keras template) for an unreadable file, or a model that
            already has a sigmoid branch (stage 2's output).
    """
    model = load(path, argument)
    if isinstance(model, kd.DualSigmoidModel):
        raise invalid(
            argument,
            "a plain classifier (train_classifier's classifier.keras), not a "
            "model that already has a sigmoid branch",
            received=_describe(model, path),
        )
    return model


def load_dual(path, argument="model"):
    """Loads a dual-sigmoid model (stage 2's output) for evaluate.

    Raises:
        ValueError: (Keras template) for an unreadable file, or a model
            without a sigmoid branch (a plain classifier).
    """
    model = load(path, argument)
    if not isinstance(model, kd.DualSigmoidModel):
        raise invalid(
            argument,
            "a dual-sigmoid model (train_sigmoid's dual_sigmoid.keras); attach "
            "and train the branch with train_sigmoid first",
            received=_describe(model, path),
        )
    return model


def num_classes(model):
    """The number of classes of a classifier or dual model."""
    if isinstance(model, kd.DualSigmoidModel):
        return model.num_classes
    return model.output.shape[-1]


def input_size(model, path, flag_size, argument="image_size"):
    """The image side to feed `model`: its fixed input size, else `flag_size`.

    Args:
        model: the loaded model.
        path: its file, for messages.
        flag_size: --image_size (None: unset).
        argument: the flag's name, for messages.

    Returns:
        The model's square input side when fixed, else `flag_size` (None when
        both are unknown: the dataset's default then applies).

    Raises:
        ValueError: (Keras template) when --image_size differs from the
            model's fixed input size, or the fixed input is not square.
    """
    graph = model.trunk if isinstance(model, kd.DualSigmoidModel) else model
    inputs = getattr(graph, "inputs", None)
    shape = tuple(inputs[0].shape[1:3]) if inputs else (None, None)
    if None in shape:
        return flag_size
    if shape[0] != shape[1]:
        raise invalid(
            "model",
            "a model with square inputs (the scripts resize images to squares)",
            received=f"{path} with input size {shape}",
        )
    if flag_size is not None and flag_size != shape[0]:
        raise invalid(
            argument,
            f"None or {shape[0]}, the input size of {path}",
            flag_size,
        )
    return shape[0]


def check_classes(model, path, expected, argument):
    """Refuses a model whose class count is not the dataset's.

    Raises:
        ValueError: (Keras template) naming `argument`.
    """
    classes = num_classes(model)
    if classes != expected:
        raise invalid(
            argument,
            f"a model with the dataset's {expected} classes",
            received=f"{path} with {classes} classes",
        )
