"""The job lifecycle (trainers.runtime.lifecycle): the transition table, transition() refusing
every move it does not list, the final state of a run, and the typed worker protocol."""

from __future__ import annotations

import itertools
import json
import logging
import signal
from dataclasses import dataclass

import pytest

from tests._idle_trainer import MODEL, IdleAdapter
from tests._job_context import spec
from trainers.runtime import lifecycle, records
from trainers.runtime import worker_protocol as protocol
from trainers.runtime.adapter import OBJECT_DETECTION, TrainSpec
from trainers.runtime.jobs import JobManager
from trainers.runtime.lifecycle import (
    STATES,
    TRANSITIONS,
    IllegalTransition,
    RunOutcome,
    final_state,
    transition,
)
from trainers.runtime.records import JobRecord
from visionmesh.store import open_store

# The table written out by hand: what the runtime does today (see lifecycle.TRANSITIONS).
EXPECTED = {
    ("QUEUED", "PREPARING"),  # the worker started
    ("QUEUED", "SUCCEEDED"),  # cancel(stop_early) of a resumed job that has epochs
    ("QUEUED", "FAILED"),  # the worker crashed before reporting, or could not start
    ("QUEUED", "CANCELLED"),
    ("QUEUED", "INTERRUPTED"),  # drain before the worker reported
    ("PREPARING", "RUNNING"),
    ("PREPARING", "SUCCEEDED"),  # resumed with every epoch already recorded
    ("PREPARING", "FAILED"),
    ("PREPARING", "CANCELLED"),
    ("PREPARING", "INTERRUPTED"),
    ("RUNNING", "SUCCEEDED"),
    ("RUNNING", "FAILED"),
    ("RUNNING", "CANCELLED"),
    ("RUNNING", "INTERRUPTED"),
    ("INTERRUPTED", "QUEUED"),  # resume
    ("INTERRUPTED", "PREPARING"),  # recovered after a restart, queued as INTERRUPTED
    ("INTERRUPTED", "SUCCEEDED"),
    ("INTERRUPTED", "FAILED"),
    ("INTERRUPTED", "CANCELLED"),
    ("INTERRUPTED", "INTERRUPTED"),  # drain before a recovered job's worker reported
    ("FAILED", "QUEUED"),  # resume
}
PAIRS = list(itertools.product(STATES, STATES))


@dataclass
class Rec:
    job_id: str = "j1"
    state: str = "QUEUED"
    error: str = ""
    start_time: float = 0.0
    end_time: float = 0.0


def test_the_table_is_the_expected_one():
    listed = {(s, t) for s, targets in TRANSITIONS.items() for t in targets}
    assert listed == EXPECTED
    assert set(TRANSITIONS) == set(STATES)
    for state in ("SUCCEEDED", "CANCELLED"):
        assert not TRANSITIONS[state], f"{state} is final"


@pytest.mark.parametrize(("source", "target"), sorted(EXPECTED))
def test_every_allowed_transition_succeeds(source, target):
    record = Rec(state=source)
    transition(record, target, now=100.0)
    assert record.state == target
    if target in ("PREPARING", "RUNNING"):
        assert record.start_time == 100.0
    if target in lifecycle.TERMINAL:
        assert record.end_time == 100.0
    assert target in lifecycle.TRANSITIONS[source]
    assert source in lifecycle.sources_of(target)


@pytest.mark.parametrize(("source", "target"), sorted(set(PAIRS) - EXPECTED))
def test_every_other_transition_is_refused(source, target):
    record = Rec(state=source, error="before", start_time=1.0, end_time=2.0)
    with pytest.raises(IllegalTransition, match=f"{source} -> {target}"):
        transition(record, target, error="after", now=100.0)
    assert record == Rec(state=source, error="before", start_time=1.0, end_time=2.0)
    assert source not in lifecycle.sources_of(target)


def test_unknown_states_are_refused():
    with pytest.raises(IllegalTransition):
        transition(Rec(state="QUEUED"), "DONE")
    with pytest.raises(IllegalTransition):
        transition(Rec(state="DONE"), "QUEUED")


