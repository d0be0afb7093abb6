"""Prompt formats of the StarChat family, rendered byte for byte as the models were trained.

Each format turns a list of messages (an optional leading system message, then
alternating user / assistant turns starting with a user turn) into the exact prompt
text, and names what ends a reply: control tokens (matched by id by the engine) and
plain-text stops (matched in the text stream, see :mod:`starchat_cli.engine.prompting.stops`).
Facts come from ../shared/MODELS.md.

    fmt.prompt([Message("user", "Sort a list."), Message("assistant", "```python\n")])

Message layouts clients send (:meth:`PromptFormat.prompt`):

- **Assistant prefill**: a conversation that ends with an assistant message is continued:
  the prompt is the generation prompt followed by that message's text, with no end-of-turn,
  so the reply carries on from it (the reply holds only the continuation).
- **A system message after the first turn** (a "system note", e.g. a client's trailing
  reminder): ChatML (StarChat2) and a GGUF's own template keep it in place, as StarChat2's
  template renders a system turn anywhere; StarChat-alpha/beta (one ``<|system|>`` block, at
  the start) and StarCoder2-Instruct (no system role) read it as a user message, so it joins
  the user turn next to it, :data:`NOTE_SEPARATOR` (a blank line) between them, or stands as
  a user turn of its own after an assistant turn.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


def merge_turns(turns: Iterable[Message], *, from_first_user: bool = False) -> list[Message]:
    """The turns with each run of one role joined into one message (contents a blank line apart).

    ``from_first_user``: also drop whatever comes before the first user turn. The server
    merges what a client sent; the TUI repairs a history a crash left with two users in a row.
    """
    out: list[Message] = []
    for turn in turns:
        if from_first_user and not out and turn.role != "user":
            continue
        if out and out[-1].role == turn.role:
            out[-1] = Message(turn.role, f"{out[-1].content}\n\n{turn.content}")
        else:
            out.append(turn)
    return out


NOTE_SEPARATOR = "\n\n"  # between a user turn and a system note folded into it


def split_system(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    """Return (system text or None, the turns after it), checking the turn order.

    The turns start with a user turn and two turns of one role never follow each other directly;
    system notes may stand anywhere among them (each format places them, see the module), and a
    note between two turns of one role separates them (``[system, user, system, user]``, a
    system prompt repeated before each question, as llama.cpp's server tests send).
    """
    msgs = list(messages)
    system = None
    if msgs and msgs[0].role == "system":
        system = msgs[0].content
        msgs = msgs[1:]
    last: str | None = None
    for i, msg in enumerate(msgs):
        if msg.role == "system":
            last = last and "note"
            continue
        if (last is None and msg.role != "user") or msg.role == last:
            raise ValueError(
                f"message {i} has role {msg.role!r}; turns must alternate user/assistant, "
                "starting with a user turn, after an optional leading system message"
            )
        last = msg.role
    return system, msgs


def notes_as_user(messages: Sequence[Message]) -> list[Message]:
    """The messages with every system note (a system message after the first message) read as
    a user message: joined to the user turn before or after it (:data:`NOTE_SEPARATOR` between),
    else a user turn of its own. For formats with no system turn inside a conversation; the
    leading system message stays."""
    msgs = list(messages)
    head = msgs[:1] if msgs and msgs[0].role == "system" else []
    out: list[Message] = []
    after_note = False  # out[-1] is, or ends with, a note
    for msg in msgs[len(head) :]:
        note = msg.role == "system"
        if out and out[-1].role == "user" and (note or (msg.role == "user" and after_note)):
            out[-1] = Message("user", f"{out[-1].content}{NOTE_SEPARATOR}{msg.content}")
        else:
            out.append(Message("user", msg.content) if note else msg)
        after_note = note
    return [*head, *out]


@dataclass(frozen=True)
class PromptFormat:
    """Base class. ``stop_tokens`` are token *texts* the engine resolves to ids."""

    name: str = "base"
    description: str = ""
    stop_tokens: tuple[str, ...] = ()
    stop_texts: tuple[str, ...] = ()
    strip_leading_newline: bool = False
    supports_system: bool = True
    # Control tokens that open a turn: a reply that generates one runs on into an invented
    # next turn, so the engine ends it there (by id: control tokens detokenize to nothing).
    turn_tokens: tuple[str, ...] = ()
    strip_trailing_whitespace: bool = False  # the model card rstrips every reply
    empty_system_block: bool = False  # an empty system prompt still renders its (empty) block

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        raise NotImplementedError

    def prompt(self, messages: Sequence[Message]) -> str:
        """The text a reply continues: the messages and the generation prompt; when the last
        message is an assistant turn (a prefill), its text follows the generation prompt with
        no end-of-turn, so the reply continues it (as llama-server renders a prefill)."""
        msgs = list(messages)
        if len(msgs) > 1 and msgs[-1].role == "assistant":
            return self.render(msgs[:-1]) + msgs[-1].content
        return self.render(msgs)

    def clean_reply(self, text: str) -> str:
        """Tidy a finished reply (the engine strips the leading newline while streaming too)."""
        if self.strip_leading_newline and text.startswith("\n"):
            text = text[1:]
        if self.strip_trailing_whitespace:
            text = text.rstrip()
        return text


@dataclass(frozen=True)
class StarChatFormat(PromptFormat):
    """StarChat-alpha / StarChat-beta: ``<|system|>``, ``<|user|>``, ``<|assistant|>``, ``<|end|>``.

    The model card always opens with a system block, empty when there is no system prompt;
    a later system message is read as a user message (see the module).
    """

    name: str = "starchat"
    description: str = "StarChat-alpha/beta dialogue tokens (<|system|> <|user|> <|assistant|> <|end|>)"
    stop_tokens: tuple[str, ...] = ("<|end|>",)
    strip_leading_newline: bool = True
    turn_tokens: tuple[str, ...] = ("<|system|>", "<|user|>", "<|assistant|>")

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        system, turns = split_system(notes_as_user(messages))
        out = [f"<|system|>\n{system or ''}<|end|>\n"]
        for msg in turns:
            out.append(f"<|{msg.role}|>\n{msg.content}<|end|>\n")
        if add_generation_prompt:
            out.append("<|assistant|>\n")
        return "".join(out)


@dataclass(frozen=True)
class ChatMLFormat(PromptFormat):
    """ChatML (StarChat2): ``<|im_start|>role\\n...<|im_end|>\\n``; no system block when none is given.

    An empty system prompt (``--system ""``) renders the empty block
    ``<|im_start|>system\\n<|im_end|>\\n``, as the alignment-handbook recipe trained StarChat2.
    A later system message is a system turn in place, as StarChat2's template renders it.
    """

    name: str = "chatml"
    description: str = "ChatML (<|im_start|>role ... <|im_end|>), StarChat2's own template"
    stop_tokens: tuple[str, ...] = ("<|im_end|>",)
    turn_tokens: tuple[str, ...] = ("<|im_start|>",)
    empty_system_block: bool = True

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        system, turns = split_system(messages)
        out = []
        if system is not None:
            out.append(f"<|im_start|>system\n{system}<|im_end|>\n")
        for msg in turns:
            out.append(f"<|im_start|>{msg.role}\n{msg.content}<|im_end|>\n")
        if add_generation_prompt:
            out.append("<|im_start|>assistant\n")
        return "".join(out)


STARCODER2_INSTRUCT_PREAMBLE = (
    "You are an exceptionally intelligent coding assistant that consistently delivers "
    "accurate and reliable responses to user instructions."
)


@dataclass(frozen=True)
class StarCoder2InstructFormat(PromptFormat):
    """StarCoder2-15B-Instruct (self-align): a fixed preamble, ``### Instruction`` / ``### Response``.

    The model has no system role. A system prompt is folded into the first instruction
    of the window, separated from it by a blank line, so the trained preamble stays
    untouched; a later system message is read as a user message (see the module). Replies end at ``<|endoftext|>`` or at the text ``###``, and lose their
    trailing whitespace, as the model card's ``split("###")[0].rstrip()``.
    """

    name: str = "starcoder2-instruct"
    description: str = "StarCoder2-Instruct (### Instruction / ### Response); no system role"
    stop_tokens: tuple[str, ...] = ("<|endoftext|>",)
    stop_texts: tuple[str, ...] = ("###",)
    supports_system: bool = False
    strip_trailing_whitespace: bool = True
    bos: str = "<|endoftext|>"
    eos: str = "<|endoftext|>"
    preamble: str = STARCODER2_INSTRUCT_PREAMBLE

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        system, turns = split_system(notes_as_user(messages))
        out = [f"{self.bos}{self.preamble}\n\n"]
        for i, msg in enumerate(turns):
            if msg.role == "user":
                content = msg.content
                if i == 0 and system:
                    content = f"{system}\n\n{content}"
                out.append(f"### Instruction\n{content}\n\n")
            else:
                out.append(f"### Response\n{msg.content}{self.eos}\n\n")
        if add_generation_prompt:
            out.append("### Response\n")
        return "".join(out)


@dataclass(frozen=True)
class JinjaFormat(PromptFormat):
    """A chat template read from a GGUF file's ``tokenizer.chat_template`` (Hugging Face Jinja)."""

    name: str = "gguf"
    description: str = "the chat template stored in the GGUF file"
    turn_tokens: tuple[str, ...] = (
        "<|im_start|>",
        "<|system|>",
        "<|user|>",
        "<|assistant|>",
    )  # those in the vocab
    template: str = ""
    bos_token: str = ""
    eos_token: str = ""

    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """System notes go to the template in place; a template that refuses them (many raise
        on a system message after the first) gets them read as user messages instead."""
        split_system(messages)  # validates the order
        from jinja2.exceptions import TemplateError

        try:
            return self._apply(messages, add_generation_prompt)
        except TemplateError as exc:
            folded = notes_as_user(messages)
            try:
                if folded != list(messages):
                    return self._apply(folded, add_generation_prompt)
            except TemplateError:
                pass
            from starchat_cli.core.errors import ModelLoadError

            raise ModelLoadError(
                f"the model's chat template failed: {exc} (choose a format with --format)"
            ) from exc

    def _apply(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        return _compile_template(self.template).render(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )


@functools.lru_cache(maxsize=8)
def _compile_template(source: str):  # -> jinja2.Template
    """Compile a Hugging Face chat template once (fitting a prompt renders it many times)."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    def strftime_now(fmt: str) -> str:
        import datetime

        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(source)
    except TemplateError as exc:
        from starchat_cli.core.errors import ModelLoadError

        raise ModelLoadError(
            f"the model's chat template does not parse: {exc} (choose a format with --format)"
        ) from exc


def is_starcoder2_instruct_template(template: str) -> bool:
    """Whether a file's chat template is StarCoder2-Instruct's (### Instruction / ### Response)."""
    return "### Instruction" in template and "### Response" in template


FORMATS: dict[str, PromptFormat] = {
    f.name: f for f in (StarChatFormat(), ChatMLFormat(), StarCoder2InstructFormat())
}


def get_format(name: str) -> PromptFormat:
    from starchat_cli.core.errors import StarchatError

    try:
        return FORMATS[name]
    except KeyError:
        valid = ", ".join([*FORMATS, "gguf"])
        raise StarchatError(f"unknown prompt format {name!r}: choose one of {valid}") from None
