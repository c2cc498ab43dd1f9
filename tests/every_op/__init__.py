"""Properties every op family must keep, each written once and parametrised over
a table of ops per family: thread safety, no leaks, arbitrary options.
"""
