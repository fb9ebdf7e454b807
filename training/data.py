"""Where the scripts' images come from, and the batches of each epoch.

`resolve(flags, datasets_override)` gives a `DataSource`: the dataset flags
resolved once (roots, class count, image size, the model's preprocessing), or
the in-memory datasets of a `DatasetsOverride`. Every script reads its splits
through it. `epoch_datasets` and `fixed_order_epochs` build the training
batches of epochs [first_epoch, epochs) with one epoch loop, each epoch's order
and augmentation drawn from (seed, epoch) alone, so that a resumed run sees the
batches of an uninterrupted one.
"""

import dataclasses
import os
from collections.abc import Mapping

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_dualsig as kd  # noqa: E402
from keras_dualsig._errors import check_int, check_positive_int, invalid  # noqa: E402
from training import keras_hub_archs, models  # noqa: E402

# Split sizes of the embedded dataset ("full" keeps the library's defaults).
EMBEDDED_SIZES = {
    "full": {},
    "small": {"num_train": 1000, "num_val": 100, "num_test": 200},
}

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
    """The input preprocessing of an architecture (None: images in [0, 1]).

    Raises:
        ValueError: (Keras template) for a name that is neither "small_cnn"
            nor a keras.applications model.
    """
    if arch in (None, "small_cnn"):
        return None
    if keras_hub_archs.is_keras_hub(arch):
        return keras_hub_archs.preprocess_for(arch)
    for prefix, module in sorted(
        _PREPROCESS_MODULES.items(), key=lambda kv: -len(kv[0])
    ):
        if arch.startswith(prefix):
            return getattr(keras.applications, module).preprocess_input
    raise invalid(
        "arch",
        "'small_cnn', 'vit_tiny', 'keras_hub:<preset>' or a keras.applications "
        "model name",
        arch,
    )


@dataclasses.dataclass(frozen=True)
class DatasetsOverride:
    """In-memory datasets that replace the file loaders of every script.

    The one schema of `run(flags, datasets_override=...)` in train_classifier,
    train_sigmoid, evaluate and quickstart; each reads the splits it needs. A
    dict with the same keys is accepted too (see `of`). The dataset flags
    (--dataset, --data_root, --metadata_root, --num_classes, --image_size,
    --embedded_size) are then not read; --max_images and --batch_size apply.

    Attributes:
        num_classes: the number of classes C.
        image_size: the images' side in pixels.
        train: unbatched (image float32 (H, W, 3), label int ()) elements in a
            fixed order: the training scripts shuffle them per epoch with a
            seed of (--seed, epoch) and batch them (no augmentation).
        validation: unbatched (image, label) elements, or None.
        test: unbatched dict elements as `kd.datasets.load_wsol` yields them
            ("image", "label", "boxes"/"num_boxes" and/or "mask"/"ignore"),
            for evaluate.
        name: the dataset's name in evaluate's results.
    """

    num_classes: int
    image_size: int
    train: tf.data.Dataset | None = None
    validation: tf.data.Dataset | None = None
    test: tf.data.Dataset | None = None
    name: str = "custom"

    def __post_init__(self):
        check_int(self.num_classes, "datasets_override.num_classes", minimum=2)
        check_positive_int(self.image_size, "datasets_override.image_size")
        for split in ("train", "validation"):
            dataset = getattr(self, split)
            if dataset is not None and not _is_supervised(dataset):
                raise invalid(
                    f"datasets_override.{split}",
                    "None or a tf.data.Dataset of unbatched (image (H, W, 3), "
                    "label ()) elements",
                    _spec_of(dataset),
                )
        if self.test is not None and not _is_test(self.test):
            raise invalid(
                "datasets_override.test",
                'None or a tf.data.Dataset of unbatched dicts with "image" '
                '(H, W, 3) and "label" () as load_wsol yields them',
                _spec_of(self.test),
            )

    @classmethod
    def of(cls, value):
        """A `DatasetsOverride` from None, an instance or a dict of its fields.

        Raises:
            ValueError: (Keras template) for another type or unknown keys.
        """
        if value is None or isinstance(value, cls):
            return value
        fields = [field.name for field in dataclasses.fields(cls)]
        if not isinstance(value, Mapping) or set(value) - set(fields):
            raise invalid(
                "datasets_override",
                f"None, a DatasetsOverride or a dict with keys among {fields}",
                value,
            )
        return cls(**value)

    def split(self, name):
        """The elements of a split ("train", "val", "test").

        Returns:
            The dataset; None for an absent "val" (validation is optional).

        Raises:
            ValueError: (Keras template) when "train" or "test" is absent.
        """
        field = {"train": "train", "val": "validation", "test": "test"}[name]
        dataset = getattr(self, field)
        if dataset is None and name != "val":
            raise invalid(
                f"datasets_override.{field}",
                f"a tf.data.Dataset (this script reads the {name} split)",
                None,
            )
        return dataset


