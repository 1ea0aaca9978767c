"""alexctl/stop.py: a stop signal is recorded, acted on at the next safe point, and the handlers restored."""

from __future__ import annotations

import os
import signal

import pytest

from alexctl.errors import WorkFailed
from alexctl.stop import StopSignals


def test_a_signal_is_recorded_then_acted_on_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        stop.check("between two steps")  # nothing asked: no effect
        os.kill(os.getpid(), signal.SIGTERM)  # would end the process without the handler
        assert stop.requested and stop.name == "SIGTERM"
        with pytest.raises(WorkFailed, match="stopped by SIGTERM after step 3"):
            stop.check("after step 3")
    assert signal.getsignal(signal.SIGTERM) is before
