"""Test support shared by every area and the benchmarks: a fake DANDI server and ground-truth NWB files."""
