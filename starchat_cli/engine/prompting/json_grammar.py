"""JSON Schema to GBNF, the grammar text llama.cpp's grammar sampler takes (no llama.cpp here).

    grammar = schema_grammar({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    grammar = JSON_OBJECT_GRAMMAR        # any JSON object: OpenAI's json_object, Ollama's "json"
    schema_grammar({"type": "string", "pattern": "a+"})   # SchemaError: 'pattern' is not supported

A reply sampled under the grammar is valid JSON that validates against the schema: every
keyword that constrains values is either turned into grammar or refused (:class:`SchemaError`,
naming the keyword and where it is), never dropped. Supported: ``type`` (one or a list),
``properties`` with ``required`` (written in the schema's order; optional ones may be left
out; no other properties are written, so ``additionalProperties`` holds whatever it says),
``additionalProperties`` as a schema for an object without ``properties``, ``items``,
``minItems``/``maxItems``, ``enum``, ``const``, ``anyOf``/``oneOf`` (alternatives), a
one-element ``allOf``, ``minLength``/``maxLength``, ``$ref`` into ``$defs``/``definitions``
(recursion included), and ``true`` for any value. Annotations (``title``, ``description``,
``default``, ``examples``, ``$schema``, ...) are ignored, as they constrain nothing.
"""

from __future__ import annotations

import json
from typing import Any

# Whitespace between tokens: none, or one space or newline and up to 24 spaces or tabs (an
# indent), so a model can pretty-print but cannot loop on blanks forever.
_PRIMITIVES = {
    "ws": r"([ \t\n] [ \t]{0,24})?",
    "string": r'"\"" char* "\""',
    "char": r'[^"\\\x00-\x1F\x7F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "integer": r'"-"? ("0" | [1-9] [0-9]{0,15})',
    "number": r'"-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?',
    "boolean": r'"true" | "false"',
    "null": r'"null"',
    "value": r"object | array | string | number | boolean | null",
    "object": r'"{" ws (string ws ":" ws value ws ("," ws string ws ":" ws value ws)*)? "}"',
    "array": r'"[" ws (value ws ("," ws value ws)*)? "]"',
}
# Keywords that describe without constraining: ignored.
_ANNOTATIONS = frozenset(
    "title description default examples $schema $id $comment deprecated readOnly writeOnly "
    "$defs definitions strict name".split()
)
_HANDLED = frozenset(
    "type properties required additionalProperties items minItems maxItems enum const anyOf "
    "oneOf allOf minLength maxLength $ref".split()
)
_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")


