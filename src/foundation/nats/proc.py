"""Child-process hygiene: children started by a node die with it.

``die_with_parent`` is passed as ``preexec_fn`` when we start a ``nats-server`` or a node
process. On Linux it asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGTERM)``) to send the child
SIGTERM when the process that started it dies, so a crashed or SIGKILLed parent never leaves
an orphaned server or node behind. Elsewhere it does nothing.

The kernel ties the signal to the *thread* that started the child: start children from the
event-loop thread or from a long-lived worker (``asyncio.to_thread`` workers live until the loop
closes), never from a short-lived thread.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a freshly forked child: arrange SIGTERM when the parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The parent may have died between fork and prctl: then we are already orphaned.
    if os.getppid() == 1:
        os.kill(os.getpid(), signal.SIGTERM)
