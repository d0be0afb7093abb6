"""The environment that makes starchat's llama.cpp backend crash natively (see sitecustomize.py).

run_starchat([...], env=faults.env(at="prompt", how="segv", unless={"amx": "off"}))
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def env(at: str, how: str = "segv", unless: dict[str, str] | None = None, after: int = 3) -> dict[str, str]:
    plan = {"at": at, "how": how, "unless": unless or {}, "after": after}
    path = os.pathsep.join(filter(None, [str(FOLDER), os.environ.get("PYTHONPATH")]))
    return {"STARCHAT_FAULT": json.dumps(plan), "PYTHONPATH": path}
