"""Convert a Hugging Face StarCoder / StarCoder2 checkpoint folder to one GGUF file.

The whole plan (tensor names, shapes, types, sizes, metadata) is worked out and checked
before a byte is written. Then tensors are streamed one at a time, in row chunks, from
the mmap'd checkpoint straight into a temp file beside the output, which is renamed
only when complete: peak memory is a chunk plus one tensor's pages at most, whatever
the model's size, and a failed or interrupted run leaves no half file behind.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from converters.errors import ConversionError, OutOfSpaceError
from converters.outfile import DISK_FULL, PendingOutput, check_target, output_failure

from .arch import ArchPlan, read_config
from .families import plan_for
from .pipeline import F16, MAX_WORKERS, Ring, Tensor, chunks, n_bytes, out_type, pipelined
from .safetensors_io import FLOAT_DTYPES, SafetensorsFile, TensorEntry, read_index, shard_files
from .tokenizer import PRE_TOKENIZER, Vocab, read_vocab

OUTTYPES = ("f32", "f16", "bf16", "q8_0")
# general.file_type values (llama.cpp's LLAMA_FTYPE_*)
_FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total) of checkpoint data


@dataclass
class ConvertResult:
    path: Path
    arch: str
    hf_architecture: str
    outtype: str
    n_tensors: int
    n_params: int
    n_bytes: int
    seconds: float
    source_format: str  # safetensors | pytorch
    template_source: str
    warnings: list[str] = field(default_factory=list)


def find_weights(hf_dir: Path) -> tuple[str, list[Path]]:
    """Which weight files to read: safetensors first (indexed or not), else PyTorch .bin shards."""
    st_index = hf_dir / "model.safetensors.index.json"
    if st_index.is_file():
        return "safetensors", shard_files(hf_dir, st_index.name, read_index(st_index))
    singles = sorted(hf_dir.glob("*.safetensors"))
    if singles:
        return "safetensors", singles
    bin_index = hf_dir / "pytorch_model.bin.index.json"
    if bin_index.is_file():
        return "pytorch", shard_files(hf_dir, bin_index.name, read_index(bin_index))
    bins = sorted(hf_dir.glob("pytorch_model*.bin"))
    if bins:
        return "pytorch", bins
    raise ConversionError(
        f"{hf_dir} has no weights (model*.safetensors or pytorch_model*.bin): download the whole checkpoint"
    )


def _open_readers(kind: str, files: list[Path]) -> list[Any]:
    if kind == "safetensors":
        return [SafetensorsFile(p) for p in files]
    from .torch_bin import TorchBinFile

    return [TorchBinFile(p) for p in files]


def _check_index(hf_dir: Path, kind: str, readers: list[Any]) -> None:
    index_name = "model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json"
    index = hf_dir / index_name
    if not index.is_file():
        return
    for name, shard in read_index(index).items():
        reader = next((r for r in readers if r.path.name == shard), None)
        if reader is not None and name not in reader.tensors:
            raise ConversionError(
                f"{index_name} puts {name} in {shard}, which lacks it: the shard is incomplete or "
                "from another download"
            )


def check_disk(out_dir: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(out_dir).free
    except OSError:
        return
    margin = 16 * 1024 * 1024
    if free < needed + margin:
        raise OutOfSpaceError(
            f"not enough disk space in {out_dir}: the GGUF needs {needed / 1e9:.2f} GB, "
            f"{free / 1e9:.2f} GB are free: free some space or pass -o on another disk"
        )


def default_output(hf_dir: Path, outtype: str) -> Path:
    return Path.cwd() / f"{hf_dir.resolve().name}-{outtype.upper()}.gguf"


def convert_checkpoint(
    hf_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str] | None = None,
    outtype: str = "f16",
    progress: ProgressFn | None = None,
    *,
    prompt_format: str | None = None,
    name: str | None = None,
    overwrite: bool = False,
) -> ConvertResult:
    """Convert the checkpoint in ``hf_dir`` to GGUF at ``out_path``; returns what was written.

    ``outtype`` is f32, f16, bf16 or q8_0 (1-D tensors and position embeddings stay F32).
    ``prompt_format`` (``starchat``, ``chatml``, ``starcoder2-instruct``) supplies the chat
    template when the checkpoint has none. Raises :class:`ConversionError` for bad input.
    """
    started = time.perf_counter()
    hf = Path(hf_dir).expanduser()
    if not hf.is_dir():
        raise ConversionError(f"{hf} is not a folder: pass the folder of a Hugging Face checkpoint")
    outtype = outtype.lower()
    if outtype not in OUTTYPES:
        raise ConversionError(f"unknown output type {outtype!r}: choose one of {', '.join(OUTTYPES)}")
    out = Path(out_path).expanduser() if out_path is not None else default_output(hf, outtype)
    check_target(out)  # a folder, a path under a file, an unwritable folder: said before any work
    if out.exists() and not overwrite:
        raise ConversionError(f"{out} exists already: pass --force to replace it, or another -o")

    config = read_config(hf)
    plan = plan_for(config)
    kind, files = find_weights(hf)
    readers = _open_readers(kind, files)
    try:
        return _convert(hf, out, outtype, plan, config, kind, readers, progress, prompt_format, name, started)
    finally:
        for r in readers:
            r.close()


def _convert(
    hf: Path,
    out: Path,
    outtype: str,
    plan: ArchPlan,
    config: dict[str, Any],
    kind: str,
    readers: list[Any],
    progress: ProgressFn | None,
    prompt_format: str | None,
    name: str | None,
    started: float,
) -> ConvertResult:
    _check_index(hf, kind, readers)
    located: dict[str, tuple[Any, TensorEntry]] = {}
    for reader in readers:
        for tname, entry in reader.tensors.items():
            located.setdefault(tname, (reader, entry))
    # Read in file order, tensor by tensor, so the disk sees sequential reads.
    ordered = sorted(located.items(), key=lambda kv: (readers.index(kv[1][0]), kv[1][1].start))
    mapping = plan.validate({n: e.shape for n, (_, e) in ordered})

    tensors: list[Tensor] = []
    for hf_name, gguf_name in mapping:
        reader, entry = located[hf_name]
        if entry.dtype not in FLOAT_DTYPES:
            raise ConversionError(f"tensor {hf_name} is {entry.dtype}, not a float type: cannot convert it")
        ggml_type = out_type(gguf_name, entry.shape, outtype)
        tensors.append(
            Tensor(hf_name, gguf_name, entry, reader, ggml_type, entry.shape, n_bytes(ggml_type, entry.shape))
        )
    warnings = list(plan.notes)
    if outtype == "q8_0":
        kept = [t.name for t in tensors if t.ggml_type == F16]
        if kept:
            warnings.append(f"{len(kept)} tensors have rows not a multiple of 32 and stay F16")

    vocab = read_vocab(hf, config, plan.vocab_size, prompt_format=prompt_format)
    warnings.extend(vocab.warnings)

    import gguf

    alignment = gguf.GGUF_DEFAULT_ALIGNMENT
    data_bytes = sum(gguf.GGUFWriter.ggml_pad(t.out_bytes, alignment) for t in tensors)
    vocab_bytes = sum(len(s.encode("utf-8")) + 8 for s in vocab.tokens + vocab.merges)
    pending = PendingOutput(out)  # an unwritable folder fails here, before the free-space check
    try:
        check_disk(out.parent, data_bytes + vocab_bytes + 1024 * 1024)
    except BaseException:
        pending.discard()
        raise
    tmp = pending.path
    writer = None
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="starchat-convert") if workers > 1 else None
    ring = Ring(workers + 2)  # jobs in flight (workers + 1) plus the chunk being written
    try:
        writer = gguf.GGUFWriter(tmp, plan.arch)
        write_metadata(writer, plan, vocab, _FILE_TYPE[outtype], name or hf.resolve().name)
        for t in tensors:
            writer.add_tensor_info(
                t.name,
                t.out_shape,
                np.dtype(np.float32),
                t.out_bytes,
                raw_dtype=gguf.GGMLQuantizationType(t.ggml_type),
            )
        writer.write_header_to_file()
        write_kv(writer)
        writer.write_ti_data_to_file()
        assert writer.fout is not None
        fout = writer.fout[0]
        writer.write_padding(fout, fout.tell())
        data_start = fout.tell()
        offset = 0
        total = sum(t.entry.n_bytes for t in tensors)
        done = 0
        if progress is not None:
            progress(0, total)
        for t in tensors:
            if fout.tell() != data_start + offset:
                raise AssertionError(f"GGUF layout drifted at {t.name}")
            written = 0
            jobs = chunks(t, plan.transforms.get(t.name), ring)
            read = 0
            for piece, consumed in pipelined(jobs, pool, workers + 1):
                fout.write(piece.data.cast("B"))  # ndarray.data: the memoryview of the array
                written += piece.nbytes
                done += consumed
                read += consumed
                if consumed < t.entry.n_bytes:
                    t.reader.release(t.hf_name, 0, read)  # keep only in-flight chunks resident
                if progress is not None:
                    progress(done, total)
            if written != t.out_bytes:
                raise AssertionError(f"{t.name}: wrote {written} bytes, expected {t.out_bytes}")
            writer.write_padding(fout, written)
            offset += gguf.GGUFWriter.ggml_pad(written, alignment)
            t.reader.release(t.hf_name)
        fout.flush()
        os.fsync(fout.fileno())
        writer.close()
        writer = None
        pending.commit()  # fsync, 0666 & ~umask like any file, and into place in one step
    except BaseException as exc:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
            pool = None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        pending.discard()
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise output_failure(out, exc) from exc
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return ConvertResult(
        path=out,
        arch=plan.arch,
        hf_architecture=plan.hf_architecture,
        outtype=outtype,
        n_tensors=len(tensors),
        n_params=sum(int(np.prod(t.out_shape)) for t in tensors),
        n_bytes=out.stat().st_size,
        seconds=time.perf_counter() - started,
        source_format=kind,
        template_source=vocab.template_source,
        warnings=warnings,
    )


def write_metadata(writer: Any, plan: ArchPlan, vocab: Vocab, file_type: int, name: str) -> None:
    """The GGUF keys of a StarCoder-family file: hyperparameters, ``general.file_type`` (a
    LLAMA_FTYPE_* id) and the tokenizer."""
    arch = plan.arch
    writer.add_name(name)
    for kv in plan.kvs:
        key = f"{arch}.{kv.key}"
        if kv.kind == "u32":
            writer.add_uint32(key, int(kv.value))
        else:
            writer.add_float32(key, float(kv.value))
    writer.add_file_type(file_type)
    writer.add_quantization_version(2)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.token_types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_unk_token_id(vocab.unk_id)
    if vocab.pad_id is not None:
        writer.add_pad_token_id(vocab.pad_id)
    for kind, token_id in vocab.fim_ids.items():
        writer.add_uint32(f"tokenizer.ggml.fim_{kind}_token_id", token_id)
    writer.add_add_bos_token(vocab.add_bos)
    writer.add_add_eos_token(vocab.add_eos)
    if vocab.chat_template is not None:
        writer.add_chat_template(vocab.chat_template)


def write_kv(writer: Any) -> None:
    """``GGUFWriter.write_kv_data_to_file`` with fast paths for the big arrays.

    The writer packs every token and merge through several Python calls (about a second for
    a 49k vocabulary); string and int32 arrays are packed here in bulk, byte-identical
    (the tests read the files back with gguf's reader and llama.cpp). Anything unexpected
    falls back to the writer's own method.
    """
    from gguf.constants import GGUFValueType
    from gguf.gguf_writer import WriterState

    if (
        getattr(writer, "state", None) is not WriterState.HEADER
        or len(writer.kv_data) != 1
        or not writer.fout
    ):
        writer.write_kv_data_to_file()
        return
    parts: list[bytes] = []
    for key, val in writer.kv_data[0].items():
        kb = key.encode("utf-8")
        parts.append(struct.pack("<Q", len(kb)) + kb)
        value = val.value
        if val.type == GGUFValueType.ARRAY and isinstance(value, (list, tuple)) and value:
            if val.sub_type in (None, GGUFValueType.STRING) and all(isinstance(v, str) for v in value):
                pack = struct.Struct("<Q").pack
                head = struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.STRING, len(value))
                body = b"".join([pack(len(e)) + e for e in (v.encode("utf-8") for v in value)])
                parts.append(head + body)
                continue
            if val.sub_type in (None, GGUFValueType.INT32) and all(type(v) is int for v in value):
                head = struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.INT32, len(value))
                parts.append(head + np.asarray(value, dtype="<i4").tobytes())
                continue
        parts.append(writer._pack_val(value, val.type, add_vtype=True, sub_type=val.sub_type))
    writer.fout[0].write(b"".join(parts))
    writer.flush()
    writer.state = WriterState.KV_DATA
