"""Tests of training and the command line: the loop, kill and resume, optimisers,
losses, pruning, search, ensembles, plots.
"""
