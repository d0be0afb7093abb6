"""Hugging Face checkpoints -> GGUF (StarCoder / StarCoder2) and quantization.

``converters.convert.convert_checkpoint(hf_dir, out_path, outtype)`` writes a GGUF file;
``converters.quantize.quantize(in_path, out_path, qtype)`` runs llama.cpp's quantizer.
Both raise :class:`starchat_cli.core.errors.ConversionError` for bad input. The package
holds no UI imports; numpy and gguf load with the modules that need them, torch only for
PyTorch ``.bin`` checkpoints, llama_cpp only to quantize.
"""
