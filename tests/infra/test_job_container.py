"""The job definitions run the worker container the way the container tests proved it must
run (tests/image/): an init as PID 1, enough /dev/shm, as the image's non-root user. The
values come from one home, ``spikebatch.worker_image.BATCH_RUNTIME``, which
``run-local --image`` and the container tests use too.
"""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk

from spikebatch.worker_image import BATCH_RUNTIME


def _job_definitions(synthesized):
    return synthesized.props("AWS::Batch::JobDefinition")


def test_every_job_runs_an_init_process_and_the_shared_memory_the_sorters_need(synthesized):
    definitions = _job_definitions(synthesized)
    assert len(definitions) == 2
    for definition in definitions:
        linux = definition["ContainerProperties"]["LinuxParameters"]
        assert linux["InitProcessEnabled"] is True
        assert linux["SharedMemorySize"] == BATCH_RUNTIME.shared_memory_mib
    assert BATCH_RUNTIME.init_process is True
    assert BATCH_RUNTIME.shared_memory_mib > 64  # Docker's default is what failed


def test_job_definitions_do_not_override_the_images_non_root_user(synthesized):
    for definition in _job_definitions(synthesized):
        assert "User" not in definition["ContainerProperties"]
        assert definition["ContainerProperties"].get("Privileged") in (None, False)


def test_the_worker_repository_has_immutable_tags(synthesized):
    (repository,) = synthesized.props("AWS::ECR::Repository")
    assert repository["ImageTagMutability"] == "IMMUTABLE"
    assert repository["ImageScanningConfiguration"] == {"ScanOnPush": True}


def test_worker_image_tag_points_the_job_definitions_at_the_pushed_image(tmp_path):
    """With ``worker_image_tag`` set (what `spikebatch image build --push` prints), the job
    definitions run that tag of the stack's repository and nothing is built at deploy time."""
    import app as cdk_app
    from tests.infra.build_inputs import cdk_json_context

    context = cdk_json_context()
    context["spikebatch:worker_image_tag"] = "kilosort3-0123456789ab"
    app = cdk.App(context=context, outdir=str(tmp_path))
    stack = cdk_app.build(app)
    template = cdk.assertions.Template.from_stack(stack)
    images = [
        d["Properties"]["ContainerProperties"]["Image"]
        for d in template.find_resources("AWS::Batch::JobDefinition").values()
    ]
    assert len(images) == 2
    for image in images:
        rendered = str(image)
        assert "kilosort3-0123456789ab" in rendered
        assert "cdk-hnb659fds-container-assets" not in rendered  # not the CDK asset repository
    assembly = Path(app.synth().directory)
    (assets,) = assembly.glob(f"{stack.stack_name}.assets.json")
    assert json.loads(assets.read_text()).get("dockerImages", {}) == {}
    outputs = template.find_outputs("ImageUri")
    assert "kilosort3-0123456789ab" in str(outputs)
