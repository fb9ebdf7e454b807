"""Model checks written once and called from every model's test.

`run_model_saving_test` is the `.keras` round trip (as keras-hub's
`TestCase.run_model_saving_test`): save, load with safe_mode=True, and compare
the outputs on the same inputs exactly.
"""

import os

import keras
import numpy as np


def _as_dict(outputs):
    if isinstance(outputs, dict):
        return {key: np.asarray(value) for key, value in outputs.items()}
    return {"output": np.asarray(outputs)}


def run_model_saving_test(model, inputs, tmp_path, *, atol=0.0):
    """Saves `model` to `.keras`, reloads it safely, checks identical outputs.

    Args:
        model: a built keras.Model (a DualSigmoidModel or any classifier).
        inputs: a batch the model accepts.
        tmp_path: a folder for the file (pytest's `tmp_path`).
        atol: tolerance; 0 means bit-identical outputs.

    Returns:
        The loaded model, for further checks.
    """
    path = os.fspath(tmp_path / f"{model.name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is type(model), (type(loaded), type(model))
    expected = _as_dict(model.predict(inputs, verbose=0))
    actual = _as_dict(loaded.predict(inputs, verbose=0))
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], value, atol=atol, rtol=0, err_msg=key)
    return loaded
