"""The tokenizer part of a GGUF: gpt2 byte-level BPE read from a checkpoint's tokenizer files.

Tokens are written in id order with their types (added special tokens, the chat tokens
among them, are CONTROL so llama.cpp stops on them and detokenizes them to nothing),
merges in rank order, and the bos/eos/unk ids from tokenizer_config.json,
special_tokens_map.json or config.json (never generation_config.json, which has carried
wrong ids for StarCoder2-Instruct). The chat template is the checkpoint's own, else an
equivalent of the catalog's prompt format when the model is one starchat knows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters.errors import ConversionError

# llama.cpp token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

PRE_TOKENIZER = "starcoder"

# Fill-in-the-middle tokens by text, as the GGUF keys name them (``tokenizer.ggml.fim_<kind>_token_id``).
# llama.cpp also finds these by text at load; writing them makes the file say so itself. StarCoder
# (v1) has no repository tokens in StarCoder2's sense (its ``<reponame>`` is metadata), so only
# StarCoder2's ``<repo_name>``/``<file_sep>`` are written as ``fim_rep``/``fim_sep``.
FIM_TOKENS = {
    "pre": "<fim_prefix>",
    "suf": "<fim_suffix>",
    "mid": "<fim_middle>",
    "pad": "<fim_pad>",
    "rep": "<repo_name>",
    "sep": "<file_sep>",
}

# Jinja equivalents of starchat_cli.engine.prompting.formats' formats, byte for byte (tests render both).
# Written with explicit whitespace control so they render the same with or without
# trim_blocks/lstrip_blocks.
STARCHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    r"{{- '<|system|>\n' + (system or '') + '<|end|>\n' -}}"
    "{%- for message in turns -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('turns must alternate user/assistant after an optional system message') -}}"
    "{%- endif -%}"
    r"{{- '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' -}}"
    "{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{- '<|assistant|>\n' -}}{%- endif -%}"
)

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    r"{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

STARCODER2_INSTRUCT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{{- bos_token + 'You are an exceptionally intelligent coding assistant that consistently "
    r"delivers accurate and reliable responses to user instructions.\n\n' -}}"
    "{%- for message in turns -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('turns must alternate user/assistant after an optional system message') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if loop.first and system -%}"
    r"{{- '### Instruction\n' + system + '\n\n' + message['content'] + '\n\n' -}}"
    "{%- else -%}"
    r"{{- '### Instruction\n' + message['content'] + '\n\n' -}}"
    "{%- endif -%}"
    "{%- else -%}"
    r"{{- '### Response\n' + message['content'] + eos_token + '\n\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    r"{%- if add_generation_prompt -%}{{- '### Response\n' -}}{%- endif -%}"
)

TEMPLATES_BY_FORMAT = {
    "starchat": STARCHAT_TEMPLATE,
    "chatml": CHATML_TEMPLATE,
    "starcoder2-instruct": STARCODER2_INSTRUCT_TEMPLATE,
}


@dataclass
class Vocab:
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int
    eos_id: int
    unk_id: int
    pad_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    chat_template: str | None = None
    template_source: str = "none"  # checkpoint | chat_template.jinja | catalog:<format> | none
    fim_ids: dict[str, int] = field(default_factory=dict)  # FIM_TOKENS' kinds present in the vocab
    warnings: list[str] = field(default_factory=list)

    def token_id(self, text: str) -> int | None:
        try:
            return self.tokens.index(text)
        except ValueError:
            return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: cannot read it ({exc}): re-download the checkpoint") from None
    return data if isinstance(data, dict) else None


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _pick_template(value: Any) -> str | None:
    """``chat_template`` is a string, or a list of ``{"name", "template"}`` (take "default")."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        named = {d.get("name"): d.get("template") for d in value if isinstance(d, dict)}
        chosen = named.get("default") or next((t for t in named.values() if isinstance(t, str)), None)
        return chosen if isinstance(chosen, str) else None
    return None