def test_transition_keeps_the_first_start_time_and_sets_errors():
    record = Rec(state="INTERRUPTED", start_time=5.0)
    transition(record, "PREPARING", now=100.0)
    assert record.start_time == 5.0  # a resumed job keeps when it first started
    transition(record, "FAILED", error="boom", now=200.0)
    assert (record.state, record.error, record.end_time) == ("FAILED", "boom", 200.0)
    transition(record, "QUEUED")
    assert record.error == "boom"  # resume clears it itself (JobManager.resume)
    record.error = "stale"
    transition(record, "PREPARING")
    transition(record, "SUCCEEDED")
    assert record.error == ""  # a job that succeeded has no error


def test_state_sets_are_defined_once():
    # only lifecycle defines them; records (the stored job) does not re-export them
    assert not hasattr(records, "TERMINAL") and not hasattr(records, "ACTIVE")
    assert lifecycle.TERMINAL == {"SUCCEEDED", "FAILED", "CANCELLED"}
    assert lifecycle.ACTIVE == {"PREPARING", "RUNNING"}


# -- final_state: each way a run ends --------------------------------------------------------
DEADLINE = "stopped after max_duration_seconds=30 (epoch 2 of 5; checkpoints kept)"


def outcome(**kw) -> RunOutcome:
    base = dict(rc=0, max_duration_seconds=30, current_epoch=2, total_epochs=5)
    return RunOutcome(**{**base, **kw})


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        pytest.param(outcome(done=True), ("SUCCEEDED", "", ()), id="success"),
        pytest.param(
            outcome(done=True, stopped_early=True),
            ("SUCCEEDED", "", ("[visionmesh] stopped early on request",)),
            id="stop-early",
        ),
        pytest.param(
            outcome(rc=-signal.SIGTERM, cancel_requested=True, done=True),
            ("CANCELLED", "", ("[visionmesh] cancelled; checkpoints discarded",)),
            id="cancel",
        ),
        pytest.param(
            outcome(rc=-signal.SIGTERM, draining=True, error_event="x"),
            ("INTERRUPTED", "", ("[visionmesh] trainer shutting down: job INTERRUPTED",)),
            id="drain",
        ),
        pytest.param(
            outcome(rc=0, done=True, deadline_hit=True),
            ("FAILED", DEADLINE, ()),
            id="deadline-done",
        ),
        pytest.param(
            outcome(rc=-signal.SIGKILL, deadline_hit=True),
            ("FAILED", DEADLINE, ()),
            id="deadline-killed",
        ),
        pytest.param(
            outcome(rc=1, error_event="RuntimeError: boom", deadline_hit=True),
            ("FAILED", "RuntimeError: boom", ()),
            id="error-event",
        ),
        pytest.param(
            outcome(rc=-signal.SIGKILL),
            (
                "FAILED",
                "the training process was killed by SIGKILL (most likely out of memory); "
                "see the job's log",
                (),
            ),
            id="sigkill",
        ),
        pytest.param(
            outcome(rc=-signal.SIGSEGV),
            ("FAILED", "the training process was killed by SIGSEGV; see the job's log", ()),
            id="sigsegv",
        ),
        pytest.param(
            outcome(rc=3),
            ("FAILED", "the training process exited with code 3; see the job's log", ()),
            id="nonzero-exit",
        ),
        pytest.param(
            outcome(rc=0),
            ("FAILED", "the training process exited with code 0; see the job's log", ()),
            id="exit-0-without-done",
        ),
        pytest.param(
            outcome(rc=1, done=True),
            ("FAILED", "the training process exited with code 1; see the job's log", ()),
            id="done-then-nonzero-exit",
        ),
    ],
)
def test_final_state(run, expected):
    state, error, notes = final_state(run)
    assert (state, error, notes) == expected


def test_cancel_wins_over_drain_and_drain_over_success():
    assert final_state(outcome(cancel_requested=True, draining=True)).state == "CANCELLED"
    assert final_state(outcome(draining=True, done=True)).state == "INTERRUPTED"


