"""A small CNN classifier for the embedded dataset and quick experiments."""

import keras

from keras_dualsig._errors import invalid


def small_cnn(
    num_classes,
    input_shape=(96, 96, 3),
    *,
    width=32,
    dropout=0.3,
    classifier_activation="softmax",
    name="small_cnn",
):
    """A small VGG-style CNN with a ResNet-style head: convs -> GAP -> Dense.

    Five 3x3 Conv-BN-ReLU layers (widths w, w, 2w, 2w, 4w; the first with
    stride 2, max pooling after the second and the fourth), so a 96x96 input
    gives a 12x12 feature map (the layer "features") for the CAMs; then global
    average pooling, dropout and a Dense classifier ("predictions"). About
    0.15 M parameters and 65 M multiply-adds per 96x96 image at the default
    width: it trains to over 90% accuracy on the embedded cluttered MNIST in
    a few CPU minutes.

    Args:
        num_classes: number of classes C (>= 2).
        input_shape: (height, width, channels) of the input, pixel values
            expected in [0, 1].
        width: channels of the first layer.
        dropout: dropout rate before the classifier.
        classifier_activation: "softmax", or None for logits.
        name: model name.

    Returns:
        Functional keras.Model, (B, H, W, C_in) -> (B, num_classes).
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise invalid("num_classes", "an int >= 2", num_classes)
    if len(input_shape) != 3:
        raise invalid("input_shape", "(height, width, channels)", input_shape)
    layers = keras.layers
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    # (filters multiplier, stride, max-pool after): 96 -> 48 -> 24 -> 12.
    plan = [(1, 2, False), (1, 1, True), (2, 1, False), (2, 1, True), (4, 1, False)]
    for index, (multiplier, stride, pool) in enumerate(plan, start=1):
        x = layers.Conv2D(
            width * multiplier,
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            name=f"conv{index}",
        )(x)
        # Momentum 0.9: moving statistics settle within the few hundred steps
        # of a short run (Keras' default 0.99 lags behind the weights).
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{index}")(x)
        x = layers.ReLU(name="features" if index == len(plan) else f"relu{index}")(x)
        if pool:
            x = layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(
        num_classes, activation=classifier_activation, name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name=name)
