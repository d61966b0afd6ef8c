"""The worker: one sorting job from the environment (the container contract) to published results.

Stages, one module each: ``settings`` (config) -> ``fetch`` -> ``recording`` (open) ->
``preprocess`` -> ``sort`` -> ``postprocess`` -> ``export`` + ``report`` -> ``publish``;
``pipeline`` runs them and writes run.json (``manifest``). ``demo`` is ``make demo``.
Around them: ``layout`` (which series to sort, their shapes, read locally or over HTTP
ranges), ``budget`` and ``scratch`` (the scratch budget checked before the download; one
locked folder per run, measured), ``phase_shift`` (the Kilosort default's CPU step).
"""
