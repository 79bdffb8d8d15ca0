"""The PackML state machine (ISA-TR88.00.02), table-driven.

One :class:`PackMLStateMachine` instance governs a cell.  It knows nothing of
transports: HTTP, OPC UA, ROS 2 and the CLI all call :meth:`command`, and
acting states are completed by the supervisor calling :meth:`state_complete`.

State numbers are the PackTags v3 / OPC 30050 values; command numbers are
TR88's ``CntrlCmd`` values (Reset 1 … Complete 10).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class State(enum.IntEnum):
    UNDEFINED = 0
    CLEARING = 1
    STOPPED = 2
    STARTING = 3
    IDLE = 4
    SUSPENDED = 5
    EXECUTE = 6
    STOPPING = 7
    ABORTING = 8
    ABORTED = 9
    HOLDING = 10
    HELD = 11
    UNHOLDING = 12
    SUSPENDING = 13
    UNSUSPENDING = 14
    RESETTING = 15
    COMPLETING = 16
    COMPLETE = 17

    @property
    def label(self) -> str:
        """The PackML name, e.g. ``"Execute"``."""
        return self.name.capitalize()

    @classmethod
    def parse(cls, text: str) -> "State":
        return cls[text.strip().upper()]


class Command(enum.IntEnum):
    UNDEFINED = 0
    RESET = 1
    START = 2
    STOP = 3
    HOLD = 4
    UNHOLD = 5
    SUSPEND = 6
    UNSUSPEND = 7
    ABORT = 8
    CLEAR = 9
    COMPLETE = 10

    @classmethod
    def parse(cls, text: str) -> "Command":
        key = text.strip().upper()
        if key == "TOCOMPLETE":
            key = "COMPLETE"
        if key not in cls.__members__ or key == "UNDEFINED":
            raise ValueError(f"unknown PackML command {text!r}")
        return cls[key]


S = State
WAIT_STATES = frozenset({S.IDLE, S.STOPPED, S.HELD, S.SUSPENDED, S.COMPLETE, S.ABORTED})
ACTING_STATES = frozenset(
    {S.CLEARING, S.STARTING, S.STOPPING, S.ABORTING, S.HOLDING, S.UNHOLDING, S.SUSPENDING,
     S.UNSUSPENDING, S.RESETTING, S.COMPLETING}
)
STOPPABLE = frozenset(
    {S.RESETTING, S.IDLE, S.STARTING, S.EXECUTE, S.COMPLETING, S.COMPLETE, S.HOLDING, S.HELD,
     S.UNHOLDING, S.SUSPENDING, S.SUSPENDED, S.UNSUSPENDING}
)
ABORTABLE = STOPPABLE | {S.STOPPED, S.STOPPING, S.CLEARING}

C = Command
TRANSITIONS: dict[tuple[Command, State], State] = {
    (C.RESET, S.STOPPED): S.RESETTING,
    (C.RESET, S.COMPLETE): S.RESETTING,
    (C.START, S.IDLE): S.STARTING,
    (C.HOLD, S.EXECUTE): S.HOLDING,
    (C.UNHOLD, S.HELD): S.UNHOLDING,
    (C.SUSPEND, S.EXECUTE): S.SUSPENDING,
    (C.UNSUSPEND, S.SUSPENDED): S.UNSUSPENDING,
    (C.COMPLETE, S.EXECUTE): S.COMPLETING,
    (C.CLEAR, S.ABORTED): S.CLEARING,
    **{(C.STOP, s): S.STOPPING for s in STOPPABLE},
    **{(C.ABORT, s): S.ABORTING for s in ABORTABLE},
}
"""(command, from-state) → to-state.  Anything absent is an illegal transition."""

STATE_COMPLETE: dict[State, State] = {
    S.RESETTING: S.IDLE,
    S.STARTING: S.EXECUTE,
    S.COMPLETING: S.COMPLETE,
    S.HOLDING: S.HELD,
    S.UNHOLDING: S.EXECUTE,
    S.SUSPENDING: S.SUSPENDED,
    S.UNSUSPENDING: S.EXECUTE,
    S.STOPPING: S.STOPPED,
    S.ABORTING: S.ABORTED,
    S.CLEARING: S.STOPPED,
    S.EXECUTE: S.COMPLETING,  # job target reached
}
"""Acting state → the state it reaches when its work is done (SC)."""


class TransitionError(Exception):
    """An illegal command for the current state; carries a human-readable reason."""

    def __init__(self, command: Command, state: State) -> None:
        self.command = command
        self.state = state
        legal = ", ".join(c.name.lower() for c in legal_commands(state)) or "none"
        super().__init__(f"{command.name.lower()} is not allowed in {state.label} (allowed: {legal})")


def legal_commands(state: State) -> list[Command]:
    """Commands accepted in ``state``, in CntrlCmd order."""
    return [c for c in Command if (c, state) in TRANSITIONS]


@dataclass(frozen=True, slots=True)
class Transition:
    time: float
    source: State
    target: State
    cause: str
    """The command name, ``"sc"`` for state complete, or ``"init"``."""


Listener = Callable[[Transition], None]


class PackMLStateMachine:
    """The table-driven PackML FSM with time accounting.

    ``clock`` is any zero-argument callable returning seconds.  Listeners are
    called synchronously after every transition, in registration order.
    """

    def __init__(self, clock: Callable[[], float], initial: State = S.STOPPED) -> None:
        self._clock = clock
        self._state = initial
        self._entered = clock()
        self._listeners: list[Listener] = []
        self.cumulative: dict[State, float] = {s: 0.0 for s in State}
        self.history: list[Transition] = [Transition(self._entered, S.UNDEFINED, initial, "init")]

    @property
    def state(self) -> State:
        return self._state

    @property
    def entered_at(self) -> float:
        return self._entered

    def time_in_state(self) -> float:
        return self._clock() - self._entered

    def cumulative_times(self) -> dict[State, float]:
        """Seconds spent in each state, including the current one up to now."""
        out = dict(self.cumulative)
        out[self._state] += self.time_in_state()
        return out

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def can(self, command: Command | str) -> bool:
        cmd = Command.parse(command) if isinstance(command, str) else command
        return (cmd, self._state) in TRANSITIONS

    def legal_commands(self) -> list[Command]:
        return legal_commands(self._state)

    def command(self, command: Command | str) -> State:
        """Apply a command. Raises :class:`TransitionError` (state unchanged) when illegal."""
        cmd = Command.parse(command) if isinstance(command, str) else command
        target = TRANSITIONS.get((cmd, self._state))
        if target is None:
            raise TransitionError(cmd, self._state)
        self._go(target, cmd.name.lower())
        return target

    def state_complete(self, expected: State | None = None) -> State:
        """Finish the current acting state (SC). With ``expected``, only if still in it."""
        if expected is not None and self._state != expected:
            return self._state
        target = STATE_COMPLETE.get(self._state)
        if target is None:
            raise RuntimeError(f"{self._state.label} is a wait state; it has no state-complete transition")
        self._go(target, "sc")
        return target

    def _go(self, target: State, cause: str) -> None:
        now = self._clock()
        self.cumulative[self._state] += now - self._entered
        tr = Transition(now, self._state, target, cause)
        self._state = target
        self._entered = now
        self.history.append(tr)
        for listener in list(self._listeners):
            listener(tr)
