"""Run a benchmark spec: train what is missing, infer each model, re-score, rank.

:func:`run_benchmark` (Ray must be initialised), all under ``spec.out``:

1. **train** — every run (an entry, or one per seed) whose export is missing: methods that
   are not ``trainable`` (the baselines) are fitted in this process
   (:func:`adsys.train.statistics.fit_statistics`), the others train as concurrent Ray Train
   runs, each from a Ray task (as many at once as the cluster has room for), in
   ``runs/<run>`` — a killed benchmark resumes each from its checkpoints. An entry whose
   ``pretrained`` or ``latents`` names another entry starts once that one is trained (with
   ``latents``, on the latent shard set its export writes once: ``latents/<entry>-pad<m>``).
   A run that fails is reported and its row left out; the others go on.
2. **infer** — every trained run through the batch-inference job into ``infer/<run>``, under
   the spec's first protocol, splits and threshold (subjects already complete are skipped).
3. **re-score** — the saved maps of every run under each further protocol
   (:func:`adsys.infer.evaluate.evaluate_maps`, ``infer/<run>/eval-<protocol>``), skipped when
   that evaluation exists for the same maps, threshold and splits.
4. **rank** — :func:`adsys.benchmark.leaderboard.write_leaderboard`.

An entry may bring its own model (``model``: an export or ensemble folder; nothing trained)
or its own inference output (``maps``; nothing inferred). Re-running a finished benchmark
trains, infers and re-scores nothing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adsys.benchmark.spec import BenchmarkSpec, MethodEntry
from adsys.config import deep_merge
from adsys.errors import InputError
from adsys.methods import method_class
from adsys.methods.export import CONFIG, ENSEMBLE, read_record

log = logging.getLogger(__name__)

__all__ = ["BenchmarkResult", "Run", "maps_record", "plan_runs", "run_benchmark"]


def maps_record(maps: Path) -> dict[str, Any]:
    """The ``run.json`` of an inference output folder (its models, recipe, digest)."""
    file = Path(maps) / "run.json"
    if not file.is_file():
        raise InputError(maps, "not an inference output folder (run.json missing)",
                         "point the entry's maps at an `adsys infer --out` folder")
    return json.loads(file.read_text(encoding="utf-8"))


@dataclass
class Run:
    """One trained model of the benchmark: an entry (one of its seeds)."""

    entry: MethodEntry
    name: str
    out: Path
    config: Any = None  # TrainConfig, when the benchmark trains it
    folds: list[int] | None = None

    @property
    def model(self) -> Path:
        """The export folder (or the ensemble folder of a run with folds)."""
        if self.entry.model is not None:
            return self.entry.model
        run_dir = self.config.run_dir
        return run_dir if self.folds is not None else run_dir / "export"

    @property
    def exports(self) -> list[Path]:
        """The export folders of its model(s): an ensemble's members; for an entry's own
        inference output, the models it was made with."""
        from adsys.methods.export import expand_models

        if self.entry.maps is not None:
            run = maps_record(self.entry.maps)
            return [Path(p) for p in run["models"]]
        return expand_models([self.model])

    @property
    def maps(self) -> Path:
        """The inference output folder of this run."""
        return self.entry.maps if self.entry.maps is not None else self.out / "infer" / self.name

    @property
    def trained(self) -> bool:
        if self.config is None:
            return True
        if self.folds is None:
            return (self.model / CONFIG).is_file()
        return (self.model / ENSEMBLE).is_file() and all(
            (self.model / f"fold-{k}" / "export" / CONFIG).is_file() for k in self.folds)

    @property
    def trainable(self) -> bool:
        return method_class(self.method).trainable

    @property
    def method(self) -> str:
        if self.entry.method is not None:
            return self.entry.method
        if self.entry.maps is not None:  # as recorded, wherever its models are now
            run = maps_record(self.entry.maps)
            return run["model_configs"][0]["method"]
        return read_record(self.exports[0])["method"]


@dataclass
class BenchmarkResult:
    """What one call did: ``trained`` runs (fitted included), ``inferred`` run → subjects
    computed, ``rescored`` ``run/protocol`` evaluations, ``failed`` run → reason."""

    out: Path
    trained: list[str] = field(default_factory=list)
    inferred: dict[str, int] = field(default_factory=dict)
    rescored: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    leaderboard: Any = None
    seconds: float = 0.0

    @property
    def did_work(self) -> bool:
        return bool(self.trained or any(self.inferred.values()) or self.rescored)


def plan_runs(spec: BenchmarkSpec) -> list[Run]:
    """Every run of the spec with its resolved training config (validated now: a wrong key
    fails before anything starts, naming the entry)."""
    from adsys.train.config import resolve_config
    from adsys.train.folds import parse_folds

    runs = []
    for entry in spec.methods:
        if entry.model is not None or entry.maps is not None:
            runs.append(Run(entry, entry.label, spec.out))
            continue
        for name, seed in entry.runs:
            pretrained = {key: str(spec.out / "runs" / source / "export")
                          for key, source in entry.pretrained.items()}
            overrides = deep_merge(
                spec.train, entry.config,
                {"method": entry.method, "storage_path": str(spec.out / "runs"), "name": name,
                 "method_config": pretrained},
                {"seed": seed} if seed is not None else None,
                {"shards": str(_latents_dir(spec, entry))} if entry.latents else None,
            )
            overrides.setdefault("shards", str(spec.shards))
            try:
                cfg = resolve_config(entry.preset or spec.preset, None, overrides)
            except InputError as exc:
                raise InputError(None, f"benchmark entry {entry.label!r}: {exc.problem}",
                                 exc.fix) from None
            folds = parse_folds(entry.folds, entry.method) if entry.folds else None
            runs.append(Run(entry, name, spec.out, cfg, folds))
    return runs


def _latents_dir(spec: BenchmarkSpec, entry: MethodEntry) -> Path:
    return spec.out / "latents" / f"{entry.latents.source}-pad{entry.latents.pad_multiple}"


def _encode(spec: BenchmarkSpec, run: Run) -> None:
    """Write (or find written) the latent shard set a run trains on."""
    from adsys.shards.latents import encode_shard_set

    latents = run.entry.latents
    encode_shard_set(spec.shards, spec.out / "runs" / latents.source / "export",
                     _latents_dir(spec, run.entry), pad_multiple=latents.pad_multiple,
                     progress=False)


def _train_task(cfg_json: dict[str, Any], folds: list[int] | None) -> str | None:
    """One run's training in a Ray task: ``None`` when finished, else why it failed."""
    from adsys.train.config import TrainConfig
    from adsys.train.folds import run_folds, train_in_task

    if folds is None:
        return train_in_task(cfg_json)
    try:
        outcome = run_folds(TrainConfig.model_validate(cfg_json), folds)
    except Exception as exc:  # reported with the run, the others go on
        return f"{type(exc).__name__}: {exc}"
    failed = {k: why for k, why in outcome.items() if why is not None}
    return f"folds failed: {failed}" if failed else None


