"""Tests of the layers, modules and models: nn, folding, weights and saving, summary,
memory.
"""
