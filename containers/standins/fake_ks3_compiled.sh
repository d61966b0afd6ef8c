#!/bin/sh
# Fake ks3_compiled (stand-in base only): SpikeInterface calls `ks3_compiled <output folder>`.
# Record the arguments, the working directory and the folder's files next to them, then fail
# like the real binary on a machine without CUDA.
folder="$1"
{
  printf '{"argv": ["%s"], "cwd": "%s", "files": [' "$*" "$(pwd)"
  first=1
  for f in "$folder"/*; do
    [ "$first" = 1 ] || printf ', '
    printf '"%s"' "$(basename "$f")"
    first=0
  done
  printf ']}\n'
} > "$folder/ks3_call.json"
echo "Error using gpuArray: CUDA driver version is insufficient" >&2
exit 1
