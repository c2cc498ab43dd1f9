"""Tests of data-parallel training over MPI (_dist_worker.py holds the programs the
ranks run).
"""
