"""The chat messages and completion prompts of a request, as the engine takes them.

    turns, system = chat_turns({"messages": [...]})        # /v1/chat/completions, /api/chat
    prompts = completion_prompts({"prompt": ["a", "b"]})    # /v1/completions: one choice each

The layouts real clients send are accepted (README, "message layouts"): an assistant
prefill at the end, system messages after the first turn (aider's trailing reminder),
``content: null`` on an assistant turn, content as text parts, ``developer`` as system.
What cannot be honoured is a 400 naming the message: tool results, image parts.
"""

from __future__ import annotations

from typing import Any

from starchat_cli.engine.prompting.formats import Message, merge_turns

from .errors import APIError
from .jsontypes import ARRAY, OBJECT, STRING, check_type

MAX_PROMPTS = 64  # /v1/completions: prompts in one request, generated one after another
# Each chat message's fields (messages[i].name in errors).
MESSAGE_TYPES: dict[str, tuple[str, ...]] = {
    "role": (STRING,),
    "content": (STRING, ARRAY),
    "name": (STRING,),
}


def _text(content: Any, i: int) -> Any:
    """A message's content: a string, or its text parts joined (other parts are a 400)."""
    if not isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return content
    texts: list[str] = []
    for j, part in enumerate(content):
        name = f"messages[{i}].content[{j}]"
        check_type(part, (OBJECT,), name, "messages")
        if not isinstance(part, dict):  # null
            raise APIError(400, f"{name} must be an object", param="messages")
        check_type(part.get("type"), (STRING,), f"{name}.type", "messages")
        if part.get("type") != "text":
            raise APIError(
                400,
                f"{name}.type {part.get('type')!r} is not supported: this model reads text parts only",
                param="messages",
            )
        text = part.get("text")
        check_type(text, (STRING,), f"{name}.text", "messages")
        texts.append(text or "")
    return "".join(texts)


def _role(msg: dict[str, Any], i: int) -> str:
    """A message's role as the engine knows it (``developer`` is OpenAI's newer name for system)."""
    role = msg.get("role")
    check_type(role, (STRING,), f"messages[{i}].role", "messages")
    if role in ("system", "developer"):
        return "system"
    if role in ("user", "assistant"):
        return str(role)
    if role in ("tool", "function"):
        raise APIError(
            400,
            f"messages[{i}].role {role!r} is not supported: StarChat models are not trained for "
            "tool calls and do not take tool results; send the result as a user message",
            param="messages",
        )
    if role is None:
        raise APIError(400, f"messages[{i}].role is required", param="messages")
    raise APIError(
        400,
        f"messages[{i}].role {role!r} is not supported (system, developer, user, assistant)",
        param="messages",
    )


def chat_turns(data: dict[str, Any]) -> tuple[list[Message], str | None]:
    """The messages as engine turns and the system prompt (README, "message layouts").

    Leading system (or developer) messages are the system prompt, joined a blank line apart;
    a later one stays in its place as a system note, which the model's prompt format places
    (engine/prompting/formats.py). Runs of one role are merged. The conversation starts with
    a user message and ends with a user message, a system note, or one assistant message the
    reply continues (a prefill). An assistant's ``content: null`` is empty; content given as
    text parts is joined.
    """
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", param="messages")
    system: str | None = None
    turns: list[Message] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise APIError(400, f"messages[{i}] must be an object", param="messages")
        role = _role(msg, i)  # first: a tool result is refused as such, whatever its content
        for key, allowed in MESSAGE_TYPES.items():
            check_type(msg.get(key), allowed, f"messages[{i}].{key}", "messages")
        content = _text(msg.get("content"), i)
        if content is None and role == "assistant":  # e.g. an earlier turn that only called tools
            content = ""
        if not isinstance(content, str):
            raise APIError(
                400, f"messages[{i}].content must be a string or a list of text parts", param="messages"
            )
        if role == "system" and not turns:
            system = content if system is None else f"{system}\n\n{content}"
        else:
            turns.append(Message(role, content))  # type: ignore[arg-type]  # checked by _role
    if len(turns) > 1 and turns[-1].role == turns[-2].role == "assistant":  # as llama-server refuses it
        raise APIError(
            400,
            f"messages[{len(messages) - 1}]: the conversation ends with two assistant messages; "
            "a prefill (the reply's start, which the model continues) is one message",
            param="messages",
        )
    turns = merge_turns(turns)
    if not turns:
        raise APIError(
            400, "the conversation needs a user message after the system messages", param="messages"
        )
    if turns[0].role != "user":
        raise APIError(
            400,
            "the conversation must start with a user message (after any system messages)",
            param="messages",
        )
    return turns, system


def _token_ids(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    )


def completion_prompts(data: dict[str, Any]) -> tuple[str | tuple[int, ...], ...]:
    """A /v1/completions prompt as OpenAI takes it: a string, a list of strings, a list of token
    ids, or a list of lists of token ids (strings and id lists mixed, as llama-server takes
    them); one choice is generated per prompt."""
    prompt = data.get("prompt")
    prompts: list[str | tuple[int, ...]] | None = None
    if isinstance(prompt, str):
        prompts = [prompt]
    elif _token_ids(prompt):
        prompts = [tuple(prompt)]  # type: ignore[arg-type]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or _token_ids(p) for p in prompt):
        prompts = [p if isinstance(p, str) else tuple(p) for p in prompt]  # mixed, as llama-server takes
    if prompts is None:
        raise APIError(
            400,
            "'prompt' must be a string, a list of strings, a list of token ids (whole numbers from 0) "
            "or a list of such lists",
            param="prompt",
        )
    if len(prompts) > MAX_PROMPTS:
        raise APIError(400, f"'prompt' holds {len(prompts)} prompts; at most {MAX_PROMPTS}", param="prompt")
    return tuple(prompts)


__all__ = ["MAX_PROMPTS", "MESSAGE_TYPES", "chat_turns", "completion_prompts"]
