"""Tests of the CUDA backend: on a GPU, compiled without one, and emulated on the CPU
(gpu_emu.py, gpu_emulation/).
"""