def _spec_of(dataset):
    if not isinstance(dataset, tf.data.Dataset):
        return dataset
    return f"<tf.data.Dataset element_spec={dataset.element_spec}>"


def _rank(spec, rank):
    return isinstance(spec, tf.TensorSpec) and spec.shape.rank == rank


def _is_supervised(dataset):
    if not isinstance(dataset, tf.data.Dataset):
        return False
    spec = dataset.element_spec
    return (
        isinstance(spec, tuple)
        and len(spec) == 2
        and _rank(spec[0], 3)
        and _rank(spec[1], 0)
    )


def _is_test(dataset):
    if not isinstance(dataset, tf.data.Dataset):
        return False
    spec = dataset.element_spec
    return (
        isinstance(spec, dict)
        and _rank(spec.get("image"), 3)
        and _rank(spec.get("label"), 0)
    )


@dataclasses.dataclass(frozen=True)
class DataSource:
    """A resolved dataset: where its splits are and how images are read.

    Attributes:
        name: the dataset's name ("cluttered_mnist", "CUB", "custom", ...).
        num_classes: the number of classes C.
        image_size: the side of the images the model reads, in pixels.
        data_root: wsolevaluation image root (None with an override).
        metadata_root: wsolevaluation metadata root with box localization, or
            masks for mask datasets.
        mask_root: folder the mask paths are relative to, or None.
        mask_metadata_root: the same images with mask localization (the
            embedded dataset has both), or None.
        class_names: the class names, or None.
        arch: the model's architecture; decides the input preprocessing.
        override: in-memory datasets replacing the files, or None.
        pairs_info: the embedded dataset's `ClutteredMNISTInfo` when it has
            a "test_pairs" split (two digits per image), else None.
    """

    name: str
    num_classes: int
    image_size: int
    data_root: str | None = None
    metadata_root: str | None = None
    mask_root: str | None = None
    mask_metadata_root: str | None = None
    class_names: tuple | None = None
    arch: str | None = None
    override: DatasetsOverride | None = None
    pairs_info: object = None

    def load(self, split, **kwargs):
        """`kd.datasets.load_wsol` on one split of the files.

        Args:
            split: "train", "val" or "test".
            **kwargs: more `load_wsol` arguments; `preprocess` defaults to
                the architecture's.
        """
        kwargs.setdefault("preprocess", preprocess_for(self.arch))
        return kd.datasets.load_wsol(
            self.data_root,
            self.metadata_root,
            split,
            image_size=self.image_size,
            num_classes=self.num_classes,
            mask_root=self.mask_root,
            **kwargs,
        )

    def elements(self, split, max_images=None, **kwargs):
        """A split's unbatched elements in a fixed order, at most `max_images`.

        Args:
            split: "train", "val" or "test".
            max_images: keep the first this many (None: all).
            **kwargs: `load_wsol` arguments (files only).

        Returns:
            A tf.data.Dataset, or None when an override lacks the split.
        """
        if self.override is not None:
            dataset = self.override.split(split)
        else:
            dataset = self.load(split, **kwargs)
        if dataset is None:
            return None
        return dataset.take(max_images) if max_images else dataset

    def pairs(self, batch_size, max_images=None):
        """Batches of the two-object test images, or None if the dataset has none.

        Returns:
            None, or a tf.data.Dataset of dicts: "image" float32 (B, H, W, 3),
            "labels" int (B, 2), "boxes" int (B, 2, 4) (see
            `ClutteredMNISTInfo.load_pairs`); at most `max_images` images.
        """
        if self.pairs_info is None or not self.pairs_info.num_test_pairs:
            return None
        elements = self.pairs_info.load_pairs(
            image_size=self.image_size, preprocess=preprocess_for(self.arch)
        )
        if max_images:
            elements = elements.take(max_images)
        return elements.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def masks(self):
        """The same dataset read with mask localization, or None if it has none."""
        if not self.mask_metadata_root:
            return None
        return dataclasses.replace(self, metadata_root=self.mask_metadata_root)

    def count(self, split, max_images=None):
        """The number of images of a split, at most `max_images`."""
        if self.override is not None:
            count = _cardinality(self.override.split(split))
        else:
            count = len(
                kd.datasets.read_wsol_metadata(
                    self.data_root,
                    self.metadata_root,
                    split,
                    num_classes=self.num_classes,
                    mask_root=self.mask_root,
                )
            )
        return min(count, max_images) if max_images else count


