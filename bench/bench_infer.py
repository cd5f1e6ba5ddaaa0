"""Batch-inference overhead: the Ray Data inference job vs the model's ``restore`` alone.

Set-up (not timed): a demo cohort of ``--val`` healthy and ``--test`` lesioned subjects built
with ``shards/demo.yaml`` (2 mm, 96×112×96; one fluid variant per subject, which inference
does not read), and an export of the default method at the ``demo`` preset (what ``make
demo`` trains), with random weights (a restore costs the same whatever the weights).

Measured, round-robin, ``--repeats`` times, as subjects/s:

* **job**: :func:`adsys.infer.job.run_inference`, what ``ray_jobs/infer.py --model M
  --cohort C --out O`` runs, with the defaults (``adsys.infer.config.InferConfig``: splits val
  + test, threshold ``val`` so the val subjects run first, NIfTI maps on both grids, overlays,
  report; one actor per CPU with one thread each) into a fresh folder each time. Ray is
  started once before (``ray.init``, timed apart: a one-off per job).
* **reference**: the same exported model's ``restore`` alone on the same volumes (loaded
  beforehand) as a batch of axial slices with the recipe's t values and seeds — the model's
  work alone, no tiling, scoring, writing or Ray — two ways: in this one process with all
  CPUs as torch threads (a user's loop), and in as many processes at once as the job has
  actors, each with the actors' threads and its round-robin share of the volumes (the job's
  parallelism without Ray; on a machine whose cores share caches or hyper-threads, two
  1-thread processes at once are slower than one alone, so this is the fair one).

Overhead = the faster reference's rate / the job's rate − 1 (goal <= 10 %), best vs best.
On a few subjects that is dominated by what a run pays once per phase (Ray Data and actor
start-up, each actor loading the models; ``threshold: val`` runs the val subjects in a phase
of their own), so the bench also splits the job's wall time into **per subject** (each
subject's seconds in its actor — load, model, scoring, writing — over the actors) and
**fixed** (the rest), gives the per-subject overhead against ``restore`` alone with the
actors' threads, and projects both to a 1000-subject cohort. The job's own ``result.json``
split (model / scoring seconds per subject) says where the per-subject part goes.

    python bench/bench_infer.py [--val 2] [--test 2] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
import torch.multiprocessing as mp
from common import demo_shards, machine_line, start_ray

from adsys.infer.config import InferConfig
from adsys.infer.job import num_actors, run_inference
from adsys.infer.sources import open_source
from adsys.methods import build_method
from adsys.methods.export import export_model, load_exported
from adsys.scoring import volume_to_slices
from adsys.seeding import generator
from adsys.train.config import resolve_config
from adsys.train.data import shard_preprocess_config


def export_demo_model(shards: Path, out: Path) -> Path:
    """The default method at the ``demo`` preset, exported as training exports it (random
    weights, the shards' preprocessing recorded)."""
    cfg = resolve_config("demo", None, {"shards": shards})
    torch.manual_seed(cfg.seed)
    method = build_method(cfg.method, cfg.method_spec())
    return export_model(out, cfg.method, method.config, method.state_dict(),
                        extra={"preprocess": shard_preprocess_config(cfg)})


@torch.no_grad()
def reference(model_dir: Path, volumes: dict[str, torch.Tensor], seed: int, threads: int) -> float:
    """Seconds of ``restore`` alone on every volume with ``threads`` torch threads (its axial
    slices in one call, member 0's noise seeds as the job draws them)."""
    method, _ = load_exported(model_dir)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    for sid, vol in volumes.items():
        method.restore(volume_to_slices(vol), generator("member", seed, sid, 0))
    seconds = time.perf_counter() - start
    torch.set_num_threads(before)
    return seconds


def _reference_process(rank: int, model_dir: Path, shares: list, seed: int, threads: int,
                       barrier: Any, out: Any) -> None:
    barrier.wait()  # all processes start restoring together, as the actors run
    out.put(reference(model_dir, shares[rank], seed, threads))


def concurrent_reference(model_dir: Path, volumes: dict[str, torch.Tensor], seed: int,
                         threads: int, processes: int) -> float:
    """Wall seconds of ``processes`` processes at once, each restoring its share of the
    volumes (round-robin, as the actors take them) with ``threads`` threads: the job's
    parallelism without Ray, loading or writing."""
    items = list(volumes.items())
    shares = [dict(items[r::processes]) for r in range(processes)]
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(processes), ctx.SimpleQueue()
    mp.spawn(_reference_process, args=(model_dir, shares, seed, threads, barrier, out),
             nprocs=processes)
    return max(out.get() for _ in range(processes))


def job(config: InferConfig) -> tuple[float, list[dict[str, float]], list[float]]:
    """(seconds of the whole run, each subject's ``result.json`` timing split, each
    subject's seconds in its actor)."""
    start = time.perf_counter()
    result = run_inference(config, progress=False)
    seconds = time.perf_counter() - start
    if result.failed:
        raise RuntimeError(f"subjects failed: {result.failed}")
    split = [json.loads((config.out / "subjects" / sid / "result.json").read_text())["seconds"]
             for sid in result.processed]
    return seconds, split, list(result.subject_seconds.values())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--val", type=int, default=2, help="healthy val subjects")
    p.add_argument("--test", type=int, default=2, help="test subjects with lesions")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    header = machine_line()
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        tmp = Path(tmp)
        ray_start = start_ray()
        one = {"count": 1, "generator": "fluid"}
        shards = demo_shards(tmp, "demo", n_train=0, n_val=args.val, n_test=args.test,
                             overrides={"variants": {"val": one, "test": one}})
        model_dir = export_demo_model(shards, tmp / "model")
        config = InferConfig(models=[model_dir], cohort=shards, out=tmp / "out")
        source = open_source(shards, None)
        subjects = source.subjects(config.splits)
        volumes = {sid: torch.from_numpy(source.load(sid).image) for sid, _ in subjects}
        actors = num_actors(config, gpu=False)
        threads = {"all": torch.get_num_threads(), "actor": config.cpus_per_worker}
        ref_s: dict[str, list[float]] = {k: [] for k in threads}
        job_s, splits, actor_s = [], [], []
        for i in range(args.repeats):
            ref_s["all"].append(reference(model_dir, volumes, config.seed, threads["all"]))
            ref_s["actor"].append(concurrent_reference(model_dir, volumes, config.seed,
                                                       threads["actor"], actors))
            seconds, split, in_actor = job(config.model_copy(update={"out": tmp / f"out-{i}"}))
            job_s.append(seconds)
            splits.append(split)
            actor_s.append(in_actor)
        ray.shutdown()
    n = len(subjects)
    print(f"# bench_infer: default method at the demo preset, {n} subjects "
          f"({args.val} val + {args.test} test) of 96x112x96, InferConfig defaults "
          f"(threshold {config.threshold}, splits {'+'.join(config.splits)}, {actors} actors x "
          f"{config.cpus_per_worker} thread, batch {config.batch_size}, native maps, overlays), "
          f"best of {args.repeats} round-robin")
    print(f"# at start: {header}")
    print(f"# at end:   {machine_line()}")
    rates = {"all": n / min(ref_s["all"]), "actor": n / min(ref_s["actor"])}
    run = n / min(job_s)
    print(f"restore alone, {threads['all']} threads:            {rates['all']:.4f} subjects/s   "
          f"(runs: {', '.join(f'{s:.1f}' for s in ref_s['all'])} s)")
    print(f"restore alone, {actors} processes x {threads['actor']} thread at once: "
          f"{rates['actor']:.4f} subjects/s   (runs: "
          f"{', '.join(f'{s:.1f}' for s in ref_s['actor'])} s)")
    print(f"inference job (run_inference):   {run:.4f} subjects/s   (runs: "
          f"{', '.join(f'{s:.1f}' for s in job_s)} s; ray.init {ray_start:.1f} s once, apart)")
    best = splits[job_s.index(min(job_s))]
    model = statistics.fmean(s["model"] for s in best)
    scoring = statistics.fmean(s["scoring"] for s in best)
    print(f"job, per subject: model {model:.1f} s + scoring {scoring:.1f} s in its actor "
          f"(result.json), {min(job_s) * actors / n:.1f} actor-seconds in all; restore alone "
          f"{min(ref_s['actor']) * actors / n:.1f} s per subject in {actors} processes at once")
    ref = max(rates.values())
    print(f"overhead of the inference job vs restore alone (the faster reference), end to end "
          f"on {n} subjects: {100 * (ref / run - 1):+.1f} % best vs best (goal <= 10 %)")
    two = str(config.threshold).startswith("val") and "val" in config.splits
    phases = "val, then the others" if two else "one"
    best_i = job_s.index(min(job_s))
    per_subject = statistics.fmean(actor_s[best_i])  # actor-seconds per subject
    fixed = min(job_s) - sum(actor_s[best_i]) / actors  # paid once per run
    ref_subject = min(ref_s["actor"]) * actors / n  # process-seconds per subject, same setup
    print(f"job split: {per_subject:.1f} actor-s per subject (load + model + scoring + "
          f"writing) + {fixed:.1f} s fixed per run (Ray Data and actor start-up, model "
          f"loading, once per phase: {phases})")
    print(f"per-subject overhead vs restore alone ({actors} processes x {threads['actor']} "
          f"thread at once): "
          f"{100 * (per_subject / ref_subject - 1):+.1f} % (goal <= 10 %)")
    cohort = 1000
    job_wall = fixed + cohort * per_subject / actors
    print(f"projected for {cohort} subjects on {actors} actors, end to end: "
          f"{100 * (job_wall / (cohort * ref_subject / actors) - 1):+.1f} % vs the "
          f"processes at once, {100 * (job_wall * ref / cohort - 1):+.1f} % vs the faster "
          f"reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
