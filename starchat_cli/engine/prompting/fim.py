"""Fill-in-the-middle prompts: the text before and after the cursor, the model writes the middle.

StarCoder and StarCoder2 were trained in prefix-suffix-middle (PSM) order, with their FIM
tokens inserted by id (user text is tokenized as plain text, so a file that contains the
string ``<fim_middle>`` stays text)::

    <fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>

StarCoder2 (its vocabulary has ``<file_sep>``) takes other files as repository context, in
the layout of its training data (the StarCoder2 paper, section 5: metadata, then files,
the FIM file among them)::

    <repo_name>{repo}<file_sep>{path}\\n{content}...<file_sep><fim_prefix>{path}\\n{prefix}<fim_suffix>{suffix}<fim_middle>

``<repo_name>{repo}`` only when a repository name is known (no newline after it, as in
training; llama.cpp's server writes ``myproject\\n``), and the current file's path sits
inside the FIM prefix, as trained (llama.cpp's ``format_infill`` writes
``<file_sep>{path}\\n<fim_prefix>`` instead). StarCoder (v1) has no ``<file_sep>``: its
other files are ``<filename>{path}\\n{content}`` before ``<fim_prefix>`` (its metadata token).

Trimming to the context (:class:`Budgets`): the suffix is kept nearest the cursor up to a
quarter of the room and at most :data:`SUFFIX_CAP` tokens (in PSM order the suffix follows
the changing cursor, so it is re-evaluated on every keystroke: a small one keeps editor
requests cheap); the prefix is kept nearest the cursor in the rest, cut from its start in
steps of an eighth of its budget so that a growing prefix keeps the same first tokens (and
the KV cache) for many keystrokes; repository files get what is left, the files farthest
from the cursor (first in the list) dropped first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from starchat_cli.core.errors import FimUnsupportedError

PREFIX, SUFFIX, MIDDLE, PAD = "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>"
REPO_NAME, FILE_SEP, FILENAME = "<repo_name>", "<file_sep>", "<filename>"
SUFFIX_CAP = 128  # tokens of suffix at most (re-evaluated on every keystroke; llama.cpp: n_batch / 4)
FIM_MODELS = "starcoder2-3b, starcoder2-7b, starcoder2-15b, starchat2, starchat-beta, starchat-alpha, starcoder2-instruct"

Tokenize = Callable[[str], list[int]]  # plain text to ids, never parsing special tokens
Detokenize = Callable[[Sequence[int]], str]


@dataclass(frozen=True)
class FimVocab:
    """A model's FIM token ids (looked up by their text in its vocabulary)."""

    prefix: int
    suffix: int
    middle: int
    pad: int | None = None
    repo_name: int | None = None
    file_sep: int | None = None
    filename: int | None = None
    eos: int = -1
    bos: int = -1
    add_bos: bool = False

    @property
    def stop_ids(self) -> frozenset[int]:
        """End of text and every FIM token: the middle is done when the model writes one."""
        ids = (self.eos, self.prefix, self.suffix, self.middle, self.pad, self.repo_name, self.file_sep)
        return frozenset(i for i in ids if i is not None and i >= 0)


def fim_vocab(
    token_id: Callable[[str], int | None],
    *,
    eos: int = -1,
    bos: int = -1,
    add_bos: bool = False,
    model: str = "",
) -> FimVocab:
    """The FIM ids of a vocabulary (``token_id`` looks up a special token by its text).

    Raises :class:`FimUnsupportedError` naming the models that have them when any of
    ``<fim_prefix>``, ``<fim_suffix>``, ``<fim_middle>`` is missing.
    """
    ids = {text: token_id(text) for text in (PREFIX, SUFFIX, MIDDLE, PAD, REPO_NAME, FILE_SEP, FILENAME)}
    missing = [text for text in (PREFIX, SUFFIX, MIDDLE) if ids[text] is None]
    if missing:
        name = f"{model} " if model else "this model "
        raise FimUnsupportedError(
            f"{name}has no fill-in-the-middle tokens ({', '.join(missing)}): "
            f"use a model trained for completion, e.g. {FIM_MODELS}"
        )
    return FimVocab(
        prefix=ids[PREFIX],  # type: ignore[arg-type]
        suffix=ids[SUFFIX],  # type: ignore[arg-type]
        middle=ids[MIDDLE],  # type: ignore[arg-type]
        pad=ids[PAD],
        repo_name=ids[REPO_NAME],
        file_sep=ids[FILE_SEP],
        filename=ids[FILENAME],
        eos=eos,
        bos=bos,
        add_bos=add_bos,
    )