def _cardinality(dataset):
    count = int(dataset.cardinality())
    if count == tf.data.UNKNOWN_CARDINALITY:  # Filtered: count once.
        count = int(dataset.reduce(0, lambda n, _: n + 1))
    return count


def check_flags(flags):
    """Refuses dataset flags that the chosen --dataset would silently ignore.

    Raises:
        ValueError: (Keras template) for --metadata_root or a class count
            other than 10 with the embedded dataset, or --embedded_size=small
            with another dataset.
    """
    if flags.dataset == "cluttered_mnist":
        if flags.metadata_root:
            raise invalid(
                "metadata_root",
                "None with --dataset=cluttered_mnist (the embedded dataset "
                "writes its own metadata; --data_root is its folder)",
                flags.metadata_root,
            )
        if flags.num_classes not in (None, 10):
            raise invalid(
                "num_classes",
                "None or 10 with --dataset=cluttered_mnist (ten digits)",
                flags.num_classes,
            )
    elif flags.embedded_size != "full":
        raise invalid(
            "embedded_size",
            '"full" unless --dataset=cluttered_mnist (it sizes the embedded '
            f"dataset only; --dataset={flags.dataset})",
            flags.embedded_size,
        )


def resolve(flags, datasets_override=None, *, arch=None, image_size=None):
    """The `DataSource` of the dataset flags, or of an override.

    Args:
        flags: namespace with the dataset flags (dataset, data_root,
            metadata_root, num_classes, image_size, embedded_size).
        datasets_override: None, a `DatasetsOverride` or a dict of its fields.
        arch: the model's architecture (its input preprocessing).
        image_size: the model's input size; replaces --image_size and the
            dataset's default (ignored with an override).

    Returns:
        The `DataSource`.

    Raises:
        ValueError: (Keras template) for missing roots or class count, or
            an override that does not follow the `DatasetsOverride` schema.
    """
    override = DatasetsOverride.of(datasets_override)
    if override is not None:
        return DataSource(
            name=override.name,
            num_classes=override.num_classes,
            image_size=override.image_size,
            arch=arch,
            override=override,
        )
    if flags.dataset == "cluttered_mnist":
        info = kd.datasets.cluttered_mnist(
            root=flags.data_root, **EMBEDDED_SIZES[flags.embedded_size]
        )
        return DataSource(
            name="cluttered_mnist",
            num_classes=info.num_classes,
            image_size=image_size or flags.image_size or info.image_size,
            data_root=info.data_root,
            metadata_root=info.metadata_root,
            mask_root=info.mask_root,
            mask_metadata_root=info.mask_metadata_root,
            class_names=tuple(info.class_names),
            arch=arch,
            pairs_info=info,
        )
    for name in ("data_root", "metadata_root"):
        if not getattr(flags, name):
            raise invalid(
                name,
                f"a folder for --dataset={flags.dataset} (the wsolevaluation "
                "layout: dataset/<NAME> and metadata/<NAME>)",
                getattr(flags, name),
            )
    num_classes = flags.num_classes or kd.datasets.WSOL_DATASETS.get(flags.dataset)
    if not num_classes:
        raise invalid(
            "num_classes",
            f"the number of classes of --dataset={flags.dataset}",
            flags.num_classes,
        )
    masks = kd.datasets.WSOL_LOCALIZATION.get(flags.dataset) == "masks"
    return DataSource(
        name=flags.dataset,
        num_classes=num_classes,
        image_size=image_size or flags.image_size or 224,
        data_root=flags.data_root,
        metadata_root=flags.metadata_root,
        mask_root=flags.data_root if masks else None,
        arch=arch,
    )


