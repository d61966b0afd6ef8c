"""Spread the image's Python environment over several layers of similar size.

AWS Batch's guide ("Optimize containers and AMIs") says Docker fetches an image's layers three
at a time, one thread per layer, and recommends layers under 2 GB: one 5 GB layer would be
fetched by a single thread. So the biggest directories of the venv's site-packages (torch, the
nvidia-* CUDA libraries, ...) are moved, largest first, into whichever of LAYERS folders is
lightest, keeping their paths (``<out>/<n>/opt/venv/...``); the rest stays in the venv. The
Dockerfiles copy the venv and each folder as layers of their own: together the same files.

    python split_layers.py /opt/venv /layers
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

LAYERS = 3  # folders besides what stays in the venv: 4 layers of ~1.3 GB for 5.1 GB
MOVABLE_BYTES = 50 * 2**20  # only directories this big are worth a move


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def main(venv: Path, out: Path) -> None:
    (site,) = venv.glob("lib/python3.*/site-packages")
    candidates = [p for p in site.iterdir() if p.is_dir() and p.name != "nvidia"]
    candidates += [p for p in (site / "nvidia").iterdir() if p.is_dir()]
    sizes = {p: size_of(p) for p in candidates}
    movable = sorted(
        (p for p in candidates if sizes[p] >= MOVABLE_BYTES), key=sizes.get, reverse=True
    )
    loads = [size_of(venv) - sum(sizes[p] for p in movable)] + [0] * LAYERS  # [0]: stays
    for path in movable:
        lightest = min(range(len(loads)), key=loads.__getitem__)
        loads[lightest] += sizes[path]
        if lightest:
            target = out / str(lightest) / path.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
    for n in range(1, LAYERS + 1):
        (out / str(n)).mkdir(parents=True, exist_ok=True)  # COPY needs each folder to exist
    report = ", ".join(f"{load / 1e9:.2f} GB" for load in loads)
    print(f"split_layers: venv + {LAYERS} layers: {report}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
