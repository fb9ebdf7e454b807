"""The JSON files a run writes (history.json, model_info.json, checkpoint states).

Every file is written atomically (a temporary file, flushed to disk, renamed
into place), so a run killed at any moment leaves either the old file or the
new one; `read_json` names a file that is truncated all the same (a copy cut
short, a full disk).
"""

import json
import os

HISTORY_FILE = "history.json"


def write_json(path, payload):
    """Writes `payload` as JSON to `path` atomically (temporary file + rename)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def read_json(path):
    """The JSON value stored in `path`.

    Raises:
        ValueError: naming the file when it is truncated or not JSON.
    """
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is truncated or not JSON ({len(text)} bytes; {err})"
        ) from err


def write_history(model_dir, history):
    """Writes the per-epoch logs of a run to `<model_dir>/history.json`."""
    write_json(os.path.join(model_dir, HISTORY_FILE), history)
