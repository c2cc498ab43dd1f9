"""Tests of the dataset readers and loaders, and of reading files from elsewhere
safely.
"""
