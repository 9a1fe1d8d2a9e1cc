"""The packaged default model: model-int8.safetensors and its tokenizer.json (see README.md)."""
