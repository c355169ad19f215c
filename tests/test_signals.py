"""Signal dispositions: an ignored SIGINT stays ignored (`nohup`, a script's `cmd &`), a default one is Ctrl-C."""
import os
import signal

import pytest

from refiner_edge.artifacts import deferred_interrupts


@pytest.fixture
def restore_sigint():
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


def test_an_ignored_sigint_stays_ignored_while_interrupts_are_deferred(restore_sigint):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_a_sigint_while_interrupts_are_deferred_is_raised_after_the_block(restore_sigint):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    done = False
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            done = True
    assert done and signal.getsignal(signal.SIGINT) is signal.default_int_handler
