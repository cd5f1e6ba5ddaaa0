"""Rank 0's training metrics log: ``metrics.jsonl`` plus TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["MetricsLog"]


class MetricsLog:
    """One JSON line per logged step (``{"step": s, **metrics}``) and the same scalars in
    TensorBoard, under ``folder``; appends, so a resumed run continues the same files."""

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(folder / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        self.tb = SummaryWriter(str(folder / "tensorboard"))

    def write(self, step: int, metrics: dict[str, float]) -> None:
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.jsonl.close()
        self.tb.close()
