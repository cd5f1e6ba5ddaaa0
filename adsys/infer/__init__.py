"""Batch inference: per-batch predictor, writers (NIfTI, Zarr, CSV), report (PNG/HTML).

Import from the modules (this package stays light so that ``adsys --help`` is fast):

* :mod:`~adsys.infer.config` — :class:`InferConfig` (models, cohort, recipe overrides, outputs);
* :mod:`~adsys.infer.job` — :func:`run_inference`, the Ray Data driver;
* :mod:`~adsys.infer.predictor` — :class:`SubjectPredictor` (``map_batches`` actor class);
* :mod:`~adsys.infer.scorer` — :class:`VolumeScorer`: volume → reconstruction, raw map;
* :mod:`~adsys.infer.sources` — cohort store or manifest (preprocessed on the fly);
* :mod:`~adsys.infer.outputs` — the output layout and completion records;
* :mod:`~adsys.infer.report` — overlays, HTML report, metrics table;
* :mod:`~adsys.infer.evaluate` — :func:`evaluate_maps`, re-scoring saved maps.
"""
