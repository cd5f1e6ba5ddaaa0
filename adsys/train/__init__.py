"""Training: Ray Train + DeepSpeed over streamed shards.

Import from the modules (this package stays light so that ``adsys --help`` is fast):

* :mod:`~adsys.train.config` — :class:`TrainConfig`, run presets, :func:`resolve_config`;
* :mod:`~adsys.train.cli` — ``adsys train`` and ``ray_jobs/train.py``;
* :mod:`~adsys.train.job` — :func:`run_training`, the Ray Train driver;
* :mod:`~adsys.train.loop` — the per-worker loop;
* :mod:`~adsys.train.engine` — the DeepSpeed engine and its config;
* :mod:`~adsys.train.data` — the rank's stream of the method's declared data;
* :mod:`~adsys.train.ema`, :mod:`~adsys.train.checkpoint`, :mod:`~adsys.train.metrics` — EMA,
  checkpoints with exact resume, the metrics log.
"""
