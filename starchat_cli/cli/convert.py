"""``starchat convert`` (Hugging Face checkpoint -> GGUF) and ``starchat quantize`` (GGUF -> smaller GGUF).

The work lives in the ``converters`` package; this module parses, shows progress (a rich
bar on a terminal, nothing while piped) and registers the result in the local store on
request. converters, numpy, gguf, torch and llama_cpp are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from starchat_cli.cli.limits import number
from starchat_cli.core.units import format_bytes

CONVERT_HELP = """\
Convert a Hugging Face checkpoint folder to a GGUF file llama.cpp can run.

Supports GPTBigCodeForCausalLM (StarChat-alpha/beta, StarCoder) and
Starcoder2ForCausalLM (StarChat2, StarCoder2-Instruct), from safetensors (single or
sharded) or PyTorch .bin shards. Norms, biases and position embeddings stay F32.
The output appears only when complete.

\b
  starchat convert ./starchat2-15b-v0.1 -o starchat2-F16.gguf
  starchat convert ./starchat-beta --outtype q8_0 --register starchat-beta
"""

QUANTIZE_HELP = """\
Quantize a GGUF file with llama.cpp's quantizer (Q4_K_M, Q5_K_M, Q6_K, Q8_0, ...).

Start from an F16, BF16 or F32 file. The output appears only when complete and never
replaces the input. An unknown --type lists the valid ones.

\b
  starchat quantize starchat2-F16.gguf --type Q4_K_M
  starchat quantize starchat2-F16.gguf -o sc2-q5.gguf --type Q5_K_M --register starchat2-q5
