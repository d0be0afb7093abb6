"""``starchat ask``: one question, one streamed answer; pipe-friendly."""

from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from starchat_cli.cli.options import (
    ApiKey,
    Ctx,
    Draft,
    Endpoint,
    Format,
    Gpu,
    MaxTokens,
    Model,
    Seed,
    System,
    Temperature,
    Threads,
    TopP,
    setting_flags,
)

ASK_HELP = """\
Ask one question and stream the answer.

Text piped on stdin is attached as context in a fenced block (its language guessed);
with no question, the piped text itself is the prompt.

\b
  starchat ask "write a python function that reverses a string"
  cat app.py | starchat ask "explain this"
  starchat ask < prompt.txt
  starchat ask --code "a bash script that prints the 10 largest files" > big.sh

On a terminal the answer is rendered as Markdown; piped, it is plain text.
"""


def register(app: typer.Typer) -> None:
    app.command("ask", help=ASK_HELP, no_args_is_help=False)(ask)


def ask(
    command: typer.Context,
    question: Optional[List[str]] = typer.Argument(
        None, help="The question; several words are joined. Omit it to send stdin alone.", show_default=False
    ),
    model: Model = None,
    system: System = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    max_tokens: MaxTokens = None,
    seed: Seed = None,
    json_out: bool = typer.Option(
        False, "--json", help="Print one JSON object: text, model, code blocks, stats."
    ),
    code: bool = typer.Option(False, "--code", help="Print only the code inside the answer's fenced blocks."),
    stats: bool = typer.Option(
        False, "--stats", help="Print token counts, time to first token and tokens/s on stderr."
    ),
    raw: bool = typer.Option(False, "--raw", help="Print the answer as plain text even on a terminal."),
    lang: Optional[str] = typer.Option(
        None, "--lang", help="Language of the piped text (default: guessed).", show_default=False
    ),
    ctx: Ctx = None,
    threads: Threads = None,
    gpu: Gpu = None,
    draft: Draft = None,
    endpoint: Endpoint = None,
    api_key: ApiKey = None,
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Say which model file, format and GPU offload plan are used (stderr)."
    ),
    prompt_format: Format = None,
) -> None:
    from starchat_cli.chat.codeblocks import extract_code_blocks
    from starchat_cli.chat.inputs import attach, decode_text, guess_language
    from starchat_cli.cli.render import Output
    from starchat_cli.core.errors import InputError, NoCodeError
    from starchat_cli.engine.contract import StopReason
    from starchat_cli.engine.prompting.formats import Message
    from starchat_cli.services.runtime import generation_params, load_settings, open_engine

    if json_out and code:
        raise typer.BadParameter("--json and --code do not go together (the JSON has the code blocks)")
    settings, explicit = load_settings(setting_flags(command))
    text_q = " ".join(question or []).strip()
    piped = _read_stdin()
    stdin_text = decode_text(piped, "stdin") if piped else ""
    if not text_q and not stdin_text.strip():
        raise InputError(
            'nothing to ask: give a question (starchat ask "...") or pipe text in (cat file | starchat ask "...")'
        )

    opened = open_engine(settings, explicit, chat_only=True)
    out = Output(raw=raw or code or json_out)
    if opened.note:
        out.note(opened.note)
    engine = opened.engine

    if stdin_text.strip():
        language = lang if lang is not None else guess_language(stdin_text)
        if text_q:

            def build(kept: str) -> str:
                return attach(text_q, kept, language)
        else:

            def build(kept: str) -> str:
                return kept

        attachment, builder = stdin_text, build
        turn = Message("user", builder(stdin_text))
    else:
        attachment, builder = None, None
        turn = Message("user", text_q)

    params = generation_params(settings)
    before = engine.info
    with out.loading(before.name, before.loaded or before.remote):
        info = engine.load()
    for warning in info.warnings:
        out.note(warning)
    if verbose:
        out.note(f"model {info.name}: {info.location}")
        out.note(
            f"format {info.prompt_format}; context {info.n_ctx} tokens; "
            f"flash attention {'on' if info.flash_attn else 'off'}"
        )
        out.note(f"gpu: {info.placement}")
        if info.cpu_kernels:
            out.note(info.cpu_kernels)
    gen = engine.generate([turn], params, system=settings.system, attachment=attachment, attach=builder)
    st = gen.stats
    if st.truncated_chars:
        out.note(
            f"input too long for the {st.n_ctx}-token context: kept the last "
            f"{gen.fit.attachment_chars - st.truncated_chars:,} of {gen.fit.attachment_chars:,} characters "
            "(raise --ctx to keep more)"
        )

    try:
        if json_out:
            for _ in gen:
                pass
        elif code:
            from starchat_cli.chat.codeblocks import CodeStream

            stream = CodeStream()
            for chunk in gen:
                out.write_plain(stream.feed(chunk))
            out.write_plain(stream.flush())
            if not stream.found:
                sys.stderr.write(gen.text.rstrip("\n") + "\n")
                engine.persist()
                raise NoCodeError(
                    "the answer has no fenced code block (shown above on stderr); ask again or drop --code"
                )
        else:
            out.stream(gen)
    finally:
        gen.close()

    if st.stop_reason is StopReason.CONTEXT and not json_out:
        out.note(f"the reply was cut off: the {st.n_ctx}-token context is full (raise --ctx)")
    elif st.stop_reason is StopReason.LENGTH and not json_out:
        out.note(f"the reply stopped at --max-tokens {settings.max_tokens}")
    if json_out:
        blocks = extract_code_blocks(gen.text)
        payload = {
            "model": info.name,
            "path": info.location,
            "format": info.prompt_format,
            "text": gen.text,
            "code_blocks": [{"language": b.language, "code": b.code} for b in blocks],
            "stats": st.as_dict(),
        }
        out.write_plain(json.dumps(payload, ensure_ascii=False) + "\n")
    if stats:
        out.stats(st)
    engine.persist()  # the prompt cache is written once the answer is out
    if verbose:
        for note in engine.info.notes:
            out.note(note)


def _read_stdin() -> bytes:
    """Piped input, or b"" when stdin is a terminal or absent."""
    stream = sys.stdin
    if stream is None:
        return b""
    try:
        if stream.isatty():
            return b""
    except (ValueError, OSError):
        return b""
    buffer = getattr(stream, "buffer", None)
    try:
        data = buffer.read() if buffer is not None else stream.read().encode("utf-8")
    except (OSError, ValueError):
        return b""
    return data if isinstance(data, bytes) else data.encode("utf-8")


__all__ = ["ask", "register"]
