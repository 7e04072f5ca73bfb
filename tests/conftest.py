import pytest
import torch


@pytest.fixture
def randomise():
    """Move every parameter and buffer away from its initial value, so a wrong computation cannot still match.

    LayerScale (1e-6), zero-initialised BN weights, attention biases, BN running statistics and class tokens all
    start near-degenerate; a model that mishandles them would still agree with the reference at initialisation.
    """

    def apply(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
                if not tensor.is_floating_point():
                    continue
                noise = torch.rand(tensor.shape, generator=generator, dtype=torch.float64).to(tensor.dtype)
                if "running_var" in name:
                    tensor.copy_(0.5 + noise)  # variances must stay positive
                else:
                    tensor.copy_((noise - 0.5) * 0.6)
        return model

    return apply


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Give every test the process's thread count back: a test that leaves torch on another count changes the float
    results (reduction order) of the tests after it, e.g. the bit-for-bit resume checks."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
