"""Sampling parameters, declared once: their types, ranges, defaults and help texts.

    params = GenerationParams(temperature=0.0, max_tokens=200, draft="auto")   # validated
    params = params.model_copy(update={"prediction": text})                     # frozen: copy
    check(Temperature, 9)          # raises Invalid: lo 0.0, hi 5.0 (each face words it its way)

The field types (:data:`Temperature`, :data:`TopP`, :data:`MaxTokens`, :data:`Seed`, the penalties,
:data:`LogitBias`, :data:`TopLogprobs`, :data:`Choices`) are the
one place a range is written: the settings model (services/config.py), the CLI's options
(cli/options.py) and the server's three request dialects read them from here.
"""

from __future__ import annotations

import functools
import types
from enum import Enum
from typing import Annotated, Any, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from starchat_cli.core import defaults


class Draft(str, Enum):
    """Drafted (prompt-lookup) decoding: ``auto`` where it pays on this hardware, ``on``, ``off``.

    A str enum: ``Draft.AUTO == "auto"``, and it prints, formats and serializes as its value.
    """

    AUTO = "auto"
    ON = "on"
    OFF = "off"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


Temperature = Annotated[float, Field(ge=0.0, le=5.0, description="Sampling temperature; 0 = greedy.")]
TopP = Annotated[float, Field(ge=0.0, le=1.0, description="Nucleus sampling cut-off.")]
MaxTokens = Annotated[int, Field(ge=1, description="Stop after this many tokens.")]
Seed = Annotated[int, Field(ge=0, description="Random seed, for repeatable sampling.")]
# A request's seed on the wire (OpenAI, llama.cpp's /infill): a 32-bit unsigned number.
WireSeed = Annotated[int, Field(ge=0, le=2**32 - 1)]
# The sampler chain's extras (llama.cpp's samplers; OpenAI's and llama.cpp's names and ranges).
PresencePenalty = Annotated[float, Field(ge=-2.0, le=2.0, description="Lower tokens already seen; 0 = off.")]
FrequencyPenalty = Annotated[
    float, Field(ge=-2.0, le=2.0, description="Lower tokens by their count; 0 = off.")
]
RepeatPenalty = Annotated[
    float, Field(ge=0.1, le=10.0, description="Divide repeated tokens' logits; 1 = off.")
]
LogitBias = Annotated[
    float, Field(ge=-100.0, le=100.0, description="Added to a token's logit; -100 bans it.")
]
TopK = Annotated[int, Field(ge=0, le=2**31 - 1, description="Keep only the k likeliest tokens; 0 = off.")]
MinP = Annotated[
    float,
    Field(
        ge=0.0, le=1.0, description="Drop tokens below this share of the likeliest's probability; 0 = off."
    ),
]
TopLogprobs = Annotated[int, Field(ge=0, le=20, description="Alternatives reported per token with logprobs.")]
# How many choices one request may ask for (OpenAI's n): generated one after another.
Choices = Annotated[int, Field(ge=1, le=8, description="Choices per request.")]
PENALTY_LAST_N = 64  # the penalties look at this many latest tokens (llama.cpp's default)


class GenerationParams(BaseModel):
    """How one reply is sampled; every face builds it, every engine reads it."""

    model_config = ConfigDict(frozen=True)

    max_tokens: Optional[MaxTokens] = None  # None: until the reply ends or the context is full
    temperature: Temperature = defaults.TEMPERATURE
    top_p: TopP = defaults.TOP_P
    seed: Optional[Seed] = None
    stop: tuple[str, ...] = ()  # extra plain-text stops (e.g. an API request's "stop")
    draft: Draft = Draft.OFF  # the engine's default; settings default to defaults.DRAFT
    prediction: Optional[str] = None  # text the reply is expected to copy (the file under edit)
    grammar: Optional[str] = None  # GBNF the reply must match (llama.cpp's grammar sampler)
    logprobs: Optional[TopLogprobs] = None  # record each token's logprob and this many alternatives
    presence_penalty: PresencePenalty = 0.0
    frequency_penalty: FrequencyPenalty = 0.0
    repeat_penalty: RepeatPenalty = 1.0
    logit_bias: tuple[tuple[int, LogitBias], ...] = ()  # (token id, bias) pairs
    top_k: TopK = 0  # llama.cpp's and Ollama's top_k (sampled replies only)
    min_p: MinP = 0.0  # llama.cpp's and Ollama's min_p (sampled replies only)

    @property
    def penalized(self) -> bool:
        """Whether a penalty is on (they look at the latest tokens, the prompt's included)."""
        return bool(self.presence_penalty or self.frequency_penalty or self.repeat_penalty != 1.0)

    @property
    def plain_decoding(self) -> bool:
        """Whether this reply needs one token per step through llama.cpp's sampler chain: a grammar,
        a penalty, a logit bias, or top_k/min_p on a sampled reply changes what the chain picks,
        which drafted verification (numpy over the raw logits, top_p only) does not model, and
        logprobs are read per step. Drafting is off then."""
        truncated = self.temperature > 0 and (self.top_k > 0 or self.min_p > 0)
        return (
            self.grammar is not None
            or self.logprobs is not None
            or self.penalized
            or bool(self.logit_bias)
            or truncated
        )


