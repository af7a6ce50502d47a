"""Under coverage (scripts/test), a twistd child saves its coverage data before dying of its own signal.

twistd stops on SIGTERM/SIGINT, then re-raises the signal at itself with the
default handler (C{twisted.application.app._exitWithSignal}), so no atexit
handler runs and coverage would lose everything the child measured. This
wraps C{os.kill} for that one case. It is loaded only in processes that
coverage measures, by the .pth file scripts/test writes into .venv.
"""

from __future__ import annotations

import os
import signal

_kill = os.kill


def _save_then_kill(pid: int, sig: int) -> None:
    if pid == os.getpid() and sig in (signal.SIGTERM, signal.SIGINT):
        import coverage

        current = coverage.Coverage.current()
        if current is not None:
            current.stop()
            current.save()
    _kill(pid, sig)


os.kill = _save_then_kill
