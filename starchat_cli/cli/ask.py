"""``starchat ask``: one question, one streamed answer; pipe-friendly."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, List, Optional

import typer

from starchat_cli.cli.options import (
    ApiKey,
    Ctx,
    Draft,
    Endpoint,
    Format,
    Gpu,
    KeepAlive,
    MaxTokens,
    Model,
    Seed,
    System,
    Temperature,
    Threads,
    TopP,
)

if TYPE_CHECKING:
    from starchat_cli.engine.contract import EngineInfo, Stats
    from starchat_cli.engine.prompting.attachment import Attachment
    from starchat_cli.engine.prompting.formats import Message

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
    keep_alive: KeepAlive = None,
    draft: Draft = None,
    endpoint: Endpoint = None,
    api_key: ApiKey = None,
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Say which model file, format and GPU offload plan are used (stderr)."
    ),
    prompt_format: Format = None,
) -> None:
    from starchat_cli.chat.codeblocks import CodeStream
    from starchat_cli.chat.inputs import decode_text
    from starchat_cli.cli.engines import Use, load, open_for, say_notes
    from starchat_cli.cli.terminal import Output, note, read_stdin, say_stats
    from starchat_cli.core.errors import InputError, NoCodeError
    from starchat_cli.engine.contract import StopReason
    from starchat_cli.services.runtime import generation_params

    if json_out and code:
        raise typer.BadParameter("--json and --code do not go together (the JSON has the code blocks)")
    text_q = " ".join(question or []).strip()
    piped = read_stdin()
    stdin_text = decode_text(piped, "stdin") if piped else ""
    if not text_q and not stdin_text.strip():
        raise InputError(
            'nothing to ask: give a question (starchat ask "...") or pipe text in (cat file | starchat ask "...")'
        )

    settings, engine = open_for(command, Use.ASK)
    out = Output(raw=raw or code or json_out)
    info = load(engine, verbose=verbose)
    turn, attachment = _prompt(text_q, stdin_text, lang)
    gen = engine.generate([turn], generation_params(settings), system=settings.system, attachment=attachment)
    st = gen.stats
    if st.truncated_chars:
        note(
            f"input too long for the {st.n_ctx}-token context: kept the last "
            f"{gen.fit.attachment_chars - st.truncated_chars:,} of {gen.fit.attachment_chars:,} characters "
            "(raise --ctx to keep more)"
        )
    try:
        if json_out:
            for _ in gen:
                pass
        elif code:
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

    if json_out:
        out.write_plain(json.dumps(_payload(info, gen.text, st), ensure_ascii=False) + "\n")
    elif st.stop_reason is StopReason.CONTEXT:
        note(f"the reply was cut off: the {st.n_ctx}-token context is full (raise --ctx)")
    elif st.stop_reason is StopReason.LENGTH:
        note(f"the reply stopped at --max-tokens {settings.max_tokens}")
    if stats:
        say_stats(st)
    engine.persist()  # the prompt cache is written once the answer is out
    if verbose:
        say_notes(engine)


def _prompt(question: str, piped: str, lang: str | None) -> tuple[Message, Attachment | None]:
    """The user turn, and the piped text as an attachment the engine may shorten to fit the context
    (its ``turn`` rebuilds the user turn around what is kept)."""
    from starchat_cli.chat.inputs import guess_language
    from starchat_cli.engine.prompting.attachment import Attachment
    from starchat_cli.engine.prompting.formats import Message

    if not piped.strip():
        return Message("user", question), None
    language = lang if lang is not None else guess_language(piped)
    attachment = Attachment(piped, question, language)
    return Message("user", attachment.turn(piped)), attachment


def _payload(info: EngineInfo, text: str, st: Stats) -> dict[str, Any]:
    """``--json``: the answer, its code blocks and stats, and the model that wrote it."""
    from starchat_cli.chat.codeblocks import extract_code_blocks

    return {
        "model": info.name,
        "path": info.location,
        "format": info.prompt_format,
        "text": text,
        "code_blocks": [{"language": b.language, "code": b.code} for b in extract_code_blocks(text)],
        "stats": st.as_dict(),
    }


__all__ = ["ask", "register"]