def _train(spec: BenchmarkSpec, runs: list[Run], result: BenchmarkResult) -> None:
    """Train (or fit) every run that is not trained yet; a run whose entry needs another
    (``pretrained``, ``latents``) starts as soon as that one is trained."""
    import ray

    from adsys.train.job import torch_extensions_dir
    from adsys.train.statistics import fit_statistics

    # a run queued behind the others waits for room quietly (Ray Train's default: a
    # worker-group startup error and a retry every 60 s)
    wait = os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "86400")
    env = {"TORCH_EXTENSIONS_DIR": torch_extensions_dir(),
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": wait}
    task = ray.remote(num_cpus=0, max_retries=0)(_train_task).options(
        runtime_env={"env_vars": env})
    by_entry: dict[str, list[Run]] = {}
    for r in runs:
        by_entry.setdefault(r.entry.label, []).append(r)
    pending = [r for r in runs if not r.trained]
    running: dict[Any, Run] = {}

    def start_ready() -> None:
        for r in list(pending):
            needed = [x for s in r.entry.needs for x in by_entry[s]]
            if any(x.name in result.failed for x in needed):
                pending.remove(r)
                result.failed[r.name] = "a run it needs failed"
            elif all(x.trained for x in needed):
                pending.remove(r)
                try:
                    if not r.trainable:
                        fit_statistics(r.config)
                        result.trained.append(r.name)
                        continue
                    if r.entry.latents:
                        _encode(spec, r)
                except Exception as exc:  # reported with the run, the others go on
                    result.failed[r.name] = f"{type(exc).__name__}: {exc}"
                    continue
                log.info("training %s (%s) in %s", r.name, r.method, r.config.run_dir)
                running[task.remote(r.config.model_dump(mode="json"), r.folds)] = r

    start_ready()
    while running:
        (ref,), _ = ray.wait(list(running), num_returns=1)
        r = running.pop(ref)
        try:
            why = ray.get(ref)
        except Exception as exc:  # the task itself died
            why = f"{type(exc).__name__}: {exc}"
        if why is None and r.trained:
            result.trained.append(r.name)
        else:
            result.failed[r.name] = why or "no export was written"
        start_ready()


def _infer(spec: BenchmarkSpec, run: Run, result: BenchmarkResult) -> None:
    from adsys.infer.config import InferConfig
    from adsys.infer.job import run_inference

    if run.entry.maps is not None:
        _check_maps(spec, run)
        return
    overrides = deep_merge(run.entry.inference, {"protocol": spec.protocols[0]})
    config = InferConfig.model_validate(deep_merge(
        spec.infer, {"models": [str(run.model)], "cohort": str(spec.shards),
                     "out": str(run.maps), "splits": list(spec.splits),
                     "threshold": spec.threshold, "inference": overrides}))  # fmt: skip
    done = run_inference(config, progress=False)
    result.inferred[run.name] = len(done.processed)
    if done.failed:
        log.warning("%s: %d subject(s) failed: %s", run.name, len(done.failed), done.failed)


def _check_maps(spec: BenchmarkSpec, run: Run) -> None:
    """An entry's own inference output must have been made as the benchmark's would be."""
    used = maps_record(run.maps)
    want = {"splits": list(spec.splits), "threshold": spec.threshold,
            "protocol": spec.protocols[0]}
    have = {"splits": used["splits"], "threshold": used["threshold"],
            "protocol": used["recipe"]["protocol"]}
    if have != want:
        raise InputError(run.maps, f"entry {run.name!r} was inferred with {have}, the benchmark "
                         f"asks for {want}", "infer it again with those settings or drop maps")


def _rescore(spec: BenchmarkSpec, run: Run, result: BenchmarkResult) -> None:
    from adsys.infer.evaluate import evaluate_maps

    digest = maps_record(run.maps)["digest"]
    splits = spec.scored_splits
    for protocol in spec.protocols[1:]:
        target = run.maps / f"eval-{protocol}"
        key = {"maps_digest": digest, "splits": list(splits), "threshold": spec.threshold}
        try:
            done = json.loads((target / "summary.json").read_text(encoding="utf-8"))["run"]
            if all(done.get(k) == v for k, v in key.items()):
                continue
        except (OSError, KeyError, json.JSONDecodeError):
            pass
        evaluate_maps(run.maps, spec.manifest, protocol, splits=splits,
                      threshold=spec.threshold, out=target, progress=False)
        result.rescored.append(f"{run.name}/{protocol}")


def run_benchmark(spec: BenchmarkSpec) -> BenchmarkResult:
    """Run (or resume, or just re-rank) the benchmark; see the module doc."""
    from adsys.benchmark.leaderboard import write_leaderboard

    t0 = time.perf_counter()
    spec.out.mkdir(parents=True, exist_ok=True)
    runs = plan_runs(spec)
    spec = resolve_protocols(spec, runs)
    (spec.out / "spec.json").write_text(spec.model_dump_json(indent=2), encoding="utf-8")
    result = BenchmarkResult(out=spec.out)
    _train(spec, runs, result)
    finished = [r for r in runs if r.name not in result.failed]
    for run in finished:
        _infer(spec, run, result)
        _rescore(spec, run, result)
    result.leaderboard = write_leaderboard(spec, finished, failed=result.failed)
    result.seconds = time.perf_counter() - t0
    return result


def resolve_protocols(spec: BenchmarkSpec, runs: list[Run]) -> BenchmarkSpec:
    """``protocols`` left empty: the own protocol of the first trained method's recipe
    (the first entry's when all are baselines)."""
    if spec.protocols:
        return spec
    from adsys.methods import method_config

    first = next((r for r in runs if r.trainable), runs[0])
    if first.entry.maps is not None:
        run = maps_record(first.maps)
        protocol = run["recipe"]["protocol"]
    elif first.config is None:
        protocol = read_record(first.exports[0])["config"]["inference"]["protocol"]
    else:
        protocol = method_config(first.method, first.config.method_config).inference.protocol
    return spec.model_copy(update={"protocols": [protocol]})
