"""Named crash points for tests: `R2U_FAULT=<point>:<n>` kills the process with SIGKILL
the n-th time it reaches `point` (n defaults to 1).

A crash test sets the variable in a child process's environment and so stops training
exactly between two writes (say, after the latest checkpoint and before validation),
the way `kill -9` would, without polling files or timing a kill. Unset, `point` costs a
dictionary look-up.
"""

import os
import signal

from absl import logging

ENV = "R2U_FAULT"
POINTS = ("after_latest_save", "after_validation", "after_best_save",
          "after_validation_save")

_reached = {}


def point(name: str) -> None:
    """Marks crash point `name`; kills this process if `R2U_FAULT` asks for it now."""
    if name not in POINTS:
        raise ValueError(f"unknown crash point {name!r}; expected one of {POINTS}")
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, count = parse(spec)
    if target != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == count:
        logging.warning("%s=%s: killing this process (SIGKILL) at %s", ENV, spec, name)
        logging.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def parse(spec: str) -> tuple:
    """'after_validation:2' -> ('after_validation', 2); raises ValueError if malformed."""
    name, _, count = spec.partition(":")
    if name not in POINTS or not (count or "1").isdigit() or int(count or "1") < 1:
        raise ValueError(f"{ENV}={spec!r}: expected <point>[:<n>] with point one of "
                         f"{POINTS} and n >= 1")
    return name, int(count or "1")
