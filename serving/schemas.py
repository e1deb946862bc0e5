"""The request bodies the server accepts, as pydantic models; a failure is a one-line 400.

Types are strict: `true` is not a shape dimension, a list is not a name, NaN is not a size.
Unknown fields are allowed and ignored, as KServe and OpenAI clients send extras.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic import ValidationError as PydanticError


class SchemaError(ValueError):
    """A body that does not match its schema; the message is the one-line reason."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


NonNegInt = Annotated[StrictInt, Field(ge=0)]


class InputParameters(_Model):
    binary_data_size: NonNegInt | None = None


class InferInput(_Model):
    name: StrictStr
    shape: list[NonNegInt]
    datatype: StrictStr
    parameters: InputParameters | None = None
    data: list[Any] | None = None


class OutputParameters(_Model):
    binary_data: StrictBool | None = None


class RequestedOutput(_Model):
    name: StrictStr
    parameters: OutputParameters | None = None


class RequestParameters(_Model):
    binary_data_output: StrictBool | None = None


class InferRequest(_Model):
    """A KServe v2 inference request (the JSON part, with Triton's binary extension)."""

    id: StrictStr | None = None
    inputs: Annotated[list[InferInput], Field(min_length=1)]
    outputs: list[RequestedOutput] | None = None
    parameters: RequestParameters | None = None


def _texts(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise ValueError("must be a string or a non-empty list of strings")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            kind = "null" if v is None else type(v).__name__
            raise ValueError(f"element {i} is {kind}, not a string")
    return value


Texts = Annotated[Any, AfterValidator(_texts)]  # one message for both shapes, not per union arm


class EmbeddingsRequest(_Model):
    """OpenAI `/v1/embeddings` and Infinity `/embeddings_image`: texts or images in `input`."""

    input: Texts
    model: StrictStr | None = None
    modality: StrictStr | None = None


class ClassifyRequest(_Model):
    """Infinity `/classify`: texts in `input`."""

    input: Texts
    model: StrictStr | None = None


def load_json(raw: bytes | str) -> Any:
    """json.loads that answers every malformed body with a SchemaError, never another error."""
    try:
        return json.loads(raw)
    except RecursionError:  # json's C parser recurses once per nesting level
        raise SchemaError("malformed JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise SchemaError(f"malformed JSON: {first}") from None


def validate(model: type[_Model], body: Any) -> Any:
    """`model` from a parsed body; the first schema failure as a one-line SchemaError."""
    try:
        return model.model_validate(body)
    except PydanticError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(x) for x in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        raise SchemaError(f"{where}: {msg}"[:300]) from None


__all__ = [
    "ClassifyRequest",
    "EmbeddingsRequest",
    "InferRequest",
    "SchemaError",
    "load_json",
    "validate",
]