def read_vocab(
    hf_dir: Path,
    config: dict[str, Any],
    n_vocab: int,
    *,
    prompt_format: str | None = None,
) -> Vocab:
    """Read tokenizer.json and friends; ``n_vocab`` is the embedding's row count.

    ``prompt_format`` (a key of :data:`TEMPLATES_BY_FORMAT`) supplies the chat template
    when the checkpoint has none; without it the format is recognised from the added
    chat tokens where that is unambiguous.
    """
    tok_path = hf_dir / "tokenizer.json"
    tok = _read_json(tok_path)
    if tok is None:
        raise ConversionError(
            f"{hf_dir} has no tokenizer.json: starchat needs the fast-tokenizer file "
            "(save it with transformers' AutoTokenizer.save_pretrained)"
        )
    model = tok.get("model") or {}
    if model.get("type") not in ("BPE", None) or not isinstance(model.get("vocab"), dict):
        raise ConversionError(
            f"{tok_path}: tokenizer model {model.get('type')!r} is not byte-level BPE, "
            "which the StarCoder family uses"
        )
    pre = json.dumps(tok.get("pre_tokenizer"))
    warnings: list[str] = []
    if "ByteLevel" not in pre:
        warnings.append("tokenizer.json has no ByteLevel pre-tokenizer; tokenization may differ")

    id_to_token: dict[int, str] = {}
    for text, idx in model["vocab"].items():
        id_to_token[int(idx)] = text
    special: set[int] = set()
    user_defined: set[int] = set()
    for added in tok.get("added_tokens") or []:
        idx, text = int(added["id"]), str(added["content"])
        id_to_token[idx] = text
        (special if added.get("special", False) else user_defined).add(idx)
    if not id_to_token:
        raise ConversionError(f"{tok_path}: empty vocabulary")
    size = max(id_to_token) + 1
    if size > n_vocab:
        raise ConversionError(
            f"the tokenizer has {size} tokens but the embedding has only {n_vocab} rows: "
            "tokenizer.json and the weights do not match"
        )
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        text = id_to_token.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        else:
            tokens.append(text)
            types.append(CONTROL if i in special else USER_DEFINED if i in user_defined else NORMAL)
    if n_vocab > size:
        warnings.append(f"vocabulary padded from {size} to {n_vocab} tokens (unused ids)")

    merges: list[str] = []
    for merge in model.get("merges") or []:
        if isinstance(merge, str):
            merges.append(merge)
        elif isinstance(merge, (list, tuple)) and len(merge) == 2:
            merges.append(f"{merge[0]} {merge[1]}")
        else:
            raise ConversionError(f"{tok_path}: unreadable merge entry {merge!r}")

    tok_config = _read_json(hf_dir / "tokenizer_config.json") or {}
    special_map = _read_json(hf_dir / "special_tokens_map.json") or {}
    index = {text: i for i, text in enumerate(tokens)}

    def special_id(kind: str) -> int | None:
        for source in (tok_config, special_map):
            text = _token_text(source.get(f"{kind}_token"))
            if text is not None and text in index:
                return index[text]
        value = config.get(f"{kind}_token_id")
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int) and 0 <= value < n_vocab:
            return value
        return None

    bos, eos, unk, pad = (special_id(k) for k in ("bos", "eos", "unk", "pad"))
    if eos is None:
        eos = index.get("<|endoftext|>")
    if eos is None:
        raise ConversionError(
            "cannot tell the end-of-text token: set eos_token in tokenizer_config.json or "
            "eos_token_id in config.json"
        )
    if bos is None:
        bos = eos
    if unk is None:
        unk = eos

    template, source = None, "none"
    own = _pick_template(tok_config.get("chat_template"))
    if own is not None:
        template, source = own, "checkpoint"
    else:
        jinja_file = hf_dir / "chat_template.jinja"
        if jinja_file.is_file():
            template, source = jinja_file.read_text("utf-8"), "chat_template.jinja"
    if template is None:
        fmt = prompt_format
        if fmt is None:
            starchat = all(t in index for t in ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"))
            chatml = all(t in index for t in ("<|im_start|>", "<|im_end|>"))
            if starchat and not chatml:
                fmt = "starchat"
            elif chatml and not starchat:
                fmt = "chatml"
        if fmt is not None:
            template, source = TEMPLATES_BY_FORMAT[fmt], f"catalog:{fmt}"
        else:
            warnings.append(
                "no chat template in the checkpoint and the model is not recognised: "
                "use --family to pick one, or --format when chatting"
            )

    return Vocab(
        tokens=tokens,
        token_types=types,
        merges=merges,
        bos_id=bos,
        eos_id=eos,
        unk_id=unk,
        pad_id=pad,
        add_bos=bool(tok_config.get("add_bos_token", False)),
        add_eos=bool(tok_config.get("add_eos_token", False)),
        chat_template=template,
        template_source=source,
        fim_ids={kind: index[text] for kind, text in FIM_TOKENS.items() if text in index},
        warnings=warnings,
    )
