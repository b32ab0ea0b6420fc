"""Runs a command that the kernel stops when its launcher dies, even by ``kill -9``.

``python -m scripts.with_parent <parent-pid> <command> [args...]`` asks Linux for SIGTERM on
the parent's death (``PR_SET_PDEATHSIG``), then replaces itself with the command: same process,
and the request survives ``exec``. Doing this in a wrapper rather than in ``preexec_fn`` keeps
Python code out of the window between ``fork`` and ``exec``, which is unsafe in a launcher with
threads (gRPC's, for one): the child may abort there. The kernel ties the request to the
launching *thread*: launch from a thread that outlives the child. Elsewhere than Linux the
command simply runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit():
        print(
            "usage: python -m scripts.with_parent <parent-pid> <command> [args...]", file=sys.stderr
        )
        sys.exit(2)
    parent, command = int(argv[0]), argv[1:]
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the launcher died before the request was in place
        sys.exit(1)
    os.execvp(command[0], command)  # noqa: S606 - the launcher's own argv, never a shell


if __name__ == "__main__":
    main(sys.argv[1:])
