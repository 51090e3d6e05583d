"""The deterministic sentence parser (visionmesh.ask) and AssistantService on a real dataset_svc.

The table below is the parser's contract: Korean and English sentences -> the fields they
ask for, and the words it must say it could not place.
"""

from __future__ import annotations

import grpc
import pytest

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture
from visionmesh.ask import MODEL_TASK_RULES, parse, task_of_model
from visionmesh.auth import with_token
from visionmesh.v1 import (
    assistant_pb2,
    assistant_pb2_grpc,
    common_pb2,
)

server = dataset_server_fixture([DEFAULT_BACKEND])

# sentence -> (expected fields, expected unparsed words)
CASES: list[tuple[str, dict[str, object], list[str]]] = [
    (
        "seg-coco32 데이터셋으로 yolo11n-seg 학습시작 epochs 20",
        {
            "dataset_phrase": "seg-coco32",
            "model": "yolo11n-seg",
            "task": "instance_segmentation",
            "epochs": 20,
        },
        [],
    ),
    (
        "seg-coco32 데이터셋으로 yolo11n-seg 학습시작",
        {"dataset_phrase": "seg-coco32", "model": "yolo11n-seg", "task": "instance_segmentation"},
        [],
    ),
    (
        "train yolo11n on shapes for 30 epochs",
        {"dataset_phrase": "shapes", "model": "yolo11n", "task": "object_detection", "epochs": 30},
        [],
    ),
    (
        "shapes로 resnet18 분류 학습해줘 배치 32 학습률 0.001 GPU로",
        {
            "dataset_phrase": "shapes",
            "model": "resnet18",
            "task": "image_classification",
            "batch_size": 32,
            "learning_rate": 0.001,
            "device": "cuda",
        },
        [],
    ),
    (
        'train yolo11n-pose on "my shapes" batch=8 imgsz 320 lr 1e-3 on cuda:1 with mosaic',
        {
            "dataset_phrase": "my shapes",
            "model": "yolo11n-pose",
            "task": "pose_estimation",
            "batch_size": 8,
            "image_size": 320,
            "learning_rate": 0.001,
            "device": "cuda:1",
        },
        ["mosaic"],
    ),
    (
        "yolo11n 탐지 모델을 cats 데이터셋에서 20에폭 학습",
        {"dataset_phrase": "cats", "model": "yolo11n", "task": "object_detection", "epochs": 20},
        [],
    ),
    (
        "segment shapes with yolo11s 5 epochs patience 3 seed 7",
        {
            "dataset_phrase": "shapes",
            "model": "yolo11s",
            "task": "instance_segmentation",
            "epochs": 5,
            "patience": 3,
            "seed": 7,
        },
        [],
    ),
    (
        "train detr-micro on coco8 dataset 3 epochs 64px",
        {
            "dataset_phrase": "coco8",
            "model": "detr-micro",
            "task": "object_detection",
            "epochs": 3,
            "image_size": 64,
        },
        [],
    ),
    (
        "flowers 데이터셋 yolo11n-cls 분류 이미지 크기 224 에폭 5 cpu로",
        {
            "dataset_phrase": "flowers",
            "model": "yolo11n-cls",
            "task": "image_classification",
            "image_size": 224,
            "epochs": 5,
            "device": "cpu",
        },
        [],
    ),
    (
        "pose estimation on people using yolo11n batch size 4",
        {
            "dataset_phrase": "people",
            "model": "yolo11n",
            "task": "pose_estimation",
            "batch_size": 4,
        },
        [],
    ),
    (
        "segformer-b0 시맨틱 세그멘테이션 roads 데이터셋으로 학습",
        {"dataset_phrase": "roads", "model": "segformer-b0", "task": "semantic_segmentation"},
        [],
    ),
    ("hello world", {}, ["hello", "world"]),
    (
        "cats 데이터셋 분류 모델 학습 quickly 빨리",
        {"dataset_phrase": "cats", "task": "image_classification"},
        ["quickly", "빨리"],
    ),
]


@pytest.mark.parametrize(("text", "expected", "unparsed"), CASES, ids=[c[0] for c in CASES])
def test_sentence_table(text: str, expected: dict[str, object], unparsed: list[str]) -> None:
    parsed = parse(text)
    assert parsed.fields() == expected
    assert parsed.unparsed == unparsed
    assert parsed.complete == bool(expected.get("dataset_phrase") and expected.get("model"))


def test_notes_say_what_was_assumed_and_what_is_missing() -> None:
    notes = parse("train yolo11n on shapes").notes
    assert any("assumed" in n and "yolo11n" in n for n in notes)
    notes = parse("yolo11n-seg 학습").notes
    assert any("no dataset" in n for n in notes)
    notes = parse("shapes 데이터셋으로 학습").notes
    assert any("no model" in n for n in notes)
    clash = parse("train yolo11n-seg for detection on shapes")
    assert clash.task == "object_detection"
    assert any("instance_segmentation model" in n for n in clash.notes)


