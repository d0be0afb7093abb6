"""The sampler chain's extras on the real demo model: grammars from JSON schemas, drafting under a
grammar, penalties, logit bias, per-token logprobs, in process and through the model's worker."""

from __future__ import annotations

import json

import jsonschema
import pytest

from starchat_cli.core.errors import InputError
from starchat_cli.engine.params import Draft, GenerationParams
from starchat_cli.engine.prompting.formats import Message
from starchat_cli.engine.prompting.json_grammar import JSON_OBJECT_GRAMMAR, SchemaError, schema_grammar

pytestmark = pytest.mark.e2e

PET = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "kind": {"enum": ["cat", "dog", "fish"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3},
        "owner": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 15}, "zip": {"type": ["string", "null"]}},
            "required": ["city"],
        },
    },
    "required": ["name", "age", "kind", "tags", "owner"],
}
POINTS = {  # pydantic's shape: $defs and $ref, additionalProperties false everywhere
    "$defs": {
        "Point": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "y": {"type": "number"}, "label": {"const": "p"}},
            "required": ["x", "y"],
            "additionalProperties": False,
        }
    },
    "type": "object",
    "properties": {"points": {"type": "array", "items": {"$ref": "#/$defs/Point"}, "maxItems": 3}},
    "required": ["points"],
    "additionalProperties": False,
}
TREE = {  # recursion through $ref, anyOf, booleans and nulls
    "$defs": {
        "Node": {
            "type": "object",
            "properties": {
                "ok": {"type": "boolean"},
                "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "maxItems": 2},
                "note": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]},
            },
            "required": ["ok", "kids", "note"],
        }
    },
    "$ref": "#/$defs/Node",
}
ASK = [Message("user", "Describe a pet as JSON.")]


@pytest.mark.parametrize("schema", [PET, POINTS], ids=["nested+enum+array", "$defs"])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_replies_under_a_schema_parse_and_validate(demo_engine, schema, temperature):
    params = GenerationParams(temperature=temperature, seed=7, max_tokens=250, grammar=schema_grammar(schema))
    gen = demo_engine.generate(ASK, params)
    text = "".join(gen)
    assert gen.stats.stop_reason == "stop", text  # the grammar ended it, not the limit
    jsonschema.validate(json.loads(text), schema)


def test_without_a_grammar_the_model_writes_prose(demo_engine):
    """The control for the test above: the same request unconstrained is not JSON."""
    text = "".join(demo_engine.generate(ASK, GenerationParams(temperature=0.0, max_tokens=40)))
    with pytest.raises(ValueError):
        json.loads(text)


def test_json_object_grammar_gives_an_object(demo_engine):
    gen = demo_engine.generate(
        [Message("user", "hi")], GenerationParams(temperature=0, max_tokens=120, grammar=JSON_OBJECT_GRAMMAR)
    )
    text = "".join(gen)
    assert text.startswith("{")
    if gen.stats.stop_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_a_grammar_turns_drafting_off_and_only_grammar_text_comes_out(demo_engine):
    """Prompt-lookup drafting would copy the prompt's text; under a grammar no draft is taken."""
    grammar = 'root ::= ("yes" | "no") " " [0-9]{1,3}\n'
    turns = [Message("user", "Repeat after me: the cat sat on the mat, the cat sat on the mat, the cat sat")]
    gen = demo_engine.generate(
        turns, GenerationParams(temperature=0, max_tokens=40, draft=Draft.ON, grammar=grammar)
    )
    text = "".join(gen)
    assert gen.stats.drafted_tokens == 0
    import re

    assert re.fullmatch(r"(yes|no) [0-9]{1,3}", text), text
    free = demo_engine.generate(turns, GenerationParams(temperature=0, max_tokens=40, draft=Draft.ON))
    "".join(free)
    assert free.stats.drafted_tokens > 0  # the control: this request does draft without a grammar