# -- the worker protocol -------------------------------------------------------------------
EVENTS = [
    protocol.StateEvent("PREPARING"),
    protocol.StateEvent("RUNNING", device="cpu"),
    protocol.PreparedEvent(
        path="/x", class_names=["a"], category_ids=[3], counts={"train": 4}, cached=True
    ),
    protocol.EpochEvent(record={"epoch": 1, "values": {"val/top1": 0.5}}, checkpoints=[]),
    protocol.EpochEvent(record=None, checkpoints=[{"filename": "best.pt", "key": "k"}]),
    protocol.DoneEvent(stopped_early=True),
    protocol.ErrorEvent("ValueError: bad"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.KIND)
def test_events_round_trip_as_one_json_line(event):
    line = protocol.encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["event"] == event.KIND
    assert protocol.decode(line) == event


@pytest.mark.parametrize("state", ["QUEUED", "SUCCEEDED", "FAILED", "CANCELLED", "INTERRUPTED"])
def test_a_worker_cannot_report_a_state_the_manager_decides(state):
    with pytest.raises(ValueError):
        protocol.StateEvent(state)
    with pytest.raises(ValueError):
        protocol.decode(json.dumps({"event": "state", "state": state}))


@pytest.mark.parametrize(
    "line",
    [b"not json", b"[]", b'{"event": "reboot"}', b'{"state": "RUNNING"}', b'{"event": "state"}'],
)
def test_malformed_events_are_refused(line):
    with pytest.raises(ValueError):
        protocol.decode(line)


def test_worker_config_round_trips(tmp_path):
    cfg = protocol.WorkerConfig(
        job_id="j1",
        train_spec=spec(OBJECT_DETECTION, MODEL, extra={"optimizer": "SGD"}),
        work_dir=str(tmp_path),
        best_metric="val/map50",
        spec={"epochs": 2},
        resume=True,
        parent_pid=42,
    )
    back = protocol.WorkerConfig.from_json(cfg.to_json())
    assert back == cfg and isinstance(back.train_spec, TrainSpec)


def test_one_train_spec_builder_reads_the_stored_spec():
    stored = {
        "taskType": "TASK_TYPE_OBJECT_DETECTION",
        "model": MODEL,
        "epochs": 3,
        "batchSize": 4,
        "imageSize": 96,
        "learningRate": 0.02,
        "seed": "7",  # int64 fields are strings in the JSON form
        "device": "cpu",
        "extra": {"optimizer": "SGD"},
    }
    built = TrainSpec.from_spec(stored, "object_detection")
    assert built == TrainSpec(
        task_type="object_detection",
        model=MODEL,
        epochs=3,
        batch_size=4,
        image_size=96,
        learning_rate=0.02,
        seed=7,
        patience=0,
        device="cpu",
        pretrained=False,
        extra={"optimizer": "SGD"},
    )


# -- the manager applies states only through transition() ------------------------------------
def test_the_manager_refuses_an_illegal_transition_and_says_so(tmp_path, caplog):
    url = (tmp_path / "store").as_uri()
    store = open_store(url)
    manager = JobManager(IdleAdapter(), store, home=tmp_path / "home", store_url=url)
    record = JobRecord(
        job_id="j1",
        framework="idle",
        owner="users/alice",
        request_id="",
        spec={},
        task_type=OBJECT_DETECTION,
        model=MODEL,
        dataset="datasets/d",
    )
    job = manager.submit(record)
    with manager.lock:
        assert manager._set_state(job, "PREPARING")
        assert manager._set_state(job, "SUCCEEDED")
        with caplog.at_level(logging.ERROR, logger="visionmesh.trainer"):
            assert not manager._set_state(job, "RUNNING")
    assert record.state == "SUCCEEDED"
    stored = JobRecord.from_json(store.get_bytes(records.run_key("j1", "job.json")))
    assert stored.state == "SUCCEEDED"
    assert "SUCCEEDED -> RUNNING is not an allowed transition" in caplog.text
    # a worker's state event for an ended job changes nothing either
    manager._on_event(job, protocol.StateEvent("RUNNING", device="cpu"))
    assert record.state == "SUCCEEDED"
