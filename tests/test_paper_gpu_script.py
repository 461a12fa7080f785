"""sweeps/paper_gpu.sh's bookkeeping, with a stand-in interpreter that writes finished runs instantly: every step
once, done steps skipped, the reference regenerated on a machine that lost it, the time budget, no GPU."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$*" >> "$CALLS"
if [ "$1" = -c ]; then exit "${NO_CUDA:-0}"; fi
previous=
for a in "$@"; do
  case $a in hydra.run.dir=*) dir=${a#hydra.run.dir=};; esac
  [ "$previous" = --out ] && out=$a
  previous=$a
done
if [ "$1 $2" = "-m biolab.train" ]; then
  mkdir -p "$dir"; echo "seed: 0" > "$dir/config.yaml"; echo "step" > "$dir/metrics.csv"
  echo '{"completed": true}' > "$dir/summary.json"; touch "$dir/learning_curves.png"
  case "$*" in *callbacks=trajectory*) mkdir -p "$dir/trajectory"; touch "$dir/trajectory/step_16000.safetensors";; esac
elif [ "$1" = benchmarks/throughput.py ]; then
  mkdir -p "$(dirname "$out")"; echo '{}' > "$out"
fi
sleep "${SLEEP:-0}"
"""
RUNS = ["population/N4000", "population/N64000", "paper", "patching/ref16000_start0", "patching/reference",
        "population/N256000", "patched_full"]


@pytest.fixture
def pack(tmp_path):
    """A copy of the script in an empty repository layout, and a runner with the stand-in interpreter."""
    (tmp_path / "sweeps").mkdir()
    shutil.copy(REPO / "sweeps" / "paper_gpu.sh", tmp_path / "sweeps")
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls.txt"

    def run(**env):
        calls.write_text("")
        result = subprocess.run(["bash", str(tmp_path / "sweeps" / "paper_gpu.sh")], capture_output=True, text=True,
                                env={**os.environ, "PYTHON": str(fake), "CALLS": str(calls), **env}, timeout=120)
        return result, calls.read_text().splitlines()
    return tmp_path, run


def trainings(calls):
    return [c.split("hydra.run.dir=")[1] for c in calls if c.startswith("-m biolab.train")]


def test_every_step_once_then_nothing_to_do(pack):
    root, run = pack
    result, calls = run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(trainings(calls)) == 5 + 1 + 1 + 2 + 1
    for name in RUNS:  # the three files of each run (no checkpoints); step c also keeps its figures
        figures = ["learning_curves.png"] if name == "paper" else []
        assert sorted(p.name for p in (root / "docs/paper_gpu" / name).iterdir()) == \
            sorted(["config.yaml", "metrics.csv", "summary.json", *figures]), name
    assert len(list((root / "benchmarks/results").glob("gpu_paper_*.json"))) == 2
    assert sum(c.startswith("-m biolab.analysis population") for c in calls) == 2
    result, calls = run()
    assert result.returncode == 0 and trainings(calls) == []


def test_lost_reference_is_trained_again_without_touching_step_c(pack):
    root, run = pack
    assert run(STEPS="c")[0].returncode == 0
    shutil.rmtree(root / "runs")  # a fresh machine: the weights are gone, the committed files stay
    (root / "docs/paper_gpu/paper/summary.json").write_text('{"completed": true, "kept": 1}')
    result, calls = run(STEPS="d")
    assert result.returncode == 0, result.stdout
    assert "needs the reference weights" in result.stdout
    assert trainings(calls) == ["runs/paper_gpu/paper", "runs/paper_gpu/patching/ref16000_start0"]
    assert "kept" in (root / "docs/paper_gpu/paper/summary.json").read_text()
    assert (root / "docs/paper_gpu/patching/reference/summary.json").exists()


def test_time_budget_stops_with_exit_3_and_the_next_launch_continues(pack):
    root, run = pack
    result, calls = run(BUDGET_S="48", SLEEP="4", STEPS="b")
    assert result.returncode == 3 and "time budget used" in result.stdout
    assert trainings(calls) == ["runs/paper_gpu/population/N4000"]
    result, calls = run(STEPS="b")
    assert result.returncode == 0 and trainings(calls)[0] == "runs/paper_gpu/population/N8000"


def test_without_a_gpu_it_says_so(pack):
    _, run = pack
    result, calls = run(NO_CUDA="1")
    assert result.returncode == 2 and "no CUDA GPU" in result.stdout and trainings(calls) == []
    result, calls = run(NO_CUDA="1", DRY_RUN="1")
    assert result.returncode == 0 and calls == [] and result.stdout.count("biolab.train") == 10
