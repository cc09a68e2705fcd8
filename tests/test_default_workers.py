"""The loader's default never makes a run slower than decoding in the scoring process
(issue 22: one worker on 2 cores was 29 % slower than workers=0, 13.9 vs 19.5 images/s)."""

import os

import pytest
import torch

from gaia_viz import settings


@pytest.fixture
def machine(monkeypatch):
    def set_up(cores: int, torch_threads: int, gpu: bool):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: cores)
        monkeypatch.setattr(torch, "get_num_threads", lambda: torch_threads)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)

    return set_up


@pytest.mark.parametrize("device", [None, "cpu", "cuda"])
def test_two_cores_or_fewer_load_in_the_scoring_process(machine, device):
    for cores in (1, 2):
        machine(cores, torch_threads=cores, gpu=device == "cuda")
        assert settings.default_workers(device) == 0


def test_cpu_scoring_gets_only_the_cores_its_threads_leave_free(machine):
    machine(8, torch_threads=8, gpu=False)
    assert settings.default_workers("cpu") == 0  # torch's threads use every core
    machine(8, torch_threads=4, gpu=False)
    assert settings.default_workers("cpu") == 4
    machine(16, torch_threads=2, gpu=False)
    assert settings.default_workers() == 4  # at most 4


def test_gpu_scoring_is_fed_by_workers(machine):
    machine(8, torch_threads=8, gpu=True)
    assert settings.default_workers("cuda:0") == 4
    assert settings.default_workers() == 4  # a GPU present: where the sweep scores by default
    machine(3, torch_threads=3, gpu=True)
    assert settings.default_workers("cuda") == 2
    assert settings.default_workers("cpu") == 0  # a GPU present, but this run scores on the CPU


def test_the_sweep_default_follows_the_rule(machine):
    from gaia_viz.sweep import SweepSettings

    machine(2, torch_threads=2, gpu=False)
    assert SweepSettings(methods=["msp"]).workers == 0
