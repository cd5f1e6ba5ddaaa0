"""Ray Train + DeepSpeed on real Ray: fault tolerance, exact resume after a killed worker or
a killed driver, ZeRO-1, job submit, and a two-node cluster (`ray start` head + raylet)."""

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adsys.cli import main
from adsys.io.manifest import load_manifest, write_manifest
from adsys.methods.export import load_exported
from adsys.shards.store import CohortStore
from adsys.train.config import resolve_config
from adsys.train.job import run_training
from tests.helpers import job_env, kill_session, sigkill_when

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _records(run_dir: Path) -> list[dict]:
    """metrics.jsonl's records, in order (a step redone after a resume appears twice)."""
    return [json.loads(x) for x in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]


def _steps(run_dir: Path) -> list[int]:
    return [rec["step"] for rec in _records(run_dir)]


def _losses(run_dir: Path) -> dict[int, float]:
    """step -> loss from metrics.jsonl; a step logged twice (before a crash and after the
    restart) must have logged the same loss both times."""
    out: dict[int, float] = {}
    for rec in _records(run_dir):
        assert out.setdefault(rec["step"], rec["loss"]) == rec["loss"], rec
    return out


def _run(shards, tmp_path, name, fault_step=None, **overrides):
    cfg = resolve_config(
        "smoke", None,
        {"shards": shards, "storage_path": tmp_path / "runs", "name": name, **overrides},
    )
    result = run_training(cfg, fault_step=fault_step)
    assert result.error is None, result.error
    return tmp_path / "runs" / name


@pytest.fixture(scope="module")
def uninterrupted(smoke_shards, tmp_path_factory) -> Path:
    """The reference run: the smoke preset's 6 steps, checkpoints at 3 and 6, no fault."""
    return _run(smoke_shards, tmp_path_factory.mktemp("ref"), "ref", max_steps=6,
                checkpoint_every=3)


def test_killed_worker_is_restarted_and_resume_reproduces_losses_exactly(
    smoke_shards, uninterrupted, tmp_path
):
    ref = uninterrupted
    # the worker process dies (os._exit) after step 4; the last checkpoint is at step 3.
    # export: best_val keeps the EMA of the lowest val loss (steps 3, 6) across the restart
    hit = _run(smoke_shards, tmp_path, "hit", fault_step=4, max_steps=6, checkpoint_every=3,
               max_failures=1, export="best_val")
    assert (hit / ".fault-injected-4").exists()
    assert _steps(hit) == [1, 2, 3, 4, 4, 5, 6]  # restarted from the step-3 checkpoint
    assert _losses(hit) == _losses(ref)  # the same losses after the resume, bit for bit
    # the exported EMA model loads without DeepSpeed and restores a volume's slices
    method, meta = load_exported(hit / "export")
    assert meta["steps"] == 6 and meta["preprocess"]["spacing"] == 4.0
    vals = {r["step"]: r["val_loss"] for r in _records(hit) if "val_loss" in r}
    best = min(vals, key=vals.get)
    assert meta["exported_step"] == best
    kept = load_file(str(hit / f"checkpoint_{best:08d}" / "ema.safetensors"))
    exported = load_file(str(hit / "export" / "model.safetensors"))
    assert all(torch.equal(kept[k], exported[k]) for k in kept)
    x = torch.rand(5, 1, 44, 52)
    rec = method.restore(x, torch.Generator().manual_seed(0))
    assert rec.shape == x.shape and torch.isfinite(rec).all()


def _committed_checkpoint(run_dir: Path) -> str | None:
    """The newest checkpoint Ray Train has committed for the run (the one a resume starts
    from), read from its checkpoint manager's snapshot."""
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, json.JSONDecodeError):  # not written yet, or being written
        return None
    return (snapshot.get("latest_checkpoint_result") or {}).get("checkpoint_dir_name")


