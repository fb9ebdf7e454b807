"""The JSON files a run writes (history.json, model_info.json, checkpoint states).

Every file is written atomically (a temporary file renamed into place), so a
run killed at any moment leaves either the old file or the new one.
"""

import json
import os

HISTORY_FILE = "history.json"


def write_json(path, payload):
    """Writes `payload` as JSON to `path` atomically (temporary file + rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(path + ".tmp", path)


def write_history(model_dir, history):
    """Writes the per-epoch logs of a run to `<model_dir>/history.json`."""
    write_json(os.path.join(model_dir, HISTORY_FILE), history)
