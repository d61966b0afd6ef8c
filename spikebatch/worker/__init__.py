"""The worker: one sorting job from the environment (the container contract) to published results.

Stages, one module each: ``settings`` (config) -> ``fetch`` -> ``recording`` (open) ->
``preprocess`` -> ``sort`` -> ``postprocess`` -> ``export`` + ``report`` -> ``publish``;
``pipeline`` runs them and writes run.json (``manifest``). ``demo`` is ``make demo``.
"""