def test_model_task_table_in_one_place() -> None:
    assert task_of_model("yolo11n-seg") == ("instance_segmentation", "suffix")
    assert task_of_model("yolo26s-cls") == ("image_classification", "suffix")
    assert task_of_model("yolo11n-pose") == ("pose_estimation", "suffix")
    assert task_of_model("segformer-b0")[0] == "semantic_segmentation"
    assert task_of_model("rt-detr-r18")[0] == "object_detection"
    assert task_of_model("convnext_atto")[0] == "image_classification"
    assert task_of_model("yolo11n") == ("object_detection", "default")
    assert task_of_model("mystery") == ("", "")
    assert all(len(rule) == 3 for rule in MODEL_TASK_RULES)


def test_to_spec_is_a_training_spec() -> None:
    spec = parse("train yolo11n-seg on shapes 2 epochs imgsz 64").to_spec("datasets/abc")
    assert spec.dataset == "datasets/abc"
    assert spec.task_type == common_pb2.TASK_TYPE_INSTANCE_SEGMENTATION
    assert (spec.model, spec.epochs, spec.image_size) == ("yolo11n-seg", 2, 64)


# -- AssistantService on dataset_svc ---------------------------------------------------------


def _assistant(server, client) -> assistant_pb2_grpc.AssistantServiceStub:  # type: ignore[no-untyped-def]
    return assistant_pb2_grpc.AssistantServiceStub(with_token(server.channel(), client.token))


def test_service_resolves_the_dataset_the_caller_can_see(server) -> None:  # type: ignore[no-untyped-def]
    alice, bob = server.user("alice"), server.user("bob")
    mine = alice.create_dataset("seg-coco32")
    public = bob.create_dataset("public-cats", visibility=common_pb2.VISIBILITY_PUBLIC)
    bob.create_dataset("secret-dogs")
    stub = _assistant(server, alice)

    reply = stub.ParseTrainingCommand(
        assistant_pb2.ParseTrainingCommandRequest(
            text="seg-coco32 데이터셋으로 yolo11n-seg 학습시작 epochs 20"
        ),
        timeout=30,
    )
    assert reply.spec.dataset == mine.name
    assert reply.dataset_phrase == "seg-coco32"
    assert reply.spec.model == "yolo11n-seg"
    assert reply.spec.task_type == common_pb2.TASK_TYPE_INSTANCE_SEGMENTATION
    assert reply.spec.epochs == 20
    assert reply.complete and not reply.unparsed

    # by id, and a public dataset of someone else
    by_id = stub.ParseTrainingCommand(
        assistant_pb2.ParseTrainingCommandRequest(
            text=f"train yolo11n on {mine.name.split('/')[1]}"
        ),
        timeout=30,
    )
    assert by_id.spec.dataset == mine.name
    other = stub.ParseTrainingCommand(
        assistant_pb2.ParseTrainingCommandRequest(text="train resnet18 on public-cats"),
        timeout=30,
    )
    assert other.spec.dataset == public.name

    # a private dataset of bob is not found, and not named back
    hidden = stub.ParseTrainingCommand(
        assistant_pb2.ParseTrainingCommandRequest(text="train yolo11n on secret-dogs"),
        timeout=30,
    )
    assert hidden.spec.dataset == "" and not hidden.complete
    assert hidden.dataset_phrase == "secret-dogs"
    assert any("no dataset named 'secret-dogs'" in n for n in hidden.notes)
    assert not any("datasets/" in n for n in hidden.notes)


def test_service_says_when_a_name_is_ambiguous(server) -> None:  # type: ignore[no-untyped-def]
    carol = server.user("carol")
    a = carol.create_dataset("twins")
    b = carol.create_dataset("twins")
    reply = _assistant(server, carol).ParseTrainingCommand(
        assistant_pb2.ParseTrainingCommandRequest(text="train yolo11n on twins"), timeout=30
    )
    assert reply.spec.dataset == "" and not reply.complete
    note = next(n for n in reply.notes if "2 datasets" in n)
    assert a.name in note and b.name in note


def test_service_refuses_empty_text_and_anonymous_callers(server) -> None:  # type: ignore[no-untyped-def]
    dave = server.user("dave")
    stub = _assistant(server, dave)
    with pytest.raises(grpc.RpcError) as err:
        stub.ParseTrainingCommand(assistant_pb2.ParseTrainingCommandRequest(text="  "), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.ParseTrainingCommand(
            assistant_pb2.ParseTrainingCommandRequest(text="x" * 1001), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    anonymous = assistant_pb2_grpc.AssistantServiceStub(server.channel())
    with pytest.raises(grpc.RpcError) as err:
        anonymous.ParseTrainingCommand(
            assistant_pb2.ParseTrainingCommandRequest(text="train yolo11n on x"), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
