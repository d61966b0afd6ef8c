"""Publish: ``upload_tree`` of a results folder to S3 (moto server) vs a plain upload_file loop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import requests

from bench.common import MB, BenchResult, MiB, Ratio, random_file, scratch_dir, timed
from spikebatch import transfer


def results_tree(root: Path) -> int:
    """A folder shaped like a run's outputs: a few large files and many small ones."""
    sizes = {
        "units.nwb": 48 * MiB,
        "sorting/spikes.npy": 24 * MiB,
        "sorting/provenance.json": 4096,
        "quality_metrics.csv": 64 * 1024,
        "run.json": 8192,
    }
    sizes.update({f"report/unit_{i:03d}.png": 150 * 1024 for i in range(60)})
    sizes.update({f"sorting/properties/p{i:02d}.npy": 1 * MiB for i in range(20)})
    for rel, size in sizes.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        random_file(root / rel, size, block=min(size, 4 * MiB))
    return sum(sizes.values())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[str]:
    """moto in its own process on loopback (the client under test keeps its GIL)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                requests.get(f"{url}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run(repeats: int = 2) -> BenchResult:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with scratch_dir("publish") as tmp, moto_server() as endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        try:
            total = results_tree(tmp / "results")
            files = sorted(p for p in (tmp / "results").rglob("*") if p.is_file())
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket="bench")

            def loop(prefix: str) -> None:
                for path in files:
                    rel = path.relative_to(tmp / "results").as_posix()
                    s3.upload_file(str(path), "bench", f"{prefix}/{rel}")

            ours_s, loop_s = [], []
            for i in range(repeats):
                loop_s.append(timed(lambda i=i: loop(f"loop{i}"))[0])
                ours_s.append(
                    timed(
                        lambda i=i: transfer.upload_tree(
                            tmp / "results", f"s3://bench/ours{i}", progress=False
                        )
                    )[0]
                )
        finally:
            del os.environ["AWS_ENDPOINT_URL"]
    best_ours, best_loop = min(ours_s), min(loop_s)
    return BenchResult(
        "publish",
        [
            Ratio(
                "publish: upload_tree / upload_file loop (speed-up)",
                best_loop / best_ours,
                1.0,
                note=f"{len(files)} files, {total / MB:.0f} MB to a moto server",
            )
        ],
        measurements={
            "files": len(files),
            "bytes": total,
            "upload_tree_s": best_ours,
            "upload_file_loop_s": best_loop,
            "upload_tree_MBps": round(total / best_ours / MB, 1),
            "upload_file_loop_MBps": round(total / best_loop / MB, 1),
            "load_avg_1m": os.getloadavg()[0],
        },
        notes=["moto keeps objects in memory: a loopback S3 with no per-stream cap"],
    )
