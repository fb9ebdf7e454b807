"""keras-hub classifiers for `--arch`: a tiny offline ViT, or any preset.

- `--arch=vit_tiny`: a small Vision Transformer built from explicit arguments
  (patches of 1/8 of the image side, 2 encoder blocks, width 64), random init,
  no download: the transformer the tests and the embedded dataset use.
- `--arch=keras_hub:<preset>` (e.g. `keras_hub:vit_base_patch16_224_imagenet`,
  or a backbone preset such as `keras_hub:resnet_50_imagenet`):
  `keras_hub.models.ImageClassifier.from_preset(preset, num_classes=C)`, with
  the preset's own image converter as the input preprocessing. Presets are
  downloaded (Kaggle / Hugging Face); offline this stops with a clear message.
"""

from keras_dualsig._errors import invalid

PREFIX = "keras_hub:"
TINY = ("vit_tiny",)


def is_keras_hub(arch):
    """Whether `--arch` names a keras-hub model."""
    return isinstance(arch, str) and (arch in TINY or arch.startswith(PREFIX))


def _keras_hub():
    try:
        import keras_hub
    except ImportError as err:
        raise ImportError(
            "--arch names a keras-hub model, and keras-hub is not installed: "
            "`pip install keras-hub`."
        ) from err
    return keras_hub


def _preset(arch):
    preset = arch[len(PREFIX) :]
    if not preset:
        raise invalid(
            "arch",
            "'keras_hub:<preset name>', e.g. 'keras_hub:vit_base_patch16_224'",
            arch,
        )
    return preset


def build(arch, num_classes, image_size, *, pretrained=False, dropout=0.0):
    """The keras-hub classifier `--arch` names, without its preprocessor.

    Args:
        arch: "vit_tiny" or "keras_hub:<preset>".
        num_classes: C.
        image_size: the input side (vit_tiny: a multiple of 8).
        pretrained: for a preset, keep its weights (its head is new when C
            differs); vit_tiny has none.
        dropout: rate before the class layer.

    Returns:
        A keras_hub ImageClassifier (a Functional model on preprocessed images).

    Raises:
        ValueError: (Keras template) for a bad `arch` or `image_size`.
        RuntimeError: when a preset cannot be downloaded.
    """
    keras_hub = _keras_hub()
    if arch == "vit_tiny":
        if pretrained:
            raise invalid(
                "pretrained", "False for vit_tiny (it has no weights)", pretrained
            )
        if image_size % 8:
            raise invalid(
                "image_size", "a multiple of 8 for vit_tiny (8 x 8 patches)", image_size
            )
        backbone = keras_hub.models.ViTBackbone(
            image_shape=(image_size, image_size, 3),
            patch_size=image_size // 8,
            num_layers=2,
            num_heads=4,
            hidden_dim=64,
            mlp_dim=128,
        )
        return keras_hub.models.ViTImageClassifier(
            backbone=backbone,
            num_classes=num_classes,
            preprocessor=None,
            dropout=dropout,
        )
    preset = _preset(arch)
    try:
        task = keras_hub.models.ImageClassifier.from_preset(
            preset, num_classes=num_classes, load_weights=bool(pretrained)
        )
    except Exception as err:  # Downloads fail with many error types.
        raise RuntimeError(
            f"Could not load the keras-hub preset {preset!r} (no network, or not "
            f"an image-classifier or backbone preset?): {err}. Offline, use "
            "--arch=vit_tiny or small_cnn."
        ) from err
    task.preprocessor = None  # The data pipeline applies the preprocessing.
    return task


def preprocess_for(arch):
    """The per-image preprocessing for `--arch` (None: images in [0, 1]).

    For a preset: its image converter (rescaling and normalisation), applied
    to one float32 (H, W, 3) image in [0, 255], as `load_wsol` calls it.
    """
    if arch in TINY:
        return None
    keras_hub = _keras_hub()
    preset = _preset(arch)
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except Exception as err:
        raise RuntimeError(
            f"Could not load the image converter of keras-hub preset {preset!r} "
            f"(no network?): {err}"
        ) from err

    def preprocess(image):
        return converter(image[None])[0]

    return preprocess