@dataclass(frozen=True)
class Budgets:
    """How many tokens each part may take (see the module's docstring)."""

    room: int  # the context minus what is kept for the reply

    @property
    def suffix(self) -> int:
        return max(0, min(self.room // 4, SUFFIX_CAP))


@dataclass
class FimPrompt:
    """A rendered FIM prompt: its ids, its text with the special tokens written out, what was cut."""

    tokens: list[int]
    text: str
    prefix_tokens: int = 0  # kept
    suffix_tokens: int = 0
    extra_tokens: int = 0
    cut_prefix_tokens: int = 0  # dropped from the prefix's start
    cut_suffix_tokens: int = 0  # dropped from the suffix's end
    cut_chars: int = 0  # characters of prefix, suffix and repository files left out
    dropped_files: list[str] = field(default_factory=list)


def _cut_start(tokens: list[int], budget: int) -> list[int]:
    """The last tokens within ``budget``, cut in steps so a growing text keeps its first kept token."""
    if len(tokens) <= budget:
        return tokens
    if budget <= 0:
        return []
    step = max(1, budget // 8)
    drop = -(-(len(tokens) - budget) // step) * step
    return tokens[drop:]


def build_fim_prompt(
    vocab: FimVocab,
    tokenize: Tokenize,
    detokenize: Detokenize,
    prefix: str,
    suffix: str,
    room: int,
    *,
    extra: Sequence[tuple[str, str]] = (),
    path: str | None = None,
    repo: str | None = None,
) -> FimPrompt:
    """The FIM prompt for ``prefix``/``suffix`` in at most ``room`` tokens (see the module's docstring)."""
    v = vocab
    repo_level = v.file_sep is not None and (bool(extra) or path is not None)
    # Fixed parts: [bos] <fim_prefix> [path\n] ... <fim_suffix> ... <fim_middle> [<file_sep>]
    lead = [v.bos] if v.add_bos and v.bos >= 0 else []
    path_ids = tokenize(f"{path}\n") if repo_level and path is not None else []
    fixed = len(lead) + 3 + len(path_ids) + (1 if repo_level else 0)
    if fixed >= room:
        raise _too_small(room)

    suffix_ids = tokenize(suffix) if suffix else []
    kept_suffix = suffix_ids[: Budgets(room - fixed).suffix]
    prefix_ids = tokenize(prefix) if prefix else []
    kept_prefix = _cut_start(prefix_ids, room - fixed - len(kept_suffix))
    left = room - fixed - len(kept_suffix) - len(kept_prefix)

    # Repository context: the name first (it is short and always leads), then whole files,
    # nearest the cursor (last in the list) kept first.
    blocks: list[tuple[list[int], str]] = []
    if repo_level and repo and v.repo_name is not None:
        repo_ids = [v.repo_name, *tokenize(repo)]
        if len(repo_ids) <= left:
            left -= len(repo_ids)
            blocks.append((repo_ids, f"{REPO_NAME}{repo}"))
    files: list[tuple[list[int], str]] = []
    dropped: list[str] = []
    sep = v.file_sep if v.file_sep is not None else v.filename
    for file_path, content in reversed(list(extra)):
        if sep is None:
            dropped.append(file_path)  # no way to mark a file: leave it out
            continue
        ids = [sep, *tokenize(f"{file_path}\n"), *(tokenize(content) if content else [])]
        if len(ids) > left:
            dropped.append(file_path)
            left = 0  # the farther files are dropped too: never a gap in the middle
            continue
        left -= len(ids)
        files.append((ids, f"{FILE_SEP if v.file_sep is not None else FILENAME}{file_path}\n{content}"))
    blocks += reversed(files)
    dropped.reverse()

    tokens: list[int] = list(lead)
    text_parts: list[str] = []
    for ids, text in blocks:
        tokens += ids
        text_parts.append(text)
    if repo_level:
        tokens.append(v.file_sep)  # type: ignore[arg-type]
        text_parts.append(FILE_SEP)
    prefix_text = prefix if len(kept_prefix) == len(prefix_ids) else detokenize(kept_prefix)
    suffix_text = suffix if len(kept_suffix) == len(suffix_ids) else detokenize(kept_suffix)
    tokens += [v.prefix, *path_ids, *kept_prefix, v.suffix, *kept_suffix, v.middle]
    path_text = f"{path}\n" if path_ids else ""
    text_parts.append(f"{PREFIX}{path_text}{prefix_text}{SUFFIX}{suffix_text}{MIDDLE}")
    extra_tokens = sum(len(ids) for ids, _ in blocks)
    return FimPrompt(
        tokens=tokens,
        text="".join(text_parts),
        prefix_tokens=len(kept_prefix),
        suffix_tokens=len(kept_suffix),
        extra_tokens=extra_tokens,
        cut_prefix_tokens=len(prefix_ids) - len(kept_prefix),
        cut_suffix_tokens=len(suffix_ids) - len(kept_suffix),
        cut_chars=len(prefix)
        - len(prefix_text)
        + len(suffix)
        - len(suffix_text)
        + sum(len(text) for file_path, text in extra if file_path in dropped),
        dropped_files=dropped,
    )


def _too_small(room: int):
    from starchat_cli.core.errors import ContextOverflowError

    return ContextOverflowError(
        f"a fill-in-the-middle prompt needs more than {room} tokens of context: raise --ctx or lower max tokens"
    )


__all__ = [
    "FIM_MODELS",
    "SUFFIX_CAP",
    "Budgets",
    "FimPrompt",
    "FimVocab",
    "build_fim_prompt",
    "fim_vocab",
]
