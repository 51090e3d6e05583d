"""The deterministic sentence parser behind ``vmesh ask`` and the web UI's chat box.

No language model: a sentence is cut into words, each word (or pair of words) is matched
against the tables below, and whatever matches nothing is reported back as ``unparsed``.
Korean and English forms are both understood, and may be mixed::

    >>> parse("seg-coco32 데이터셋으로 yolo11n-seg 학습시작 epochs 20").summary()
    'dataset=seg-coco32 model=yolo11n-seg task=instance_segmentation epochs=20'
    >>> parse("train yolo11n on shapes for 30 epochs").summary()
    'dataset=shapes model=yolo11n task=object_detection epochs=30'

Everything the parser knows is in the tables of this module, in one place:
:data:`TASK_WORDS` (task words), :data:`MODEL_TASK_RULES` (the task a model name implies),
:data:`MODEL_PATTERNS` (what a model name looks like), :data:`NUMBER_KEYS` (hyperparameter
keywords), :data:`DEVICE_WORDS`, :data:`FILLER` (words that carry no request) and
:data:`PARTICLES` (Korean particles that may stick to a word).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_TEXT = 1000

# Task keys and their TaskType enum names (visionmesh.v1.TaskType).
TASK_ENUMS = {
    "image_classification": "TASK_TYPE_IMAGE_CLASSIFICATION",
    "object_detection": "TASK_TYPE_OBJECT_DETECTION",
    "instance_segmentation": "TASK_TYPE_INSTANCE_SEGMENTATION",
    "semantic_segmentation": "TASK_TYPE_SEMANTIC_SEGMENTATION",
    "pose_estimation": "TASK_TYPE_POSE_ESTIMATION",
}

# Words that name a task; two-word forms are tried before one-word forms.
TASK_WORDS: dict[tuple[str, ...], str] = {
    ("instance", "segmentation"): "instance_segmentation",
    ("semantic", "segmentation"): "semantic_segmentation",
    ("object", "detection"): "object_detection",
    ("image", "classification"): "image_classification",
    ("pose", "estimation"): "pose_estimation",
    ("인스턴스", "세그멘테이션"): "instance_segmentation",
    ("시맨틱", "세그멘테이션"): "semantic_segmentation",
    ("의미", "분할"): "semantic_segmentation",
    ("객체", "탐지"): "object_detection",
    ("객체", "검출"): "object_detection",
    ("이미지", "분류"): "image_classification",
    ("포즈", "추정"): "pose_estimation",
    ("자세", "추정"): "pose_estimation",
    ("segment",): "instance_segmentation",
    ("segmentation",): "instance_segmentation",
    ("seg",): "instance_segmentation",
    ("semantic",): "semantic_segmentation",
    ("detect",): "object_detection",
    ("detection",): "object_detection",
    ("detector",): "object_detection",
    ("classify",): "image_classification",
    ("classification",): "image_classification",
    ("classifier",): "image_classification",
    ("cls",): "image_classification",
    ("pose",): "pose_estimation",
    ("keypoints",): "pose_estimation",
    ("keypoint",): "pose_estimation",
    ("세그멘테이션",): "instance_segmentation",
    ("세그",): "instance_segmentation",
    ("분할",): "instance_segmentation",
    ("탐지",): "object_detection",
    ("검출",): "object_detection",
    ("객체탐지",): "object_detection",
    ("디텍션",): "object_detection",
    ("분류",): "image_classification",
    ("포즈",): "pose_estimation",
    ("자세",): "pose_estimation",
    ("키포인트",): "pose_estimation",
}

# The task a model name implies: (regular expression on the lower-cased name, task, how
# sure). "suffix" rules are the frameworks' own naming; "family" rules follow from a family
# that trains one task only; "default" is an assumption the parser says out loud.
MODEL_TASK_RULES: tuple[tuple[str, str, str], ...] = (
    (r"-seg$", "instance_segmentation", "suffix"),
    (r"-cls$", "image_classification", "suffix"),
    (r"-pose$", "pose_estimation", "suffix"),
    (r"^segformer", "semantic_segmentation", "family"),
    (r"(^|-)detr|^yolos", "object_detection", "family"),
    (
        r"^(resnet|efficientnet|mobilenet|convnext|vit|deit|swin|regnet|test_)",
        "image_classification",
        "family",
    ),
    (r"^yolo", "object_detection", "default"),
)

# What a model name looks like (lower-cased), besides a word after "model" / "모델".
MODEL_PATTERNS: tuple[str, ...] = (
    r"yolo(v?\d+)[nsmlx]?(-(seg|cls|pose))?",
    r"yolos-[a-z0-9]+",
    r"(rt-|conditional-|deformable-)?detr(-[a-z0-9]+)?",
    r"segformer(-[a-z0-9]+)?",
    r"resnet\d+[a-z]?",
    r"(efficientnet|mobilenetv\d|mobilenet|convnext|regnet[xy]?|vit|deit|swin)[-_][a-z0-9_]+",
    r"test_(resnet|convnext|efficientnet|vit)",
)

# Hyperparameter keywords -> (spec field, type). A number after (or before) one is its value.
NUMBER_KEYS: dict[tuple[str, ...], tuple[str, type]] = {
    ("epochs",): ("epochs", int),
    ("epoch",): ("epochs", int),
    ("ep",): ("epochs", int),
    ("에폭",): ("epochs", int),
    ("에포크",): ("epochs", int),
    ("batch", "size"): ("batch_size", int),
    ("batch",): ("batch_size", int),
    ("batch_size",): ("batch_size", int),
    ("batchsize",): ("batch_size", int),
    ("bs",): ("batch_size", int),
    ("배치", "크기"): ("batch_size", int),
    ("배치", "사이즈"): ("batch_size", int),
    ("배치크기",): ("batch_size", int),
    ("배치",): ("batch_size", int),
    ("image", "size"): ("image_size", int),
    ("img", "size"): ("image_size", int),
    ("imgsz",): ("image_size", int),
    ("image_size",): ("image_size", int),
    ("imgsize",): ("image_size", int),
    ("size",): ("image_size", int),
    ("이미지", "크기"): ("image_size", int),
    ("이미지", "사이즈"): ("image_size", int),
    ("이미지크기",): ("image_size", int),
    ("해상도",): ("image_size", int),
    ("learning", "rate"): ("learning_rate", float),
    ("lr",): ("learning_rate", float),
    ("lr0",): ("learning_rate", float),
    ("learning_rate",): ("learning_rate", float),
    ("학습률",): ("learning_rate", float),
    ("러닝레이트",): ("learning_rate", float),
    ("patience",): ("patience", int),
    ("인내",): ("patience", int),
    ("seed",): ("seed", int),
    ("시드",): ("seed", int),
}
# Units written after a number ("20에폭", "320px") that name its field.
NUMBER_UNITS: dict[str, str] = {
    "epochs": "epochs",
    "epoch": "epochs",
    "ep": "epochs",
    "에폭": "epochs",
    "에포크": "epochs",
    "px": "image_size",
    "픽셀": "image_size",
}

# Device words -> the TrainingSpec.device value.
DEVICE_WORDS: dict[str, str] = {
    "cpu": "cpu",
    "gpu": "cuda",
    "cuda": "cuda",
    "씨피유": "cpu",
    "지피유": "cuda",
}
DEVICE_RE = re.compile(r"^(cuda:\d+|gpu:?\d+|mps)$")

# Words that carry no part of the request.
FILLER: frozenset[str] = frozenset(
    """
    train training trains start run fit please a an the model models for with to on using use
    and of in my it now kick off launch begin go do new job me can you could would let lets
    let's from as at by then dataset data set images up via named called
    학습 학습시작 학습시켜 학습시켜줘 학습해 학습해줘 학습해주세요 훈련 훈련시작 훈련해줘 시작 시작해
    시작해줘 시작해주세요 해줘 해 주세요 해주세요 돌려 돌려줘 돌려주세요 모델 데이터셋 데이터 으로 로
    에서 을 를 좀 하고 하기 해봐 부탁해 부탁합니다 돌리기 만들어줘 진행 진행해줘 사용 사용해서 이용해서
    번 회 동안 설정 로는 으로는 그리고 및 와 과
    """.split()
)

# Korean particles that stick to the word before them (longest first).
PARTICLES: tuple[str, ...] = (
    "데이터셋으로",
    "데이터셋에서",
    "데이터셋을",
    "데이터셋를",
    "데이터셋의",
    "데이터셋에",
    "데이터셋",
    "데이터로",
    "데이터에서",
    "으로",
    "에서",
    "로",
    "을",
    "를",
    "에",
    "의",
    "이",
    "가",
    "은",
    "는",
    "와",
    "과",
    "로는",
    "으로는",
)
DATASET_PARTICLES = frozenset(
    {
        "데이터셋으로",
        "데이터셋에서",
        "데이터셋을",
        "데이터셋를",
        "데이터셋의",
        "데이터셋에",
        "데이터셋",
        "데이터로",
        "데이터에서",
        "으로",
        "로",
        "에서",
    }
)
# Words after which the next word is the dataset ("segment shapes" segments a dataset).
DATASET_BEFORE = frozenset(
    {"on", "dataset", "using", "데이터셋", "data", "from", "segment", "detect", "classify"}
)
DATASET_AFTER = frozenset(
    {"dataset", "data", "데이터셋", "데이터셋으로", "데이터셋에서", "데이터로"}
)
MODEL_BEFORE = frozenset({"model", "모델", "train", "fit", "finetune", "fine-tune"})

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_NUMBER_UNIT = re.compile(r"^(\d+(?:\.\d*)?)([a-z가-힣]+)$")
_HANGUL = re.compile(r"[가-힣]")
_EDGE_PUNCT = ".,!?;()[]{}\"'“”‘’"


@dataclass
class ParsedCommand:
    """What a sentence asked for. Numbers left at 0 / text left empty were not given."""

    text: str = ""
    dataset_phrase: str = ""
    model: str = ""
    task: str = ""  # a key of TASK_ENUMS, or ""
    epochs: int = 0
    batch_size: int = 0
    image_size: int = 0
    learning_rate: float = 0.0
    patience: int = 0
    seed: int = 0
    device: str = ""
    unparsed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """A dataset and a model: enough to confirm as is."""
        return bool(self.dataset_phrase and self.model)

    @property
    def task_enum(self) -> str:
        return TASK_ENUMS.get(self.task, "TASK_TYPE_UNSPECIFIED")

    def fields(self) -> dict[str, Any]:
        """The given fields, in a fixed order (what a person is asked to confirm)."""
        names = (
            "dataset_phrase",
            "model",
            "task",
            "epochs",
            "batch_size",
            "image_size",
            "learning_rate",
            "patience",
            "seed",
            "device",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n)}

    def summary(self) -> str:
        short = {"dataset_phrase": "dataset"}
        return " ".join(f"{short.get(k, k)}={v}" for k, v in self.fields().items())

    def to_spec(self, dataset: str = "") -> Any:
        """A ``visionmesh.v1.TrainingSpec`` (``dataset`` as resolved, e.g. ``datasets/{id}``)."""
        from visionmesh.v1 import common_pb2, trainer_pb2

        return trainer_pb2.TrainingSpec(
            dataset=dataset,
            model=self.model,
            task_type=common_pb2.TaskType.Value(self.task_enum),
            epochs=self.epochs,
            batch_size=self.batch_size,
            image_size=self.image_size,
            learning_rate=self.learning_rate,
            patience=self.patience,
            seed=self.seed,
            device=self.device,
        )


def task_of_model(model: str) -> tuple[str, str]:
    """(task, how) a model name implies from :data:`MODEL_TASK_RULES`; ("", "") if none."""
    name = model.lower()
    for pattern, task, how in MODEL_TASK_RULES:
        if re.search(pattern, name):
            return task, how
    return "", ""


def is_model_name(word: str) -> bool:
    low = word.lower()
    return any(re.fullmatch(p, low) for p in MODEL_PATTERNS)


def _tokens(text: str) -> list[tuple[str, bool]]:
    """(word, quoted) pairs; quotes keep a phrase with spaces as one word."""
    out: list[tuple[str, bool]] = []
    for match in re.finditer(r"\"([^\"]+)\"|'([^']+)'|“([^”]+)”|‘([^’]+)’|(\S+)", text):
        quoted = next((g for g in match.groups()[:4] if g), None)
        if quoted is not None:
            out.append((quoted.strip(), True))
            continue
        word = match.group(5)
        # key=value and key:value are two words (but not cuda:1).
        if re.fullmatch(r"[A-Za-z_가-힣]+[=:][^=:]+", word) and not DEVICE_RE.match(word.lower()):
            key, _, value = re.split(r"([=:])", word, maxsplit=1)
            out.extend([(key, False), (value, False)])
            continue
        out.append((word, False))
    cleaned = []
    for word, quoted in out:
        if not quoted:
            word = word.strip(_EDGE_PUNCT)
            word = word.rstrip(",")
        if word:
            cleaned.append((word, quoted))
    return cleaned


def _split_particle(word: str) -> tuple[str, str]:
    """("seg-coco32", "데이터셋으로") from "seg-coco32데이터셋으로"; (word, "") if none."""
    for particle in PARTICLES:
        if word.endswith(particle) and len(word) > len(particle):
            stem = word[: -len(particle)]
            # A Hangul stem keeps its ending unless the stem is a word we know.
            if _HANGUL.search(stem[-1]) and not _known_word(stem):
                continue
            return stem, particle
    return word, ""


def _known_word(word: str) -> bool:
    low = word.lower()
    return (
        (low,) in TASK_WORDS
        or (low,) in NUMBER_KEYS
        or low in DEVICE_WORDS
        or low in FILLER
        or bool(DEVICE_RE.match(low))
    )


def _number(word: str) -> float | None:
    return float(word) if _NUMBER.match(word) else None


def parse(text: str) -> ParsedCommand:
    """Parse a Korean or English sentence into a :class:`ParsedCommand`; never raises."""
    result = ParsedCommand(text=text)
    if len(text) > MAX_TEXT:
        result.notes.append(f"only the first {MAX_TEXT} characters were read")
        text = text[:MAX_TEXT]
    words: list[str] = []
    particles: list[str] = []
    quoted: list[bool] = []
    for word, is_quoted in _tokens(text):
        stem, particle = (word, "") if is_quoted else _split_particle(word)
        words.append(stem)
        particles.append(particle)
        quoted.append(is_quoted)
    n = len(words)
    low = [w.lower() for w in words]
    used = [False] * n

    def take(*idx: int) -> None:
        for i in idx:
            used[i] = True

    def set_value(name: str, kind: type, raw: float, at: int) -> None:
        value = kind(raw) if kind is float or raw == int(raw) else None
        if value is None or value < 0:
            result.notes.append(f"{name} must be a whole number, got {words[at]!r}")
            return
        if getattr(result, name):
            result.notes.append(f"{name} given twice; kept {getattr(result, name)}")
            return
        setattr(result, name, value)

    # 1. Hyperparameters: "epochs 20", "20 epochs", "epochs=20", "20에폭", "320px".
    i = 0
    while i < n:
        if used[i] or quoted[i]:
            i += 1
            continue
        unit = _NUMBER_UNIT.match(low[i])
        if unit and unit.group(2) in NUMBER_UNITS:
            field_name = NUMBER_UNITS[unit.group(2)]
            set_value(field_name, int, float(unit.group(1)), i)
            take(i)
            i += 1
            continue
        matched = False
        for size in (2, 1):
            key = tuple(low[i : i + size])
            if len(key) != size or key not in NUMBER_KEYS or any(used[i : i + size]):
                continue
            field_name, kind = NUMBER_KEYS[key]
            after = i + size
            if after < n and not used[after] and _number(low[after]) is not None:
                set_value(field_name, kind, _number(low[after]) or 0.0, after)
                take(*range(i, after + 1))
                matched = True
            elif i > 0 and not used[i - 1] and _number(low[i - 1]) is not None:
                set_value(field_name, kind, _number(low[i - 1]) or 0.0, i - 1)
                take(*range(i - 1, after))
                matched = True
            if matched:
                i = after
                break
        if not matched:
            i += 1

    # 2. Devices: "on gpu", "GPU로", "cuda:1", "device cpu".
    for i in range(n):
        if used[i] or quoted[i]:
            continue
        if low[i] in DEVICE_WORDS or DEVICE_RE.match(low[i]):
            device = DEVICE_WORDS.get(low[i], low[i])
            if device.startswith("gpu"):
                device = "cuda:" + device[3:].lstrip(":")
            result.device = device
            take(i)
            if i > 0 and low[i - 1] in ("device", "디바이스", "장치", "on") and not used[i - 1]:
                take(i - 1)

    # 3. Model: a word that looks like a model name, or the word after "model"/"모델".
    for i in range(n):
        if used[i] or quoted[i] or not is_model_name(words[i]):
            continue
        if result.model:
            result.notes.append(f"more than one model named; kept {result.model}")
            continue
        result.model = words[i]
        take(i)
    if not result.model:
        for i in range(n - 1):
            if low[i] in ("model", "모델") and not used[i + 1] and low[i + 1] not in FILLER:
                result.model = words[i + 1]
                take(i, i + 1)
                break

    # 4. Task words.
    i = 0
    while i < n:
        for size in (2, 1):
            key = tuple(low[i : i + size])
            if len(key) == size and key in TASK_WORDS and not any(used[i : i + size]):
                task = TASK_WORDS[key]
                if result.task and result.task != task:
                    result.notes.append(f"more than one task named; kept {result.task}")
                else:
                    result.task = task
                take(*range(i, i + size))
                i += size - 1
                break
        i += 1

    # 5. Dataset: a quoted phrase, "X 데이터셋으로", "X로", "on X", "dataset X", "X dataset".
    def candidate(i: int) -> bool:
        return 0 <= i < n and not used[i] and (quoted[i] or low[i] not in FILLER)

    spot = None
    for i in range(n):
        if not candidate(i):
            continue
        if particles[i] in DATASET_PARTICLES and not quoted[i]:
            spot = i
        elif i + 1 < n and low[i + 1] in DATASET_AFTER:
            spot = i
            take(i + 1)
        elif i > 0 and low[i - 1] in DATASET_BEFORE:
            spot = i
        if spot is not None:
            break
    if spot is None:
        quoted_spots = [i for i in range(n) if quoted[i] and not used[i]]
        if quoted_spots:
            spot = quoted_spots[0]
    if spot is not None:
        result.dataset_phrase = words[spot]
        take(spot)

    # 6. Task from the model name when no task word was given (or a check when one was).
    if result.model:
        implied, how = task_of_model(result.model)
        if not result.task and implied:
            result.task = implied
            if how == "default":
                result.notes.append(
                    f"task {implied} assumed: {result.model} has no -seg/-cls/-pose suffix"
                )
            else:
                result.notes.append(f"task {implied} from the model name {result.model}")
        elif result.task and implied and how == "suffix" and implied != result.task:
            result.notes.append(
                f"the task words say {result.task} but {result.model} is a {implied} model"
            )

    # 7. What is left: filler is dropped, the rest is said plainly.
    for i in range(n):
        if used[i]:
            continue
        if not quoted[i] and (low[i] in FILLER or low[i] in DATASET_AFTER):
            continue
        result.unparsed.append(words[i] + particles[i])
    if not result.dataset_phrase:
        result.notes.append("no dataset named: say e.g. 'on shapes' or 'shapes 데이터셋으로'")
    if not result.model:
        result.notes.append("no model named: say e.g. 'yolo11n' or 'resnet18'")
    return result
