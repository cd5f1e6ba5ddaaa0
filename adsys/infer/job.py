"""Driver of a batch-inference run: models + cohort → Ray Data → maps, metrics, report.

:func:`run_inference` (Ray must be initialised):

1. reads the models' ``config.json``, applies the run's recipe overrides (validated here,
   before any work) and finds the ensemble's recipe (map, window, protocol: recorded in
   ``run.json`` with each model's config as used), takes their recorded preprocessing (for a
   manifest cohort) and lists the cohort's subjects of the requested splits;
2. when the threshold comes from the validation split (``threshold: val`` or
   ``val-fpr=…``), runs the ``val`` subjects first and chooses the threshold on their pooled
   maps (:func:`adsys.metrics.cohort.choose_cohort_threshold`);
3. runs the other subjects with that threshold known, so each subject's Dice at the
   threshold is computed where its map is;
4. merges the subjects' scores into ``metrics.csv``, ``summary.json`` (per-volume mean ±
   std, pooled histogram metrics, slice level; protocol named) and ``report.html``.

Subjects run as a Ray Data ``map_batches`` over an actor pool of
:class:`~adsys.infer.predictor.SubjectPredictor` (one GPU per actor when the cluster has
GPUs). Subjects already complete (:func:`adsys.infer.outputs.is_complete`) are skipped, so a
re-run or a killed run only computes what is missing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from adsys import __version__
from adsys.config import wants_gpu
from adsys.errors import InputError
from adsys.infer.config import InferConfig
from adsys.infer.outputs import (
    is_complete,
    load_result,
    load_score,
    write_metrics_csv,
)
from adsys.infer.predictor import SubjectPredictor, shared_preprocess
from adsys.infer.report import write_report
from adsys.infer.scorer import ensemble_recipe
from adsys.infer.sources import open_source
from adsys.io.atomic import write_json_atomic
from adsys.io.nifti import sha256_file
from adsys.methods.export import WEIGHTS, exported_config, read_record
from adsys.metrics.cohort import choose_cohort_threshold, summarize
from adsys.metrics.protocols import get_protocol

log = logging.getLogger(__name__)

__all__ = ["InferResult", "model_records", "num_actors", "run_inference"]


@dataclass
class InferResult:
    """What a run did and wrote. ``processed`` / ``skipped`` / ``failed`` are subject ids
    (``failed`` with the reason); ``subject_seconds``: each processed or failed subject's
    wall seconds in its actor (load, model, scoring, writing); ``seconds``: the run's."""

    out: Path
    summary: dict[str, Any]
    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    subject_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def report(self) -> Path:
        return self.out / "report.html"

    @property
    def metrics_csv(self) -> Path:
        return self.out / "metrics.csv"

    @property
    def summary_path(self) -> Path:
        return self.out / "summary.json"


def model_records(paths: list[Path], inference: dict[str, Any]) -> list[dict[str, Any]]:
    """Each exported model's ``config.json`` record with its method config as this run uses
    it (the ``inference`` overrides applied and validated), plus its weights' sha256."""
    out = []
    for p in paths:
        record = read_record(p)
        used = exported_config(record, inference, p).model_dump(mode="json")
        out.append({"config": {**record, "config": used},
                    "weights_sha256": sha256_file(Path(p) / WEIGHTS)})
    return out


def num_actors(config: InferConfig, gpu: bool) -> int:
    """``num_workers``, or for ``auto``: one actor per GPU, else per ``cpus_per_worker``."""
    if config.num_workers != "auto":
        return config.num_workers
    import ray

    resources = ray.cluster_resources()
    if gpu:
        return max(1, int(resources.get("GPU", 1)))
    return max(1, int(resources.get("CPU", 1)) // config.cpus_per_worker)


def _run_subjects(
    items: list[dict[str, str]],
    config: InferConfig,
    *,
    digest: str,
    threshold: float | None,
    preprocess: dict[str, Any] | None,
    progress: bool,
    desc: str,
) -> tuple[list[str], dict[str, str], dict[str, float]]:
    """Ray Data ``map_batches`` over ``items``; returns (done ids, {failed id: reason},
    {id: seconds in its actor})."""
    if not items:
        return [], {}, {}
    import ray.data
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().enable_progress_bars = False  # ours below counts subjects
    gpu = wants_gpu(config.use_gpu)  # one GPU per actor
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        SubjectPredictor,
        fn_constructor_kwargs={"config": config.model_dump(mode="json"), "digest": digest,
                               "threshold": threshold, "preprocess": preprocess},
        batch_size=config.batch_size,  # required with GPUs; subjects per call
        # one subject in flight per actor: a subject is minutes of work, and a deeper queue
        # lets the first actor up take several while the others start (measured: 2 subjects
        # ran one after the other on one of 2 actors)
        compute=ActorPoolStrategy(size=min(num_actors(config, gpu), len(items)),
                                  max_tasks_in_flight_per_actor=1),
        num_cpus=config.cpus_per_worker,
        num_gpus=1 if gpu else None,
    )
    done, failed, seconds = [], {}, {}
    with tqdm(total=len(items), desc=desc, unit="subject", disable=not progress) as bar:
        for row in ds.iter_rows():
            seconds[str(row["subject_id"])] = float(row["seconds"])
            if row["status"] == "done":
                done.append(str(row["subject_id"]))
            else:
                failed[str(row["subject_id"])] = str(row["error"])
            bar.update(1)
            bar.set_postfix(failed=len(failed))
    return done, failed, seconds


