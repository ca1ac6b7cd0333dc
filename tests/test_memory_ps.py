"""ps_entry_for, spill_warning and memory_view: the /api/ps helpers the pipeline calls before the first request,
after chunks and at the end."""

from __future__ import annotations

from chunkwise.ollama.ps import memory_view, ps_entry_for, spill_warning
from chunkwise.units import MIB

PS = [
    {"name": "qwen2.5:7b", "model": "qwen2.5:7b", "size": 6000 * MIB, "size_vram": 6000 * MIB},
    {"name": "llama3.1:latest", "model": "llama3.1:latest", "size": 9000 * MIB, "size_vram": 6000 * MIB,
     "context_length": 32768},
]


def test_entry_by_name_and_implicit_latest():
    assert ps_entry_for(PS, "qwen2.5:7b")["size"] == 6000 * MIB
    assert ps_entry_for(PS, "llama3.1")["name"] == "llama3.1:latest"
    assert ps_entry_for(PS, "LLAMA3.1:latest") is not None
    assert ps_entry_for(PS, "qwen2.5") is None  # qwen2.5:latest is not what is loaded
    assert ps_entry_for([], "x") is None
    assert ps_entry_for(None, "x") is None


def test_entry_matches_model_field_and_is_a_copy():
    entry = ps_entry_for([{"model": "gemma2:9b", "size": 1}], "gemma2:9b")
    entry["size"] = 2
    assert ps_entry_for([{"model": "gemma2:9b", "size": 1}], "gemma2:9b")["size"] == 1


def test_no_warning_when_it_fits_or_data_is_missing():
    assert spill_warning(PS[0]) is None
    assert spill_warning(None) is None
    assert spill_warning({"size": 100}) is None
    assert spill_warning({"size": 0, "size_vram": 0}) is None
    assert spill_warning({"size": "9", "size_vram": 1}) is None


def test_spill_warning_names_sizes_share_and_remedy():
    text = spill_warning(PS[1])
    assert text.startswith("WARNING: llama3.1:latest at context_length 32768 does not fit in GPU memory")
    assert "size_vram 6000 MiB < size 9000 MiB" in text
    assert "3000 MiB (33.3%)" in text
    assert "Lower num_ctx" in text and "OLLAMA_NUM_PARALLEL" in text and "smaller quantisation" in text


def test_all_on_cpu():
    text = spill_warning({"name": "m", "size": 4096 * MIB, "size_vram": 0})
    assert "4096 MiB (100.0%)" in text


def test_a_server_without_a_gpu_is_cpu_only_not_a_spill():
    """A CPU-only Ollama reports size_vram 0 for every model (the real 0.24.0 of `make ollama` does): nothing to
    warn about. The same 0 while another model holds GPU memory is a spill of the whole model."""
    cpu = [{"name": "m:latest", "size": 4096 * MIB, "size_vram": 0}, {"name": "n:latest", "size": 10, "size_vram": 0}]
    view = memory_view(cpu, "m")
    assert view["cpu_only"] is True and "spill_warning" not in view
    mixed = [{"name": "m:latest", "size": 4096 * MIB, "size_vram": 0},
             {"name": "n:latest", "size": 10, "size_vram": 10}]
    assert "4096 MiB (100.0%)" in memory_view(mixed, "m")["spill_warning"] and "cpu_only" not in memory_view(mixed, "m")
    assert "3000 MiB (33.3%)" in memory_view(PS, "llama3.1")["spill_warning"]
    assert memory_view(PS, "qwen2.5:7b") == PS[0] and memory_view(PS, "absent") is None