class Invalid(ValueError):
    """A value its field type refuses; ``lo``/``hi`` are the type's bounds (None: unbounded).

    ``kind``: the type's plain type (``float``, ``int``, ``str``...). ``number`` is False when
    the value is not a number of that kind at all (a string, a bool, a fraction for a whole
    number); ``in_range`` whether it fits the bounds as a number. ``reason``: the words of a
    field's own validator (``gpu``, ``draft``...), where one refused it.
    """

    def __init__(self, spec: Any, value: Any, reason: str | None = None) -> None:
        self.lo, self.hi = bounds(spec)
        self.kind = get_args(spec)[0] if get_origin(spec) is Annotated else spec
        self.value, self.reason = value, reason
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        self.number = numeric and (self.kind is not int or isinstance(value, int))
        self.in_range = numeric and _within(value, self.lo, self.hi)
        super().__init__(reason or f"{value!r} is not valid here")


def _within(value: float, lo: float | None, hi: float | None) -> bool:
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def bounds(spec: Any) -> tuple[Any, Any]:
    """``(ge, le)`` of a field type such as :data:`Temperature` (None where unbounded)."""
    lo = hi = None
    for meta in get_args(spec)[1:]:
        for item in getattr(meta, "metadata", [meta]):  # Field(ge=...) holds Ge(...)
            lo = getattr(item, "ge", lo)
            hi = getattr(item, "le", hi)
    return lo, hi


def description(spec: Any) -> str:
    """The help text declared with a field type."""
    return next((m.description for m in get_args(spec)[1:] if getattr(m, "description", None)), "")


@functools.cache  # one object per field: check() keeps its validator
def field_type(model: type[BaseModel], name: str) -> Any:
    """A model field's declared type as one ``Annotated`` type, ``None`` left out: what
    :func:`check`, :func:`bounds` and :func:`description` take (``field_type(Settings, "ctx")``)."""
    info = model.model_fields[name]
    spec: Any = info.annotation
    if get_origin(spec) in (Union, types.UnionType) and type(None) in get_args(spec):
        rest = [arg for arg in get_args(spec) if arg is not type(None)]
        spec = rest[0] if len(rest) == 1 else Union[tuple(rest)]
    parts = (spec, *info.metadata, Field(description=info.description))
    return Annotated[parts]  # nested Annotated types flatten into one


@functools.cache  # one object per (type, top): check() keeps its validator
def capped(spec: Any, le: float) -> Any:
    """``spec`` with a lower top, e.g. :data:`MaxTokens` under a server's ``--max-tokens-limit``."""
    return Annotated[spec, Field(le=le)]


def wire_number(spec: Any, value: Any) -> Any:
    """A JSON number for a field type: an integral float is a whole number (``3.0`` passes for
    an integer, as in JSON Schema, which OpenAI validates with); the rest as :func:`check`."""
    if isinstance(value, float) and value.is_integer() and get_args(spec)[0] is int:
        value = int(value)
    return check(spec, value)


_ADAPTERS: dict[int, tuple[Any, TypeAdapter[Any]]] = {}  # id(spec) -> (spec, its validator)


def check(spec: Any, value: Any) -> Any:
    """``value`` validated against a field type, strictly (a bool or "1" is not a number, 3.0 is
    not a whole number); raises :class:`Invalid`."""
    known, adapter = _ADAPTERS.get(id(spec), (None, None))
    if known is not spec or adapter is None:
        adapter = TypeAdapter(spec)
        _ADAPTERS[id(spec)] = (spec, adapter)  # the spec is kept alive: its id stays its own
    try:
        return adapter.validate_python(value, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        reason = str(error["ctx"]["error"]) if error["type"] == "value_error" else None
        raise Invalid(spec, value, reason) from None


__all__ = [
    "PENALTY_LAST_N",
    "Choices",
    "Draft",
    "FrequencyPenalty",
    "LogitBias",
    "PresencePenalty",
    "RepeatPenalty",
    "TopLogprobs",
    "GenerationParams",
    "Invalid",
    "MaxTokens",
    "Seed",
    "Temperature",
    "TopP",
    "WireSeed",
    "bounds",
    "capped",
    "check",
    "description",
    "field_type",
    "wire_number",
]