class SchemaError(ValueError):
    """A schema this converter cannot turn into a grammar: the message names the keyword and its place."""


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal (quotes, backslashes and control characters escaped)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_literal(value: Any) -> str:
    return gbnf_literal(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


class _Converter:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.rules: dict[str, str] = {}
        self.used: set[str] = set()  # primitive rules referenced
        self.refs: dict[str, str] = {}  # "$ref" -> its rule's name

    def rule(self, body: str) -> str:
        """A new named rule for ``body`` (reused when the same body was written already)."""
        for name, existing in self.rules.items():
            if existing == body:
                return name
        name = f"r{len(self.rules)}"
        self.rules[name] = body
        return name

    def prim(self, name: str) -> str:
        self.used.add(name)
        return name

    def convert(self, schema: Any, where: str) -> str:
        """A GBNF expression for values of ``schema`` at ``where`` (a JSON pointer-like path)."""
        if schema is True or schema == {}:
            return self.prim("value")
        if schema is False:
            raise SchemaError(f"the schema at {where} is false: no value matches it")
        if not isinstance(schema, dict):
            raise SchemaError(f"the schema at {where} must be an object or a boolean")
        unknown = sorted(set(schema) - _HANDLED - _ANNOTATIONS)
        if unknown:
            raise SchemaError(f"'{unknown[0]}' at {where} is not supported in a schema for structured output")
        if "$ref" in schema:
            if len(set(schema) - _ANNOTATIONS) > 1:
                raise SchemaError(f"'$ref' at {where} must stand alone (no other constraints beside it)")
            return self.ref(schema["$ref"], where)
        if "const" in schema:
            return _json_literal(schema["const"])
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise SchemaError(f"'enum' at {where} must be a non-empty list")
            return "(" + " | ".join(_json_literal(v) for v in values) + ")"
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.alternatives(schema[key], f"{where}/{key}")
        if "allOf" in schema:
            parts = schema["allOf"]
            if not isinstance(parts, list) or len(parts) != 1:
                raise SchemaError(f"'allOf' at {where} is supported with one schema only")
            return self.convert(parts[0], f"{where}/allOf/0")
        kind = schema.get("type")
        if isinstance(kind, list):
            return self.alternatives([{**schema, "type": k} for k in kind], f"{where}/type")
        if kind is None:
            return self.prim("value")
        if kind not in _TYPES:
            raise SchemaError(f"'type' at {where} must be one of {', '.join(_TYPES)}, not {kind!r}")
        return getattr(self, f"t_{kind}")(schema, where)

    def alternatives(self, options: Any, where: str) -> str:
        if not isinstance(options, list) or not options:
            raise SchemaError(f"{where} must be a non-empty list of schemas")
        return "(" + " | ".join(self.convert(s, f"{where}/{i}") for i, s in enumerate(options)) + ")"

    def ref(self, ref: Any, where: str) -> str:
        if ref in self.refs:
            return self.refs[ref]
        prefix = next(
            (p for p in ("#/$defs/", "#/definitions/") if isinstance(ref, str) and ref.startswith(p)), None
        )
        target = self.root.get(prefix[2:-1], {}).get(ref[len(prefix) :]) if prefix else None
        if target is None:
            raise SchemaError(f"'$ref' {ref!r} at {where} does not name a schema in $defs")
        name = f"r{len(self.rules)}"
        self.rules[name] = ""  # reserved before converting: a recursive reference finds it
        self.refs[ref] = name
        self.rules[name] = self.convert(target, ref[1:])
        return name

    def t_object(self, schema: dict[str, Any], where: str) -> str:
        props = schema.get("properties")
        required = schema.get("required") or []
        if props is None:
            if required:
                raise SchemaError(
                    f"'required' at {where} names properties that 'properties' does not declare"
                )
            extra = schema.get("additionalProperties", True)
            if extra is False:
                return '"{" ws "}"'
            if extra is True or extra == {}:
                return self.prim("object")
            value = self.convert(extra, f"{where}/additionalProperties")
            pair = f'{self.prim("string")} ws ":" ws {value} ws'
            return f'"{{" ws ({pair} ("," ws {pair})*)? "}}"'
        if not isinstance(props, dict) or not isinstance(required, list):
            raise SchemaError(f"'properties' at {where} must be an object and 'required' a list")
        missing = [name for name in required if name not in props]
        if missing:
            raise SchemaError(
                f"'required' at {where} names {missing[0]!r}, which 'properties' does not declare"
            )
        self.prim("ws")
        items = []
        for name, sub in props.items():
            value = self.convert(sub, f"{where}/properties/{name}")
            items.append((f'{_json_literal(name)} ws ":" ws {value} ws', name in required))
        # rest[(i, first)]: properties i.. given whether one was written before (a comma goes first)
        rest: dict[tuple[int, bool], str] = {}
        for i in range(len(items), -1, -1):
            for first in (True, False):
                if i == len(items):
                    rest[(i, first)] = '""'
                    continue
                pair, needed = items[i]
                take = f"{'' if first else chr(34) + ',' + chr(34) + ' ws '}{pair} {rest[(i + 1, False)]}"
                body = take if needed else f"({take}) | {rest[(i + 1, first)]}"
                rest[(i, first)] = self.rule(body)
        return f'"{{" ws {rest[(0, True)]} "}}"'

    def t_array(self, schema: dict[str, Any], where: str) -> str:
        item = self.convert(schema.get("items", True), f"{where}/items")
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        if not isinstance(lo, int) or (hi is not None and (not isinstance(hi, int) or hi < lo)):
            raise SchemaError(f"'minItems'/'maxItems' at {where} must be whole numbers, min <= max")
        self.prim("ws")
        if hi == 0:
            return '"[" ws "]"'
        more = f"{max(lo - 1, 0)},{'' if hi is None else hi - 1}"
        body = f'{item} ws ("," ws {item} ws){{{more}}}'
        return f'"[" ws {body if lo > 0 else f"({body})?"} "]"'

    def t_string(self, schema: dict[str, Any], where: str) -> str:
        lo, hi = schema.get("minLength", 0), schema.get("maxLength")
        if lo == 0 and hi is None:
            return self.prim("string")
        if not isinstance(lo, int) or (hi is not None and (not isinstance(hi, int) or hi < lo)):
            raise SchemaError(f"'minLength'/'maxLength' at {where} must be whole numbers, min <= max")
        return f'"\\"" {self.prim("char")}{{{lo},{"" if hi is None else hi}}} "\\""'

    def t_number(self, schema: dict[str, Any], where: str) -> str:
        return self.prim("number")

    def t_integer(self, schema: dict[str, Any], where: str) -> str:
        return self.prim("integer")

    def t_boolean(self, schema: dict[str, Any], where: str) -> str:
        return self.prim("boolean")

    def t_null(self, schema: dict[str, Any], where: str) -> str:
        return self.prim("null")

    def grammar(self, root: str) -> str:
        used: set[str] = set()
        todo = list(self.used)
        while todo:  # a primitive's own references (value -> object -> string -> char ...)
            name = todo.pop()
            if name in used:
                continue
            used.add(name)
            todo.extend(n for n in _PRIMITIVES if n not in used and _mentions(_PRIMITIVES[name], n))
        lines = [f"root ::= {root}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items()]
        lines += [f"{name} ::= {_PRIMITIVES[name]}" for name in _PRIMITIVES if name in used]
        return "\n".join(lines) + "\n"


def _mentions(body: str, name: str) -> bool:
    import re

    return (
        re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", re.sub(r'"(\\.|[^"\\])*"|\[[^\]]*\]', "", body))
        is not None
    )


def schema_grammar(schema: Any) -> str:
    """GBNF for JSON values of ``schema`` (a JSON Schema object); :class:`SchemaError` if it cannot be."""
    if not isinstance(schema, (dict, bool)):
        raise SchemaError("the schema must be a JSON object")
    conv = _Converter(schema if isinstance(schema, dict) else {})
    root = conv.convert(schema, "#")
    return conv.grammar(root)


JSON_OBJECT_GRAMMAR = schema_grammar({"type": "object"})  # any JSON object

__all__ = ["JSON_OBJECT_GRAMMAR", "SchemaError", "gbnf_literal", "schema_grammar"]
