"""The worker image and how its container runs: one home for what the Batch job definitions
(``stacks/jobs.py``), ``spikebatch image build/push``, ``spikebatch run-local --image`` and the
container tests must agree on.

Pure Python (no docker SDK): ``stacks/`` imports it at synth time.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikebatch.contract import DEFAULT_SCRATCH_DIR

#: Local repository name of the images ``spikebatch image build`` makes (tag = the sorter).
LOCAL_REPOSITORY = "spikebatch-worker"


@dataclass(frozen=True, slots=True)
class WorkerImage:
    """One buildable worker image: which Dockerfile (repository-relative) makes it."""

    name: str
    dockerfile: str
    description: str

    @property
    def local_tag(self) -> str:
        return f"{LOCAL_REPOSITORY}:{self.name}"


IMAGES: dict[str, WorkerImage] = {
    image.name: image
    for image in (
        WorkerImage(
            "kilosort3",
            "containers/Dockerfile",
            "compiled Kilosort3 (MATLAB Runtime, no licence) + Kilosort4 + CPU sorters; "
            "what cdk deploy builds",
        ),
        WorkerImage(
            "kilosort4",
            "containers/Dockerfile.kilosort4",
            "Kilosort4 + CPU sorters, no MATLAB (smaller)",
        ),
    )
}
#: The image the job definitions run when the stack builds it (``cdk deploy``).
DEPLOYED_IMAGE = IMAGES["kilosort3"]


@dataclass(frozen=True, slots=True)
class ContainerRuntime:
    """How the worker container runs on Batch; ``run-local --image`` copies it exactly.

    - ``user``: the image's non-root worker (``USER 1000:1000`` in both Dockerfiles).
    - ``init_process``: an init (tini) as PID 1 forwards Batch's SIGTERM to the worker and
      reaps the processes it leaves (SpikeInterface's worker pools, the compiled Kilosort3's
      shell wrapper and MATLAB Runtime), so a stop ends the job cleanly with exit code 130.
    - ``shared_memory_mib``: /dev/shm. Docker's default is 64 MiB; SpikeInterface's template
      accumulator (tridesclous2, spykingcircus2: the CPU sorters) keeps
      workers x units x samples x channels float32 arrays (twice) there, about 110 MiB
      for 4 workers, 100 units and 384 channels, and dies with SIGBUS past the limit
      (tests/image/test_shared_memory.py). Memory in /dev/shm counts against the job's.
    - ``stop_timeout_s``: ECS sends SIGTERM, then SIGKILL this long after
      (``ECS_CONTAINER_STOP_TIMEOUT``, default 30 s).
    """

    user: str = "1000:1000"
    init_process: bool = True
    shared_memory_mib: int = 4096
    stop_timeout_s: int = 30
    scratch_dir: str = DEFAULT_SCRATCH_DIR


BATCH_RUNTIME = ContainerRuntime()


def pushed_tag(sorter: str, image_id: str) -> str:
    """The tag a pushed image gets: the sorter and its content (the image id's digest).

    ECR tags are immutable in the stack's repository, so a tag always names the same bytes:
    the same build pushed twice gets the same tag, a changed build a new one.
    """
    digest = image_id.split(":", 1)[-1]
    return f"{sorter}-{digest[:12]}"
