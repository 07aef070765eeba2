"""Worker print output reaches the driver's terminal, each line prefixed like Ray's."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

import peer as ray


@ray.remote
def say_hello(name: str) -> int:
    print(f"hello {name}")
    print("to stderr", file=sys.stderr)
    print("partial line without newline", end="")
    return 1


@ray.remote
class Talker:
    def talk(self) -> None:
        print("actor speaking")


def _wait_for(capfd: pytest.CaptureFixture[str], needles: list[str]) -> tuple[str, str]:
    out, err = "", ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        o, e = capfd.readouterr()
        out, err = out + o, err + e
        if all(n in out + err for n in needles):
            break
        time.sleep(0.05)
    return out, err


def test_print_is_prefixed(make_cluster: Any, capfd: pytest.CaptureFixture[str]) -> None:
    make_cluster(num_cpus=2)  # started inside the test so its workers write to capfd's files
    assert ray.get(say_hello.remote("world")) == 1
    talker = Talker.remote()
    ray.get(talker.talk.remote())
    out, err = _wait_for(capfd, ["hello world", "to stderr", "actor speaking", "partial line"])

    hello = [line for line in out.splitlines() if line.endswith("hello world")]
    assert hello and hello[0].startswith("(say_hello pid="), out
    assert any(line.startswith("(say_hello pid=") and line.endswith("to stderr") for line in err.splitlines()), err
    assert any(line.startswith("(say_hello pid=") and "partial line" in line for line in out.splitlines()), out
    assert any(line.startswith("(Talker pid=") and line.endswith("actor speaking") for line in out.splitlines()), out
    ray.kill(talker)
