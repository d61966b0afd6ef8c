"""``make bench``: the worker's stages measured against their physical limits, side by side.

Each benchmark generates its data in the run (nothing is downloaded), prints ratios next
to their targets and writes a JSON record into ``bench/results/``.
"""