def resolve_for(model, model_path, info, flags, datasets_override, argument):
    """The `DataSource` a trained model reads: its preprocessing and input size.

    Args:
        model: the loaded model.
        model_path: its file.
        info: its `model_info.json` (see `models.read_model_info`).
        flags: namespace with the dataset flags.
        datasets_override: None, a `DatasetsOverride` or a dict of its fields.
        argument: the flag naming the model, for messages.

    Returns:
        The `DataSource`.

    Raises:
        ValueError: (Keras template) when --image_size (or the override's)
            differs from the model's input size, or the dataset's class count
            from the model's.
    """
    size = models.input_size(model, model_path, flags.image_size)
    source = resolve(
        flags,
        datasets_override,
        arch=info["arch"],
        image_size=size or info.get("image_size"),
    )
    if source.override is not None:
        models.input_size(
            model, model_path, source.image_size, "datasets_override.image_size"
        )
    models.check_classes(model, model_path, source.num_classes, argument)
    return source


def epoch_seed(flags, epoch):
    """The data seed of one epoch: a function of (seed, epoch) alone."""
    return flags.seed * 100_003 + epoch


def epoch_range(first_epoch, epochs):
    """Describes the epochs left, for the logs: "epochs 3-6 of 6"."""
    if first_epoch >= epochs:
        return f"all {epochs} epochs done already (outputs rewritten)"
    return f"epochs {first_epoch + 1}-{epochs} of {epochs}"


def steps_per_epoch(source, flags):
    """Full batches per training epoch (the last partial batch is dropped).

    Raises:
        ValueError: (Keras template) when --batch_size exceeds the training
            split.
    """
    count = source.count("train", flags.max_images)
    steps = count // flags.batch_size
    if steps == 0:
        raise invalid(
            "batch_size",
            f"at most the training split's size ({count} images)",
            flags.batch_size,
        )
    return steps


def _epochs(flags, first_epoch, steps, make_epoch):
    """The one epoch loop: `make_epoch(epoch, seed)`'s elements, batched, in turn.

    Returns:
        A dataset of the batches of epochs [first_epoch, epochs), `steps` full
        batches each, or None when no epoch is left.
    """
    dataset = None
    for epoch in range(first_epoch, flags.epochs):
        part = make_epoch(epoch, epoch_seed(flags, epoch))
        part = part.batch(flags.batch_size, drop_remainder=True).take(steps)
        dataset = part if dataset is None else dataset.concatenate(part)
    return None if dataset is None else dataset.prefetch(tf.data.AUTOTUNE)


def epoch_datasets(source, flags, first_epoch, augment=True):
    """Training batches of epochs [first_epoch, epochs), each read from the files.

    Each epoch's order and augmentation derive from (seed, epoch) alone, so a
    run resumed at epoch k sees exactly the batches an uninterrupted run sees.
    With --max_images every epoch uses the same first max_images images.

    Returns:
        (dataset of (images, labels) batches, or None when no epoch is left;
        steps per epoch).
    """
    steps = steps_per_epoch(source, flags)

    def make_epoch(epoch, seed):
        options = {
            "training": augment,
            "seed": seed,
            "as_supervised": True,
            "verify_images": epoch == first_epoch,
        }
        if not flags.max_images:
            return source.load("train", shuffle=True, **options)
        # Take before shuffling, so that every epoch sees the same subset.
        part = source.elements("train", flags.max_images, shuffle=False, **options)
        return part.shuffle(flags.max_images, seed=seed, reshuffle_each_iteration=False)

    return _epochs(flags, first_epoch, steps, make_epoch), steps


def fixed_order_epochs(elements, flags, first_epoch, steps, buffer_size):
    """Batches of epochs [first_epoch, epochs) from a fixed-order dataset.

    Each epoch is shuffled with a seed derived from (seed, epoch) alone: the
    cached and uncached paths of train_sigmoid, fed the same fixed order, see
    identical batches, and a resumed run sees the batches of an uninterrupted
    one.

    Args:
        elements: unbatched elements in a fixed order.
        flags: namespace with seed, epochs and batch_size.
        first_epoch: the first epoch to produce.
        steps: full batches per epoch.
        buffer_size: the shuffle buffer.

    Returns:
        A dataset of batches, or None when no epoch is left.
    """

    def make_epoch(epoch, seed):
        del epoch
        return elements.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=False)

    return _epochs(flags, first_epoch, steps, make_epoch)


def validation_batches(source, flags):
    """The validation split's (images, labels) batches, or None if it has none."""
    dataset = source.elements("val", flags.max_images, as_supervised=True)
    if dataset is None:
        return None
    return dataset.batch(flags.batch_size).prefetch(tf.data.AUTOTUNE)
