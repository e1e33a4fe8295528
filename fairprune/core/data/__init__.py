"""Prompt data: bias axes and prompt files (``prompts``), prompt groups and splits (``groups``), and the strict
readers of the benchmarks' files (``benchmark_files``). Imports only ``contract``;
plugins may import it.
"""
