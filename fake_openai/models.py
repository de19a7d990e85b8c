"""GET /v1/models and /v1/models/{id}: the catalogue the fake server claims to serve (any model name is accepted)."""

from __future__ import annotations

from llmtap.fake_openai.call import Call
from llmtap.fake_openai.errors import APIError

CREATED = 1_715_367_049  # a fixed date keeps listings reproducible
MODELS = (
    ("gpt-4o", "system"),
    ("gpt-4o-mini", "system"),
    ("gpt-4.1", "system"),
    ("gpt-4.1-mini", "system"),
    ("gpt-5", "system"),
    ("gpt-5-mini", "system"),
    ("o3", "system"),
    ("o4-mini", "system"),
    ("gpt-3.5-turbo-instruct", "system"),
    ("text-embedding-3-small", "system"),
    ("text-embedding-3-large", "system"),
    ("text-embedding-ada-002", "openai-internal"),
)


def _model(model_id: str, owner: str) -> dict:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": owner}


def list_models(call: Call) -> dict:
    return {"object": "list", "data": [_model(model_id, owner) for model_id, owner in MODELS]}


def retrieve_model(call: Call) -> dict:
    wanted = call.path_params["model"]
    for model_id, owner in MODELS:
        if model_id == wanted:
            return _model(model_id, owner)
    raise APIError(
        404, f"The model '{wanted}' does not exist", "invalid_request_error", "model", "model_not_found"
    )
