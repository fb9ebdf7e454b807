"""The models the scripts read and write, and what is recorded about them.

Beside every model it saves, a training script writes `model_info.json`: how
the model reads its inputs (architecture, hence preprocessing; image size) and
what it was trained on. The next stage reads it back.
"""

import json
import os

from training import files

MODEL_INFO_FILE = "model_info.json"


def write_model_info(model_dir, **info):
    """Records how a saved model reads its inputs (arch, image size, dataset)."""
    files.write_json(os.path.join(model_dir, MODEL_INFO_FILE), info)


def read_model_info(model_path):
    """The `model_info.json` beside `model_path` as a dict ({} if absent)."""
    path = os.path.join(os.path.dirname(model_path) or ".", MODEL_INFO_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)
