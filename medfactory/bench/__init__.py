"""``medfactory bench``: throughput, memory and MFU of a recipe through LLaMA-Factory, and the FLOP / memory model."""
