"""The job lifecycle: states, the transitions allowed between them, and the final state of a run.

Every change of a job's state goes through :func:`transition`, which refuses a move the
table does not allow (:class:`IllegalTransition`). How a run of the worker ended is
described by a :class:`RunOutcome`; :func:`final_state` turns it into the job's next state
(a pure function). No torch, no grpc here.

::

    QUEUED ──▶ PREPARING ──▶ RUNNING ──▶ SUCCEEDED | FAILED | CANCELLED
       ▲           │            │
       │           └────────────┴──▶ INTERRUPTED (drain, restart) ──▶ PREPARING (resumed)
       └── resume ◀── INTERRUPTED | FAILED
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import NamedTuple, Protocol

QUEUED = "QUEUED"
PREPARING = "PREPARING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
INTERRUPTED = "INTERRUPTED"
STATES = (QUEUED, PREPARING, RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})
ACTIVE = frozenset({PREPARING, RUNNING})
# The states a job's worker may report; everything else is the manager's decision.
WORKER_STATES = ACTIVE

# source -> targets. A job is created QUEUED (no transition). Where each move comes from:
#   QUEUED/INTERRUPTED -> PREPARING   the worker started (INTERRUPTED: recovered after a restart)
#   PREPARING -> RUNNING              the worker reported its device
#   any non-final -> SUCCEEDED        the run ended done; or cancel(stop_early) of a waiting
#                                     job that has epochs (PREPARING: every epoch was recorded)
#   any non-final -> FAILED           error event, deadline, crash, or the run could not start
#   any non-final -> CANCELLED        cancel
#   any non-final -> INTERRUPTED      drain (SIGTERM), restart; INTERRUPTED again when the
#                                     trainer drains before a recovered job's worker reported
#   INTERRUPTED/FAILED -> QUEUED      resume
TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({PREPARING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED}),
    PREPARING: frozenset({RUNNING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED, INTERRUPTED}),
    INTERRUPTED: frozenset({QUEUED, PREPARING, SUCCEEDED, FAILED, CANCELLED, INTERRUPTED}),
    FAILED: frozenset({QUEUED}),
    SUCCEEDED: frozenset(),
    CANCELLED: frozenset(),
}


def sources_of(target: str) -> frozenset[str]:
    """The states a job may move to ``target`` from (for a compare-and-set update)."""
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


def allowed(source: str, target: str) -> bool:
    return target in TRANSITIONS.get(source, frozenset())


class IllegalTransition(Exception):
    def __init__(self, job: str, source: str, target: str) -> None:
        super().__init__(f"{job}: {source} -> {target} is not an allowed transition")
        self.source = source
        self.target = target


class Stateful(Protocol):
    """What :func:`transition` needs of a job record (records.JobRecord)."""

    job_id: str
    state: str
    error: str
    start_time: float
    end_time: float


def transition(record: Stateful, target: str, *, error: str = "", now: float | None = None) -> None:
    """Move ``record`` to ``target``: set its state, its start time on first PREPARING/RUNNING,
    its end time on a final state, its error when given (cleared on SUCCEEDED).
    IllegalTransition (record unchanged) when the table does not allow it."""
    if not allowed(record.state, target):
        raise IllegalTransition(record.job_id, record.state, target)
    now = time.time() if now is None else now
    record.state = target
    if error:
        record.error = error
    elif target == SUCCEEDED:
        record.error = ""
    if target in ACTIVE and not record.start_time:
        record.start_time = now
    if target in TERMINAL:
        record.end_time = now


@dataclass(frozen=True)
class RunOutcome:
    """How one run of a job's worker ended (what the manager saw)."""

    rc: int  # the worker's exit code (negative: killed by that signal)
    cancel_requested: bool = False
    draining: bool = False
    done: bool = False  # the worker sent its done event
    stopped_early: bool = False  # ... saying it stopped on request
    error_event: str = ""  # the message of the worker's error event
    deadline_hit: bool = False  # max_duration_seconds ran out
    max_duration_seconds: int | str | None = None  # as in the spec, for the message
    current_epoch: int = 0
    total_epochs: int = 0


class Final(NamedTuple):
    """What :func:`final_state` decides: unpacks as ``state, error, notes``."""

    state: str
    error: str = ""
    # job log lines to write before the state changes ("job <STATE>" follows it)
    notes: tuple[str, ...] = ()


def final_state(outcome: RunOutcome) -> Final:
    """The state a run leaves its job in, the error to record, and what to say in its log."""
    if outcome.cancel_requested:
        return Final(CANCELLED, notes=("[visionmesh] cancelled; checkpoints discarded",))
    if outcome.draining:
        return Final(INTERRUPTED, notes=("[visionmesh] trainer shutting down: job INTERRUPTED",))
    deadline = (
        f"stopped after max_duration_seconds={outcome.max_duration_seconds} "
        f"(epoch {outcome.current_epoch} of {outcome.total_epochs}; checkpoints kept)"
    )
    if outcome.done and outcome.rc == 0:
        if outcome.deadline_hit:
            return Final(FAILED, deadline)
        if outcome.stopped_early:
            return Final(SUCCEEDED, notes=("[visionmesh] stopped early on request",))
        return Final(SUCCEEDED)
    if outcome.error_event:
        return Final(FAILED, outcome.error_event)
    if outcome.deadline_hit:
        return Final(FAILED, deadline)
    return Final(FAILED, exit_reason(outcome.rc) + "; see the job's log")


def exit_reason(rc: int) -> str:
    if rc >= 0:
        return f"the training process exited with code {rc}"
    name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else rc
    why = f"the training process was killed by {name}"
    if rc == -signal.SIGKILL:
        why += " (most likely out of memory)"
    return why
