"""AssistantService: a sentence -> a training request to confirm (``vmesh ask``, web chat box).

The parsing is :func:`visionmesh.ask.parse` (deterministic; shared with every client). This
service adds what only the catalog knows: which dataset the sentence names, among those the
caller may see, matched on display name or id (exact first, then ignoring case). A dataset
the caller may not see is never named back, so nothing leaks.
"""

from __future__ import annotations

from sqlalchemy import func, or_, select

from dataset_svc import identity, names
from dataset_svc.app import App
from dataset_svc.catalog.models import Dataset
from dataset_svc.permissions import visible_to
from dataset_svc.validation import check_enums
from visionmesh import ask
from visionmesh.errors import grpc_errors, invalid_argument
from visionmesh.v1 import assistant_pb2, assistant_pb2_grpc

MAX_MATCHES_SHOWN = 5


@grpc_errors(check_request=check_enums)
class AssistantService(assistant_pb2_grpc.AssistantServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    def ParseTrainingCommand(self, request, context):  # type: ignore[no-untyped-def]
        text = request.text
        if not text.strip():
            raise invalid_argument(
                "text is empty: write what to train, e.g. 'train yolo11n on shapes for 30 epochs'",
                "text",
            )
        if len(text) > ask.MAX_TEXT:
            raise invalid_argument(
                f"text is {len(text)} characters; at most {ask.MAX_TEXT}", "text"
            )
        parsed = ask.parse(text)
        notes = list(parsed.notes)
        dataset = ""
        if parsed.dataset_phrase:
            dataset, note = self._resolve(parsed.dataset_phrase)
            if note:
                notes.append(note)
        spec = parsed.to_spec(dataset)
        return assistant_pb2.ParseTrainingCommandResponse(
            spec=spec,
            dataset_phrase=parsed.dataset_phrase,
            unparsed=parsed.unparsed,
            notes=notes,
            complete=bool(spec.dataset and spec.model),
        )

    def _resolve(self, phrase: str) -> tuple[str, str]:
        """(datasets/{id} or "", a note when it could not be resolved)."""
        wanted = phrase.strip()
        ident = wanted.removeprefix("datasets/")
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            visible = select(Dataset.id, Dataset.display_name).where(visible_to(user))
            rows = session.execute(
                visible.where(or_(Dataset.display_name == wanted, Dataset.id == ident))
            ).all()
            if not rows:
                rows = session.execute(
                    visible.where(func.lower(Dataset.display_name) == wanted.lower())
                ).all()
        ids = sorted({row.id for row in rows})
        if len(ids) == 1:
            return names.dataset_name(ids[0]), ""
        if not ids:
            return "", (
                f"no dataset named {wanted!r} among those you can see "
                "(`vmesh datasets list` shows them)"
            )
        shown = ", ".join(names.dataset_name(i) for i in ids[:MAX_MATCHES_SHOWN])
        return "", f"{len(ids)} datasets are named {wanted!r} ({shown}): name one by its id"