def run_inference(config: InferConfig, *, progress: bool = True) -> InferResult:
    """Run (or resume) inference over the cohort; see the module doc. Ray must be running."""
    t0 = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    records = model_records(config.models, config.inference)
    recipe = ensemble_recipe([exported_config(r["config"]) for r in records])
    preprocess = shared_preprocess([r["config"] for r in records])
    digest = config.scoring_digest(records)
    protocol = get_protocol(recipe.protocol)
    source = open_source(config.cohort, preprocess, config.inputs, config.mask)
    subjects = source.subjects(config.splits)
    if not subjects:
        raise InputError(config.cohort, f"no subjects of splits {list(config.splits)}",
                         "pick splits the cohort has (--splits) or check its split column")
    run = {**config.model_dump(mode="json"), "digest": digest, "adsys_version": __version__,
           "model_configs": [r["config"] for r in records],
           "recipe": recipe.model_dump(mode="json"), "score_range": recipe.map.score_range}
    write_json_atomic(out / "run.json", run)
    if config.zarr:
        import zarr

        zarr.open_group(str(out / "maps.zarr"), mode="a", zarr_format=3)
    result = InferResult(out=out, summary={})
    spec = config.threshold
    needs_val = spec.startswith("val") and "val" in config.splits
    phases = [("val", [s for s in subjects if s[1] == "val"])] if needs_val else []
    phases.append(("test", [s for s in subjects if not (needs_val and s[1] == "val")]))
    choice, note = None, ""
    for phase, members in phases:
        threshold = None
        if phase == "test":
            val_scores = [load_score(out, sid) for sid, split in subjects
                          if split == "val" and is_complete(out, sid, digest, None)]
            choice, note = choose_cohort_threshold(protocol, val_scores, spec)
            threshold = None if choice is None else choice.value
            log.info("threshold: %s", note)
        pending = [{"subject_id": sid, "split": split} for sid, split in members
                   if not is_complete(out, sid, digest, threshold)]
        waiting = {p["subject_id"] for p in pending}
        result.skipped += [sid for sid, _ in members if sid not in waiting]
        done, failed, seconds = _run_subjects(
            pending, config, digest=digest, threshold=threshold, preprocess=preprocess,
            progress=progress, desc=f"infer {phase}",
        )
        result.processed += done
        result.failed.update(failed)
        result.subject_seconds.update(seconds)
    if result.skipped:
        log.info("%d subject(s) already complete, skipped", len(result.skipped))
    write_json_atomic(out / "failed.json",
                      [{"subject_id": k, "reason": v} for k, v in sorted(result.failed.items())])
    finished = set(result.processed) | set(result.skipped)
    results = {sid: load_result(out, sid) for sid, _ in subjects if sid in finished}
    evaluated = [sid for sid, split in subjects if split != "val" and sid in finished]
    if not any(split != "val" for _, split in subjects):  # a val-only run evaluates val
        evaluated = [sid for sid, _ in subjects if sid in finished]
    summary = summarize(protocol, [load_score(out, sid) for sid in evaluated], choice, note)
    summary["run"] = {"out": str(out), "digest": digest, "splits": list(config.splits),
                      "evaluated": len(evaluated), "failed": result.failed}
    write_json_atomic(out / "summary.json", summary)
    write_metrics_csv(out / "metrics.csv", [r["row"] for r in results.values() if r["row"]])
    write_report(out, summary, [results[sid] for sid in evaluated], run)
    result.summary = summary
    result.seconds = time.perf_counter() - t0
    return result