"""


def register(app: typer.Typer) -> None:
    app.command("convert", help=CONVERT_HELP)(convert)
    app.command("quantize", help=QUANTIZE_HELP)(quantize)


def _register_result(path: Path, name: str, family: Optional[str], quant: str, force: bool) -> None:
    from starchat_cli.models.store import Store

    entry = Store().add(path, name, family, quant, source="converted", replace_existing=force)
    print(f'registered as {entry.name}: starchat ask -m {entry.name} "..."')


def convert(
    hf_dir: Path = typer.Argument(..., help="Folder with config.json, tokenizer.json and the weights."),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="The .gguf file to write. [default: ./FOLDER-OUTTYPE.gguf]",
        show_default=False,
    ),
    outtype: str = typer.Option(
        "f16", "--outtype", help="Type of the weight matrices: f32, f16, bf16 or q8_0.", show_default=True
    ),
    family: Optional[str] = typer.Option(
        None,
        "--family",
        help="Catalog model this checkpoint is (starchat2, starchat-beta, ...): supplies the chat "
        "template when the checkpoint has none, and the prompt format when registered.",
        show_default=False,
    ),
    register_as: Optional[str] = typer.Option(
        None,
        "--register",
        help="Add the result to the local store under this name (then: starchat ask -m NAME).",
        show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file or store entry."),
) -> None:
    from starchat_cli.cli.signals import terminate_like_ctrl_c

    terminate_like_ctrl_c()
    from converters.convert import OUTTYPES, convert_checkpoint
    from starchat_cli.cli.progress import Progress
    from starchat_cli.cli.terminal import note
    from starchat_cli.core.errors import ConversionError
    from starchat_cli.models.catalog import get_spec

    if outtype.lower() not in OUTTYPES:
        raise ConversionError(f"unknown --outtype {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    prompt_format = None
    if family is not None:
        spec = get_spec(family)
        prompt_format = spec.prompt_format if spec.prompt_format != "gguf" and spec.chats else None
        _check_family(hf_dir, spec.hf_architecture, family)
    from starchat_cli.services.conversion import converter_errors

    with converter_errors(), Progress(transient=True) as bars:
        result = convert_checkpoint(
            hf_dir,
            output,
            outtype,
            bars.callback(f"converting {hf_dir.name}"),
            prompt_format=prompt_format,
            overwrite=force,
        )
    for warning in result.warnings:
        note(f"warning: {warning}")
    template = {
        "checkpoint": "the checkpoint's chat template",
        "chat_template.jinja": "the checkpoint's chat_template.jinja",
        "none": "no chat template",
    }.get(result.template_source, f"chat template from the catalog ({result.template_source[8:]})")
    print(
        f"wrote {result.path}: {result.arch}, {result.outtype.upper()}, {result.n_tensors} tensors, "
        f"{format_bytes(result.n_bytes)}, {template}, in {result.seconds:.1f} s"
    )
    if register_as is not None:
        _register_result(result.path, register_as, family, result.outtype.upper(), force)


def _check_family(hf_dir: Path, expected: str, family: str) -> None:
    from converters.arch import read_config
    from starchat_cli.core.errors import ConversionError

    if not hf_dir.is_dir():
        return  # convert_checkpoint reports it
    from starchat_cli.services.conversion import converter_errors

    with converter_errors():
        archs = read_config(hf_dir).get("architectures") or []
    if archs and expected not in archs:
        raise ConversionError(
            f"--family {family} is a {expected} model but config.json names {', '.join(map(str, archs))}"
        )


def quantize(
    model: str = typer.Argument(..., help="An F16/BF16/F32 .gguf file (or a name from `starchat list`)."),
    qtype: str = typer.Option(
        ...,
        "--type",
        "-t",
        help="Q4_K_M, Q5_K_M, Q6_K, Q8_0, Q4_0, Q5_0, Q3_K_M, Q2_K, IQ4_XS, ... (every type llama.cpp offers).",
        show_default=False,
    ),
    output: Optional[Path] = typer.Option(
        None,
        "--output",
        "-o",
        help="The .gguf file to write. [default: beside the input, named after the type]",
        show_default=False,
    ),
    threads: int = typer.Option(
        0, "--threads", help="Threads for the quantizer; 0 = every core.", callback=number("quantize_threads")
    ),
    allow_requantize: bool = typer.Option(
        False, "--allow-requantize", help="Accept an input that is already quantized (loses quality)."
    ),
    family: Optional[str] = typer.Option(
        None,
        "--family",
        help="Catalog model the file is, for --register. [default: the input's, when it is registered]",
        show_default=False,
    ),
    register_as: Optional[str] = typer.Option(
        None,
        "--register",
        help="Add the result to the local store under this name.",
        show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file or store entry."),
) -> None:
    from starchat_cli.cli.signals import terminate_like_ctrl_c

    terminate_like_ctrl_c()
    from converters.quantize import check_type
    from converters.quantize import quantize as run_quantize
    from starchat_cli.cli.progress import Progress
    from starchat_cli.models.catalog import get_spec
    from starchat_cli.models.gguf_info import read_gguf_info
    from starchat_cli.models.store import Store
    from starchat_cli.services.conversion import converter_errors

    with converter_errors():
        check_type(qtype)  # a bad type fails before anything is loaded
    if family is not None:
        get_spec(family)
    resolved = Store().resolve(model)
    read_gguf_info(resolved.path)  # missing, not a GGUF, truncated: starchat's one-line errors
    if family is None and resolved.spec is not None:
        family = resolved.spec.name
    with converter_errors(), Progress(transient=True) as bars:
        result = run_quantize(
            resolved.path,
            output,
            qtype,
            progress=bars.callback(f"quantizing {resolved.path.name}", "tensors"),
            threads=threads,
            allow_requantize=allow_requantize,
            overwrite=force,
        )
    print(
        f"wrote {result.path}: {result.qtype}, {format_bytes(result.out_bytes)} "
        f"({result.out_bytes / max(result.in_bytes, 1):.0%} of the input), in {result.seconds:.1f} s"
    )
    if register_as is not None:
        _register_result(result.path, register_as, family, result.qtype, force)
