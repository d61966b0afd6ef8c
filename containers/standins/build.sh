#!/usr/bin/env bash
# Local stand-ins for the worker images' upstream bases, for machines that reach no image
# registry (CI here): used only where `docker pull` of the real base fails.
#
#   nvidia/cuda:12.4.1-base-ubuntu22.04          Debian bookworm (minbase) + python3.11 + CA bundle
#   ghcr.io/astral-sh/uv:0.5.11                  the uv binary from PyPI's uv 0.5.11 wheel, FROM scratch
#   spikeinterface/kilosort3-compiled-base:0.3.0 the bookworm stand-in + a fake ks3_compiled at the
#                                                real path (/usr/bin/mlrtapp), which records what it
#                                                was given (no MATLAB Runtime, no GPU here)
#
# Every knob a stand-in needs lives in the stand-in itself (ENV UV_NATIVE_TLS=1 for this network's
# TLS re-signing, UV_PYTHON_DOWNLOADS=never since GitHub is out of reach): the worker Dockerfiles
# build unchanged on top. Each stand-in carries the label org.spikebatch.standin=true.
#
# Usage: containers/standins/build.sh [--force]   (needs root for debootstrap, and a Docker engine)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
FORCE="${1:-}"
CUDA_BASE="nvidia/cuda:12.4.1-base-ubuntu22.04"
UV_BASE="ghcr.io/astral-sh/uv:0.5.11"
KS3_BASE="spikeinterface/kilosort3-compiled-base:0.3.0"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
LABEL="org.spikebatch.standin=true"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

have() { [ "$FORCE" != "--force" ] && docker image inspect "$1" >/dev/null 2>&1; }
pullable() { [ "$FORCE" != "--force" ] && timeout 60 docker pull -q "$1" >/dev/null 2>&1; }
say() { echo "standins: $*"; }

need_base() {  # true when a stand-in must be built for $1
  if have "$1"; then say "$1 present"; return 1; fi
  if pullable "$1"; then say "$1 pulled from its registry"; return 1; fi
  say "$1 cannot be pulled: building a local stand-in"
  return 0
}

if need_base "$CUDA_BASE"; then
  command -v debootstrap >/dev/null || { echo "standins: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
  debootstrap --variant=minbase --include=python3.11,ca-certificates bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  # This network re-signs TLS: the host's bundle (with its CA) replaces the stock one.
  cp /etc/ssl/certs/ca-certificates.crt "$WORK/rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  tar -C "$WORK/rootfs" -c . | docker import \
    --change "LABEL $LABEL" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV UV_NATIVE_TLS=1 UV_PYTHON_DOWNLOADS=never SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    --change 'CMD ["bash"]' - "$CUDA_BASE" >/dev/null
  say "built $CUDA_BASE ($(docker image inspect -f '{{.Size}}' "$CUDA_BASE" | numfmt --to=iec))"
fi

if need_base "$UV_BASE"; then
  python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --python-version 3.11 -d "$WORK/uv" "uv==0.5.11"
  python3 - "$WORK/uv" <<'PY'
import sys, zipfile, pathlib, stat
folder = pathlib.Path(sys.argv[1])
wheel = next(folder.glob("uv-0.5.11-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith((".data/scripts/uv", ".data/scripts/uvx")):
            target = folder / name.rsplit("/", 1)[1]
            target.write_bytes(z.read(name))
            target.chmod(0o755)
PY
  docker build -q -t "$UV_BASE" --label "$LABEL" -f "$HERE/uv.Dockerfile" "$WORK/uv" >/dev/null
  say "built $UV_BASE"
fi

if need_base "$KS3_BASE"; then
  docker build -q -t "$KS3_BASE" --label "$LABEL" --build-arg "BASE=$CUDA_BASE" \
    -f "$HERE/kilosort3-compiled.Dockerfile" "$HERE" >/dev/null
  say "built $KS3_BASE"
fi