def test_killed_driver_rerun_resumes_exactly_and_refuses_another_model(
    smoke_shards, uninterrupted, tmp_path, capsys
):
    runs = tmp_path / "runs"
    run = runs / "killed"
    args = ["--preset", "smoke", "--shards", str(smoke_shards), "--storage-path", str(runs),
            "--name", "killed", "--checkpoint-every", "3"]
    # a long run: the driver, the local Ray it started and its workers are SIGKILLed mid-run,
    # right after the step-3 checkpoint is committed
    train = [sys.executable, str(REPO / "ray_jobs" / "train.py"), *args, "--max-steps", "1000"]
    sigkill_when(train, job_env(), lambda: _committed_checkpoint(run) is not None,
                 "the first committed checkpoint")
    assert _committed_checkpoint(run) == "checkpoint_00000003"
    killed = _steps(run)
    assert killed[:3] == [1, 2, 3] and not (run / "export").exists()
    kept = sorted(run.glob("checkpoint_0*"))
    # re-running it with another method or model config is refused before Ray starts
    for change, named in (
        (["--method", "ddpm"], "method: 'cddpm' -> 'ddpm'"),
        (["--set", "method_config.unet.model_channels=16"],
         "method_config.unet.model_channels: 32 -> 16"),
    ):
        assert main(["train", *args, *change]) == 2
        err = capsys.readouterr().err
        assert named in err and "new --name" in err, err
    assert sorted(run.glob("checkpoint_0*")) == kept and _steps(run) == killed
    # the same command (max_steps may change) resumes at step 4, with the uninterrupted losses
    assert main(["train", *args, "--max-steps", "6"]) == 0
    assert _steps(run) == [*killed, 4, 5, 6]
    assert {k: v for k, v in _losses(run).items() if k <= 6} == _losses(uninterrupted)
    assert load_exported(run / "export")[1]["steps"] == 6


def test_two_workers_zero1_cddpm_loss_falls(smoke_shards, tmp_path):
    run = _run(smoke_shards, tmp_path, "zero1", num_workers=2, zero_stage=1, max_steps=30,
               lr=2e-3, batch_size=8, checkpoint_every=30, val_every=30,
               method_config={"data": {"min_brain_fraction": 0.1}})
    losses = list(_losses(run).values())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, losses
    ckpt = sorted(run.glob("checkpoint_0*"))[-1]
    # both ranks' ZeRO-1 optimizer shards are in the merged checkpoint
    assert len(list(ckpt.rglob("zero_pp_rank_*_optim_states.pt"))) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Cluster:
    url: str  # the dashboard: job server and state API
    address: str  # the GCS: for `ray start --address`, RAY_ADDRESS, build_shards --address


def _ray_start(args: list[str], env: dict, temps: list[str]) -> subprocess.Popen:
    """`ray start --block ARGS` on loopback, in its own session and temp folder (added
    to ``temps``), with its own agent ports: another Ray on this machine holds the defaults."""
    temps.append(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # unix sockets need short paths
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--block", *args,
         "--node-ip-address=127.0.0.1", f"--dashboard-agent-listen-port={_free_port()}",
         f"--dashboard-agent-grpc-port={_free_port()}",
         f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}",
         f"--temp-dir={temps[-1]}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )


@contextlib.contextmanager
def ray_cluster(env: dict, nodes: tuple[dict[str, float], ...] = ({"CPU": 2},)
                ) -> Iterator[Cluster]:
    """A real Ray cluster on loopback, one node per entry of ``nodes`` (its resources: CPU
    and any custom ones): `ray start --head` with the job server, then a `ray start
    --address` raylet for each further node (``env`` must then hold
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1, or Ray refuses it). Stopped by SIGKILLing each
    node's session, which holds all its Ray processes: never `ray stop`, which would stop
    every Ray on the machine, nor SIGTERM, on which a node drains for 30 s first."""
    from ray.util.state import list_nodes

    def flags(resources: dict[str, float]) -> list[str]:
        custom = {k: v for k, v in resources.items() if k != "CPU"}
        return [f"--num-cpus={int(resources['CPU'])}", f"--resources={json.dumps(custom)}"]

    dash, port = _free_port(), _free_port()
    cluster = Cluster(f"http://127.0.0.1:{dash}", f"127.0.0.1:{port}")
    temps: list[str] = []
    procs = [_ray_start(["--head", f"--port={port}", "--include-dashboard=true",
                         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                         *flags(nodes[0])], env, temps)]
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{cluster.url}/api/version", timeout=2).read()
                break
            except OSError:
                assert procs[0].poll() is None, "ray start --head exited early"
                assert time.monotonic() < deadline, "the Ray job server did not come up"
                time.sleep(1)
        procs += [_ray_start([f"--address={cluster.address}", *flags(resources)], env, temps)
                  for resources in nodes[1:]]
        while len(list_nodes(cluster.url, filters=[("state", "=", "ALIVE")])) < len(nodes):
            assert all(p.poll() is None for p in procs), "a `ray start` exited early"
            assert time.monotonic() < deadline, "not every node joined the cluster"
            time.sleep(1)
        yield cluster
    finally:
        for proc in procs:
            kill_session(proc)
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_trains_the_demo_preset_of_ddpm(smoke_shards, tmp_path):
    env = job_env(RAY_AUTH_MODE="disabled")
    with ray_cluster(env) as cluster:
        for _ in range(30):  # the job agent starts a little after the dashboard answers
            r = subprocess.run(
                [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address",
                 cluster.url, "--", sys.executable, str(REPO / "ray_jobs" / "train.py"),
                 "--preset", "demo", "--method", "ddpm", "--shards", str(smoke_shards),
                 "--storage-path", str(tmp_path / "runs"), "--name", "submitted",
                 "--max-steps", "2",
                 "--zero-stage", "0"],  # 1 rank, ZeRO 0: the loop skips DeepSpeed's all-reduce
                env=env, capture_output=True, text=True, timeout=600,
            )
            if "No available agent" not in r.stderr:
                break
            time.sleep(2)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in r.stdout
    export = tmp_path / "runs" / "submitted" / "export"
    assert f"model:       {export}" in r.stdout
    method, record = load_exported(export)  # the demo preset of ddpm, not of cddpm
    assert record["method"] == "ddpm" and record["steps"] == 2
    assert record["config"]["unet"]["channel_mult"] == [1, 2, 2]
    assert record["config"]["data"]["min_brain_fraction"] == 0.05
    # the exported model restores a real preprocessed volume of the cohort it trained on,
    # as its axial slices (z, 1, x, y)
    store = CohortStore(smoke_shards)
    volume = torch.from_numpy(store[store.subjects("val")[0]].image.astype("float32"))
    slices = volume.permute(2, 0, 1)[:, None].contiguous()
    rec = method.restore(slices, torch.Generator().manual_seed(0))
    assert rec.shape == slices.shape == (44, 1, 44, 52)
    assert torch.isfinite(rec).all() and rec.min() >= 0 and rec.max() <= 1
    assert not torch.equal(rec, slices)  # reconstructed from noised input, not passed through
    torch.testing.assert_close(method.restore(slices, torch.Generator().manual_seed(0)), rec)


