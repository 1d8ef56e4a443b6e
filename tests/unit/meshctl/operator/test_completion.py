"""`meshctl completion SHELL` prints a script the shell can source, and the completion it drives works."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

MESHCTL = str(Path(sys.executable).with_name("meshctl"))


@pytest.mark.parametrize(("shell", "marker"), [("bash", "complete -o nosort -F"), ("zsh", "#compdef meshctl"),
                                               ("fish", "complete --no-files --command meshctl")])
def test_script_for_each_shell(shell: str, marker: str) -> None:
    result = subprocess.run([MESHCTL, "completion", shell], capture_output=True, text=True, check=True)
    assert marker in result.stdout and "_MESHCTL_COMPLETE" in result.stdout


def test_the_script_completes_verbs() -> None:
    """What the bash script asks meshctl for, answered for a partial word."""
    env = {**os.environ, "_MESHCTL_COMPLETE": "bash_complete", "COMP_WORDS": "meshctl way", "COMP_CWORD": "1"}
    result = subprocess.run([MESHCTL], capture_output=True, text=True, env=env, check=False)
    assert "plain,waypoint" in result.stdout.splitlines()