def test_a_bad_grammar_and_a_token_outside_the_vocabulary_are_input_errors(demo_engine):
    with pytest.raises(InputError, match="'grammar'"):
        "".join(demo_engine.generate(ASK, GenerationParams(grammar="root ::= undefined-rule")))
    with pytest.raises(InputError, match="'logit_bias'"):
        "".join(demo_engine.generate(ASK, GenerationParams(logit_bias=((10**7, 5.0),))))


def test_a_recursive_schema_is_a_recursive_rule():
    grammar = schema_grammar(TREE)
    rules = dict(line.split(" ::= ", 1) for line in grammar.strip().splitlines())
    node = rules["root"]
    assert node in rules and any(node in body for name, body in rules.items() if name != "root")


def test_schema_keywords_that_cannot_be_honoured_are_refused():
    for schema, word in [
        ({"type": "string", "pattern": "a+"}, "pattern"),
        ({"type": "integer", "minimum": 3}, "minimum"),
        ({"type": "object", "properties": {"a": {"format": "date"}}}, "format"),
        ({"$ref": "#/$defs/Missing"}, "Missing"),
        ({"type": "thing"}, "thing"),
        ({"type": "object", "properties": {}, "required": ["a"]}, "'a'"),
    ]:
        with pytest.raises(SchemaError, match=word):
            schema_grammar(schema)


def test_logprobs_are_the_models_and_greedy_picks_the_top_one(demo_engine):
    params = GenerationParams(temperature=0, max_tokens=12, logprobs=3)
    gen = demo_engine.generate(ASK, params)
    text = "".join(gen)
    assert len(gen.logprobs) == gen.stats.generated_tokens == 12
    assert "".join(e.token for e in gen.logprobs) == text
    for e in gen.logprobs:
        assert len(e.top) == 3 and e.top[0].token == e.token and e.top[0].logprob == pytest.approx(e.logprob)
        assert e.top[0].logprob >= e.top[1].logprob >= e.top[2].logprob
        assert sum(2.718281828**t.logprob for t in e.top) <= 1.0 + 1e-6
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token
    plain = demo_engine.generate(ASK, GenerationParams(temperature=0, max_tokens=12))
    assert "".join(plain) == text and plain.logprobs == []  # asked for nothing: nothing recorded


def test_penalties_and_logit_bias_change_a_greedy_reply(demo_engine):
    turns = [Message("user", "Write the word hello ten times.")]
    base = GenerationParams(temperature=0, max_tokens=30)
    plain = "".join(demo_engine.generate(turns, base))
    for update in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}, {"repeat_penalty": 3.0}):
        other = "".join(demo_engine.generate(turns, base.model_copy(update=update)))
        assert other != plain, update
    first = demo_engine.generate(turns, base.model_copy(update={"max_tokens": 1, "logprobs": 0}))
    "".join(first)
    banned = demo_engine.backend.tokenize(first.logprobs[0].token)[0]
    biased = demo_engine.generate(
        turns, base.model_copy(update={"max_tokens": 1, "logit_bias": ((banned, -100.0),), "logprobs": 0})
    )
    "".join(biased)
    assert biased.logprobs[0].token != first.logprobs[0].token
    again = "".join(demo_engine.generate(turns, base))
    assert again == plain  # nothing of the extras stays behind for the next request


def test_grammar_and_logprobs_travel_through_the_worker(demo_gguf):
    from tests.test_worker import in_process, warm_engine

    params = GenerationParams(temperature=0, max_tokens=60, grammar=schema_grammar(POINTS), logprobs=2)
    engine = warm_engine()
    try:
        far = engine.generate(ASK, params)
        far_text = "".join(far)
    finally:
        engine.close()
    near = in_process().generate(ASK, params)
    near_text = "".join(near)
    assert far_text == near_text
    assert [e.token for e in far.logprobs] == [e.token for e in near.logprobs]
    assert [e.logprob for e in far.logprobs] == pytest.approx([e.logprob for e in near.logprobs])
    assert len(far.logprobs) == far.stats.generated_tokens and far.logprobs[0].top
