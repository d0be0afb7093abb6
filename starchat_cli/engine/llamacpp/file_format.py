"""The prompt format of a model file with no catalog entry: forced, the file's own chat
template (StarCoder2-Instruct's recognised and replaced by ours), or a guess from its
control tokens and architecture."""

from __future__ import annotations

from starchat_cli.core.errors import ModelLoadError
from starchat_cli.engine.llamacpp.backend import LlamaCppBackend
from starchat_cli.engine.prompting.formats import (
    JinjaFormat,
    PromptFormat,
    get_format,
    is_starcoder2_instruct_template,
)


def format_for_backend(backend: LlamaCppBackend, forced: str | None = None) -> PromptFormat:
    """The prompt format of a GGUF with no catalog entry: forced, its own template, or a guess."""
    if forced and forced != "gguf":
        return get_format(forced)
    meta = backend.metadata()
    template = meta.get("tokenizer.chat_template")
    if template and is_starcoder2_instruct_template(template):
        # Its own template raises on a system role; ours folds the system text into the
        # instruction (as the catalog name does) and renders the same bytes otherwise.
        return get_format("starcoder2-instruct")
    if template:
        llm = backend.load()
        return JinjaFormat(
            template=template,
            bos_token=backend.token_text(llm.token_bos()) if llm.token_bos() >= 0 else "",
            eos_token=backend.token_text(llm.token_eos()) if llm.token_eos() >= 0 else "",
        )
    if forced == "gguf":
        raise ModelLoadError(f"{backend.path.name} has no chat template: choose another --format")
    if backend.special_token_id("<|im_start|>") is not None:
        return get_format("chatml")
    if (
        backend.special_token_id("<|assistant|>") is not None
        and backend.special_token_id("<|end|>") is not None
    ):
        return get_format("starchat")
    if meta.get("general.architecture") == "starcoder2":
        return get_format("starcoder2-instruct")
    raise ModelLoadError(
        f"{backend.path.name} has no chat template and its format cannot be guessed: "
        "pass --format chatml|starchat|starcoder2-instruct"
    )


__all__ = ["format_for_backend"]
