#!/bin/sh
# What the worker never runs, removed from the image's Python environment. Every new Batch
# instance pulls the image before its first job, so each MB here is paid on every cold start
# (README: "Image size"). Run once, in the image build, after the lock is installed.
set -eu
venv="$1"
site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# Triton (~690 MB) is torch.compile's kernel compiler. Nothing in the worker compiles:
# Kilosort 4 and SpikeInterface run torch eagerly, and torch imports triton only on demand.
uv pip uninstall --python "$venv/bin/python" triton

# Test suites shipped inside packages (~200 MB: pandas, numba, scipy, sympy, ...): never
# imported at run time.
find "$site" -depth -type d -name tests -prune -exec rm -rf {} +
