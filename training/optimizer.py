"""The training scripts' optimizer: SGD with Nesterov momentum and step decay.

The authors' recipe (METHOD.md): SGD, Nesterov momentum 0.9, weight decay,
the learning rate multiplied by --decay_factor every --decay_every epochs.
"""

import keras

from training.flags import flag

FLAGS = [
    flag("learning_rate", 0.01, "Initial learning rate."),
    flag("momentum", 0.9, "Nesterov momentum."),
    flag("weight_decay", 1e-4, "Weight decay (0 disables)."),
    flag(
        "decay_every", 0, "Multiply the learning rate by --decay_factor every N epochs."
    ),
    flag("decay_factor", 0.1, "Step decay factor."),
]


def decay_epochs(flags):
    """The epochs after which the learning rate drops (before --epochs ends)."""
    if not flags.decay_every:
        return []
    return list(range(flags.decay_every, flags.epochs, flags.decay_every))


def learning_rate(flags, steps_per_epoch):
    """The step-decay schedule, or the constant rate when it never decays.

    Args:
        flags: namespace with learning_rate, decay_every, decay_factor, epochs.
        steps_per_epoch: optimizer steps per epoch.

    Returns:
        A float, or a `keras.optimizers.schedules.PiecewiseConstantDecay`
        whose value is `learning_rate * decay_factor**i` after the i-th drop.
    """
    boundaries = [epoch * steps_per_epoch for epoch in decay_epochs(flags)]
    if not boundaries:
        return flags.learning_rate
    values = [
        flags.learning_rate * flags.decay_factor**i for i in range(len(boundaries) + 1)
    ]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def sgd(flags, steps_per_epoch):
    """SGD with Nesterov momentum, step decay (x decay_factor) and weight decay."""
    return keras.optimizers.SGD(
        learning_rate=learning_rate(flags, steps_per_epoch),
        momentum=flags.momentum,
        nesterov=True,
        weight_decay=flags.weight_decay or None,
    )
