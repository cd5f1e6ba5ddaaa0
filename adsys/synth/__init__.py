"""Pseudo-pathology generators: Perlin and simplex noise, fluid-driven lesions, online
corruptions (augmentation, DISYRE's disentangled anomalies, ICDM's self-supervised tasks).

Modules (imported on demand, so that ``adsys`` starts without loading torch):

* :mod:`adsys.synth.perlin` — ``perlin_noise``, ``PerlinLattice`` (2D/3D gradient noise).
* :mod:`adsys.synth.simplex` — ``simplex_noise`` (AnoDDPM fractal simplex noise).
* :mod:`adsys.synth.flow` — velocity / diffusivity fields of the fluid PDE.
* :mod:`adsys.synth.solver` — ``solve`` (paper PDE) and ``solve_una`` (UNA-compatible).
* :mod:`adsys.synth.fluid` — ``FluidConfig``, ``generate``, ``replay``.
* :mod:`adsys.synth.variants` — generators by name, ``make_variants``, ``replay_variant``
  (the shard builder's variants, with replay records).
* :mod:`adsys.synth.tissue` — ``tissue_centroids`` (1-D k-means of brain intensities).
* :mod:`adsys.synth.corruption` — the online corruption contract and registry.
* :mod:`adsys.synth.augment` — ``intensity_augmentation`` (cDDPM's augmentation).
* :mod:`adsys.synth.dag` — ``dag`` (DISYRE v2's disentangled anomaly generation).
* :mod:`adsys.synth.tasks` — ``icdm_tasks`` (ICDM's five self-supervised tasks, their folds).
* :mod:`adsys.synth.cli` — ``adsys synth fluid``.
"""
