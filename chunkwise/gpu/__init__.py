"""NVML and CUDA: the GPU memory sampler, `make gpu-check` and its plain CUDA allocations."""
