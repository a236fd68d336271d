"""Runs a browser script (`node <script>`), answering the steps it asks the test to take.

The script prints one JSON object a line: `{"step": …}` asks for something only the test can do
(look into identity's database, disable a user at identity) and waits for the answer on its
standard input; any other object is its result, the last line it prints.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .stack import APP_DIR

Step = Callable[[dict[str, Any]], dict[str, Any]]


def drive(
    script: str,
    args: list[str],
    on_step: Step,
    *,
    env: Mapping[str, str],
    log: Path,
    timeout: float,
) -> dict[str, Any]:
    with (
        log.open("w") as stderr,
        subprocess.Popen(
            ["node", script, *args],
            cwd=APP_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=dict(env),
        ) as process,
    ):
        assert process.stdin is not None and process.stdout is not None
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        result: dict[str, Any] = {}
        try:
            for line in process.stdout:
                message = json.loads(line)
                if "step" in message:
                    process.stdin.write(json.dumps(on_step(message)) + "\n")
                    process.stdin.flush()
                else:
                    result = message
            process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, f"{script}: {result}\n{log.read_text()[-3000:]}"
    return result
