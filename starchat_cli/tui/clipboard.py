"""Copy to the system clipboard with the platform's tool, else OSC 52 through the terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def _commands() -> list[list[str]]:
    if sys.platform == "darwin":
        return [["pbcopy"]]
    if sys.platform == "win32":
        return [["clip"]]
    cmds = []
    if os.environ.get("WAYLAND_DISPLAY"):
        cmds.append(["wl-copy"])
    if os.environ.get("DISPLAY"):
        cmds += [["xclip", "-selection", "clipboard"], ["xsel", "--clipboard", "--input"]]
    return cmds


def system_copy(text: str) -> bool:
    """True when a clipboard tool took the text."""
    for cmd in _commands():
        exe = shutil.which(cmd[0])
        if not exe:
            continue
        try:
            subprocess.run(
                [exe, *cmd[1:]], input=text.encode("utf-8"), check=True, timeout=5, capture_output=True
            )
            return True
        except (OSError, subprocess.SubprocessError):
            continue
    return False
