"""The five self-supervised tasks of Baugh et al. 2024 (ICDM; the MTML 2023 tasks), 2D and 3D.

Modules (imported on demand):

* :mod:`adsys.synth.tasks.shapes` — anomaly sizes, deformed hyper-shapes, rasters, placement,
  ray–edge distances.
* :mod:`adsys.synth.tasks.blend` — Poisson blending with mixed gradients (a DST solver) and
  the source-patch transform (tasks 0 and 1).
* :mod:`adsys.synth.tasks.sources` — foreign blending sources: scikit-image's packaged images
  or a folder of images / NIfTI volumes (task 1).
* :mod:`adsys.synth.tasks.deform` — radial sink and source deformations (tasks 2 and 3).
* :mod:`adsys.synth.tasks.intensity` — smooth (fractal-Perlin) intensity change (task 4).
* :mod:`adsys.synth.tasks.folds` — the 10 folds' train / validation task splits.
* :mod:`adsys.synth.tasks.restoration` — the ``icdm_tasks`` online corruption.
"""
