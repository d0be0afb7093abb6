"""Hugging Face checkpoints -> GGUF (StarCoder / StarCoder2) and quantization.

``converters.convert.convert_checkpoint(hf_dir, out_path, outtype)`` writes a GGUF file;
``converters.quantize.quantize(in_path, out_path, qtype)`` runs llama.cpp's quantizer.
Both raise the types of :mod:`converters.errors` (``ConversionError`` for bad input),
which starchat maps to its exit codes. The package imports nothing from starchat_cli and
no UI library; numpy and gguf load with the modules that need them, torch only for
PyTorch ``.bin`` checkpoints, llama_cpp only to quantize.
"""
