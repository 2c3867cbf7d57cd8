"""`RunLayout`: the one place that names the files of a `compress` output folder.

runs/resnet20-amc/              a run; with --stages, stage-1/, stage-2/, ... hold each stage's search
  config.json                   the resolved settings, checked on --resume
  table_check.json              what checking the latency table against the target found, kept on --resume
  search.csv                    one row per episode: reward, accuracy, predicted latency, kept channels
  search_state.pt               the strategy's state every few episodes, for --resume
  features.pt                   sampled feature statistics for least-squares reconstruction
  best_policy.json              the chosen pruning policy
  pruned.pt, finetuned.pt       checkpoints (and their .resume files while training)
  <arch>-pruned.tflite          the exported model, with <arch>-pruned.json and .labels.txt beside it
  exported.json                 what this search's export wrote, with the file's digest, read back on --resume
  measured.json                 the exported and the unpruned model's timings on the target, replayed on --resume
  <arch>-unpruned.tflite        the unpruned model in the same format and precision, timed for the speed-up
  report.md, *.png              the report and its plots
  attempt-2/, ...               later searches of --enforce-measured, laid out the same way
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def table_check(self) -> Path:
        return self.root / "table_check.json"

    @property
    def search_log(self) -> Path:
        return self.root / "search.csv"

    @property
    def search_state(self) -> Path:
        return self.root / "search_state.pt"

    @property
    def features(self) -> Path:
        return self.root / "features.pt"

    @property
    def best_policy(self) -> Path:
        return self.root / "best_policy.json"

    @property
    def pruned(self) -> Path:
        return self.root / "pruned.pt"

    @property
    def finetuned(self) -> Path:
        return self.root / "finetuned.pt"

    @property
    def exported(self) -> Path:
        return self.root / "exported.json"

    @property
    def measured(self) -> Path:
        return self.root / "measured.json"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    def plot(self, name: str) -> Path:
        return self.root / f"{name}.png"

    def model_file(self, arch: str, model_format: str, pruned: bool = True) -> Path:
        return self.root / f"{arch.replace(':', '_')}-{'pruned' if pruned else 'unpruned'}.{model_format}"

    def stage(self, index: int, stages: int) -> RunLayout:
        """Stage `index` (0-based) of `stages`: the run folder itself when there is only one."""
        return self if stages == 1 else RunLayout(self.root / f"stage-{index + 1}")

    def attempt(self, number: int) -> RunLayout:
        """Search attempt `number` (1-based) of --enforce-measured: the run folder itself for the first."""
        return self if number == 1 else RunLayout(self.root / f"attempt-{number}")


def resume_file(checkpoint: Path) -> Path:
    """Where training towards `checkpoint` keeps its per-epoch resume point."""
    return checkpoint.with_name(f".{checkpoint.name}.resume")
