"""The table-driven PackML state machine against ISA-TR88.00.02."""

from __future__ import annotations

import itertools

import pytest

from cell.packml import (
    ABORTABLE, ACTING_STATES, STATE_COMPLETE, STOPPABLE, TRANSITIONS, WAIT_STATES, Command, PackMLStateMachine,
    State, TransitionError,
)


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_every_pair_outside_the_table_is_rejected_and_changes_nothing():
    for cmd, st in itertools.product(Command, State):
        if cmd == Command.UNDEFINED:
            continue
        fsm = PackMLStateMachine(FakeTime(), initial=st)
        if (cmd, st) in TRANSITIONS:
            assert fsm.command(cmd) == TRANSITIONS[(cmd, st)]
        else:
            with pytest.raises(TransitionError) as ei:
                fsm.command(cmd)
            assert fsm.state == st
            assert st.label in str(ei.value)


def test_abort_from_everything_but_aborting_and_aborted():
    for st in State:
        expected = st not in (State.ABORTING, State.ABORTED, State.UNDEFINED)
        assert ((Command.ABORT, st) in TRANSITIONS) == expected, st


def test_stop_set_and_wait_states():
    assert State.STOPPED not in STOPPABLE and State.ABORTED not in ABORTABLE
    assert WAIT_STATES == {State.IDLE, State.STOPPED, State.HELD, State.SUSPENDED, State.COMPLETE, State.ABORTED}


def test_every_acting_state_has_exactly_one_sc_edge():
    for st in ACTING_STATES:
        assert st in STATE_COMPLETE
    for st in WAIT_STATES:
        assert st not in STATE_COMPLETE


def test_state_numbers_follow_packtags_v3():
    assert (State.CLEARING, State.STOPPED, State.EXECUTE, State.ABORTED, State.COMPLETE) == (1, 2, 6, 9, 17)
    assert (Command.RESET, Command.START, Command.STOP, Command.ABORT, Command.CLEAR, Command.COMPLETE) == (
        1, 2, 3, 8, 9, 10)


def test_time_accounting_and_listeners():
    t = FakeTime()
    fsm = PackMLStateMachine(t)
    seen = []
    fsm.subscribe(lambda tr: seen.append((tr.source.label, tr.target.label, tr.cause)))
    t.t = 5
    fsm.command("reset")
    t.t = 7
    fsm.state_complete()
    t.t = 8
    fsm.command("start")
    fsm.state_complete()
    t.t = 20
    times = fsm.cumulative_times()
    assert times[State.STOPPED] == 5 and times[State.RESETTING] == 2 and times[State.IDLE] == 1
    assert times[State.EXECUTE] == 12
    assert seen[-1] == ("Starting", "Execute", "sc")
    assert fsm.state_complete(expected=State.HELD) == State.EXECUTE  # guarded SC is a no-op


def test_parse_commands():
    assert Command.parse("ToComplete") == Command.COMPLETE
    with pytest.raises(ValueError):
        Command.parse("launch")
