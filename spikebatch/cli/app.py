"""``spikebatch``: the command-line app. Only wiring: the commands live in ``jobs``,
``image_commands``, ``redrive``, ``study``, ``campaign`` and ``queues``; their shared options in ``common``.

Settings precedence, everywhere: command-line flag > environment variable (named in each
option's help) > ``--request`` file > default. Domain errors end with one line on stderr
and exit status 1, never a traceback.
"""

from __future__ import annotations

import typer

from spikebatch.cli import jobs
from spikebatch.cli.campaign import campaign_app
from spikebatch.cli.image_commands import image_app
from spikebatch.cli.queues import queues_app
from spikebatch.cli.redrive import redrive
from spikebatch.cli.study import study_app

app = typer.Typer(
    name="spikebatch",
    help=(
        "Spike sorting (Kilosort3 and other SpikeInterface sorters) on AWS Batch GPUs, "
        "for recordings on DANDI or in S3. Finds the deployed stack by name, so you never "
        "paste ARNs. Precedence: flag > environment variable > --request file > default."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


for command in (jobs.submit, jobs.estimate, jobs.status, jobs.logs, jobs.wait, jobs.results,
                jobs.cancel):  # fmt: skip
    app.command()(command)
app.command("run-local")(jobs.run_local)
app.command()(redrive)
app.add_typer(image_app, name="image")
app.add_typer(study_app, name="study")
app.add_typer(campaign_app, name="campaign")
app.add_typer(queues_app, name="queues")
