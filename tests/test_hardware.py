"""The hardware probe: a clean answer without NVIDIA, the right GPU facts through NVML, `tuner hardware`."""
from __future__ import annotations

import json
import sys
import types

import pynvml
import pytest

from tuner.engine import hardware
from tuner.engine.cli import main

KEYS = {"gpus", "cpu_count", "ram_total_gb", "ram_available_gb", "disk_free_gb", "disk_path",
        "platform", "nvidia_driver", "notes"}
GPU_KEYS = {"index", "name", "vram_total_gb", "vram_free_gb", "compute_capability", "bf16"}
MIB = 1024**2


def fake_nvml(monkeypatch, cards):
    """Stand in for the NVML library with `cards` = [(name, total MiB, free MiB, (major, minor), uuid)]."""
    calls = {"shutdown": 0}

    def shutdown():
        calls["shutdown"] += 1

    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=shutdown,
        nvmlSystemGetDriverVersion=lambda: b"550.54.15",  # older bindings return bytes
        nvmlDeviceGetCount=lambda: len(cards),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: cards[h][0],
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=cards[h][1] * MIB, free=cards[h][2] * MIB),
        nvmlDeviceGetCudaComputeCapability=lambda h: cards[h][3],
        nvmlDeviceGetUUID=lambda h: cards[h][4],
        NVMLError=pynvml.NVMLError,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return calls


CARDS = [
    ("NVIDIA GeForce RTX 4090", 24564, 23000, (8, 9), "GPU-aaaa-1111"),
    ("Tesla V100-SXM2-16GB", 16384, 16000, (7, 0), "GPU-bbbb-2222"),
]


def test_probe_without_nvidia_is_clean_and_json_ready(tmp_path):
    hw = hardware.probe(tmp_path)
    assert set(hw) == KEYS
    json.dumps(hw)
    assert hw["cpu_count"] >= 1 and hw["ram_total_gb"] > 0 and hw["disk_free_gb"] > 0
    assert hw["disk_path"] == str(tmp_path.resolve())
    if not hw["gpus"]:  # this test machine has no NVIDIA GPU; a GPU machine lists its cards instead
        assert hw["nvidia_driver"] is None
        assert any("no NVIDIA GPU" in n for n in hw["notes"])


def test_probe_measures_disk_under_a_folder_not_made_yet(tmp_path):
    hw = hardware.probe(tmp_path / "runs" / "not-yet")
    assert hw["disk_path"] == str(tmp_path.resolve())


def test_probe_reads_gpus_through_nvml(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    calls = fake_nvml(monkeypatch, CARDS)
    hw = hardware.probe()
    assert set(hw["gpus"][0]) == GPU_KEYS
    assert [(g["index"], g["name"], g["compute_capability"], g["bf16"]) for g in hw["gpus"]] == [
        (0, "NVIDIA GeForce RTX 4090", [8, 9], True),
        (1, "Tesla V100-SXM2-16GB", [7, 0], False),  # Volta: no bf16
    ]
    assert hw["gpus"][0]["vram_total_gb"] == pytest.approx(23.99, abs=0.01)
    assert hw["gpus"][0]["vram_free_gb"] == pytest.approx(22.46, abs=0.01)
    assert hw["nvidia_driver"] == "550.54.15"
    assert any("bf16" in n for n in hw["notes"])
    assert calls["shutdown"] == 1
    json.dumps(hw)


@pytest.mark.parametrize("visible", ["1", "GPU-bbbb"])
def test_probe_honours_cuda_visible_devices(monkeypatch, visible):
    # NVML lists every GPU; a job limited by CUDA_VISIBLE_DEVICES (index or UUID) sees fewer.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    fake_nvml(monkeypatch, CARDS)
    hw = hardware.probe()
    assert [g["name"] for g in hw["gpus"]] == ["Tesla V100-SXM2-16GB"]
    assert any("CUDA_VISIBLE_DEVICES" in n for n in hw["notes"])


def test_nvml_failure_mid_probe_is_a_note_not_a_crash(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    calls = fake_nvml(monkeypatch, CARDS)

    def broken(handle):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)

    sys.modules["pynvml"].nvmlDeviceGetMemoryInfo = broken
    hw = hardware.probe()
    assert hw["gpus"] == [] and any("NVML failed" in n for n in hw["notes"])
    assert calls["shutdown"] == 1


def test_describe_plans_a_machine_in_the_same_shape():
    hw = hardware.describe(24, 4)
    assert set(hw) == KEYS and len(hw["gpus"]) == 4
    assert all(set(g) == GPU_KEYS and g["vram_total_gb"] == 24 and g["bf16"] for g in hw["gpus"])
    assert hardware.describe(16, 1, bf16=False)["gpus"][0]["bf16"] is False
    assert hardware.describe(12, 0)["gpus"] == []


def test_tuner_hardware_json(capsys, tmp_path):
    assert main(["hardware", "--json", "--path", str(tmp_path)]) == 0
    hw = json.loads(capsys.readouterr().out)
    assert set(hw) == KEYS and hw["disk_path"] == str(tmp_path.resolve())


def test_tuner_hardware_table(capsys, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake_nvml(monkeypatch, CARDS)
    assert main(["hardware"]) == 0
    out = capsys.readouterr().out
    assert "RTX 4090" in out and "CPUs:" in out and "RAM:" in out
