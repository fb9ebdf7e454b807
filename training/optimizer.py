"""The training scripts' optimizer: SGD with Nesterov momentum and step decay.

The authors' recipe (docs/method.md, "Training recipe"): SGD, Nesterov momentum 0.9, weight decay,
the learning rate multiplied by --decay_factor every --decay_every epochs.
"""

import keras

from training.flags import flag

FLAGS = [
    flag("learning_rate", 0.01, "Initial learning rate.", minimum=0, open_minimum=True),
    flag(
        "momentum",
        0.9,
        "Nesterov momentum.",
        minimum=0,
        maximum=1,
        open_maximum=True,
    ),
    flag("weight_decay", 1e-4, "Weight decay (0 disables).", minimum=0),
    flag(
        "decay_every",
        0,
        "Multiply the learning rate by --decay_factor every N epochs (0: never).",
        minimum=0,
    ),
    flag(
        "decay_factor",
        0.1,
        "Step decay factor.",
        minimum=0,
        maximum=1,
        open_minimum=True,
    ),
]


def _decay_epochs(decay_every, epochs):
    return list(range(decay_every, epochs, decay_every)) if decay_every else []


def decay_epochs(flags):
    """The epochs after which the learning rate drops (before --epochs ends)."""
    return _decay_epochs(flags.decay_every, flags.epochs)


def schedule_changed(saved, new):
    """Whether two runs' flags (name -> value) decay the learning rate elsewhere.

    The `compared` test of --epochs: more epochs resume the same run unless
    they add a learning-rate drop that the checkpoint's schedule lacks.
    """
    return _decay_epochs(saved.get("decay_every", 0), saved["epochs"]) != (
        _decay_epochs(new.get("decay_every", 0), new["epochs"])
    )


def learning_rate(flags, steps_per_epoch):
    """The step-decay schedule, or the constant rate when it never decays.

    Args:
        flags: namespace with learning_rate, decay_every, decay_factor, epochs.
        steps_per_epoch: optimizer steps per epoch.

    Returns:
        A float, or a `keras.optimizers.schedules.PiecewiseConstantDecay`
        whose value is `learning_rate * decay_factor**i` from the first step
        of the epoch after the i-th drop on.
    """
    # PiecewiseConstantDecay keeps values[i] while step <= boundaries[i], and
    # the optimizer passes the number of steps done so far: the first step of
    # epoch e + 1 (0-based e * steps) must already see the next value.
    boundaries = [epoch * steps_per_epoch - 1 for epoch in decay_epochs(flags)]
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
