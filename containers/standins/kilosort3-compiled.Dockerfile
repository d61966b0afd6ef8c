# Stand-in for spikeinterface/kilosort3-compiled-base:0.3.0 (MATLAB Runtime + ks3_compiled):
# the bookworm stand-in with a fake ks3_compiled at the real path. It records what SpikeInterface
# gave it, then fails the way the real binary fails without a GPU.
ARG BASE
FROM ${BASE}
COPY fake_ks3_compiled.sh /usr/bin/mlrtapp/ks3_compiled