def test_two_node_cluster_builds_shards_and_trains_one_rank_per_node(smoke_cohort, tmp_path):
    """Nothing may rely on one process tree or one node's temp folder: on a two-node cluster
    (a head and a second raylet, each with its own temp folder), the shard build's tasks run
    on both nodes and a 2-rank ZeRO-1 training, spread by ``placement_strategy``, puts one
    rank on each node (with PACK both would fit on the second node)."""
    from ray.util.state import list_actors, list_nodes, list_tasks

    subjects = load_manifest(smoke_cohort)  # 2 train + 1 val subjects: the smallest cohort
    manifest = write_manifest(tmp_path / "cohort.csv",
                              subjects.split("train")[:2] + subjects.split("val")[:1])
    shards, runs = tmp_path / "shards", tmp_path / "runs"
    env = job_env(RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="1")
    nodes = ({"CPU": 1, "head_node": 1}, {"CPU": 2, "second_node": 1})
    with ray_cluster(env, nodes) as cluster:
        jobs = {
            "build": [REPO / "ray_jobs" / "build_shards.py", REPO / "shards" / "smoke.yaml",
                      "--address", cluster.address, "--manifest", manifest, "--out", shards],
            "train": [REPO / "ray_jobs" / "train.py", "--preset", "smoke", "--shards", shards,
                      "--storage-path", runs, "--name", "two-nodes", "--num-workers", "2",
                      "--zero-stage", "1", "--max-steps", "2",
                      "--set", "placement_strategy=STRICT_SPREAD"],
        }
        for job, args in jobs.items():
            r = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                               env={**env, "RAY_ADDRESS": cluster.address}, timeout=600)
            assert r.returncode == 0, f"{job}: " + r.stdout[-3000:] + r.stderr[-3000:]
        name = {n.node_id: ("head_node" if "head_node" in n.resources_total else "second_node")
                for n in list_nodes(cluster.url, detail=True)}
        tasks = list_tasks(cluster.url, filters=[("func_or_class_name", "=", "build_subject")])
        ranks = list_actors(cluster.url, filters=[("class_name", "=", "RayTrainWorker")])
    assert len(tasks) == 3 and {name[t.node_id] for t in tasks} == {"head_node", "second_node"}
    assert sorted(name[a.node_id] for a in ranks) == ["head_node", "second_node"]
    run = runs / "two-nodes"
    assert _steps(run) == [1, 2]
    # both nodes' ZeRO-1 optimizer shards were merged into the one checkpoint
    assert len(list((run / "checkpoint_00000002").rglob("zero_pp_rank_*_optim_states.pt"))) == 2
    assert load_exported(run / "export")[1]["steps"] == 2
