"""`trainer.compile`: the network's forward trained through torch.compile (TorchInductor)."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch
from torch._dynamo.utils import counters

from mlfactory.config.loader import load_recipe
from mlfactory.errors import ConfigError
from mlfactory.output import PHASE_LOGGER
from mlfactory.training.datamodule import EncodedDataset
from mlfactory.training.train import prepare_fit, train
from tests.numerics import assert_parity_recorded

from ..conftest import SMALL_NETWORK, fast_digits_overrides

# The small network (a third of the compiling time too), one epoch of a few batches.
SMALL = [*SMALL_NETWORK, "trainer.limit_train_batches=3", "trainer.limit_val_batches=2"]


def test_a_compile_mode_that_does_not_exist_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match=r"trainer\.compile_mode"):
        load_recipe("digits", ["trainer.compile=true", "trainer.compile_mode=fastest"])


@pytest.fixture
def eager_random() -> Iterator[None]:
    """Inductor draws dropout masks with eager PyTorch's generator, so that compiled and eager
    training steps see the same masks. Set for both compiling tests: the same settings let the
    training run reuse the kernels the first test compiled (Inductor's on-disk cache)."""
    with torch._inductor.config.patch(fallback_random=True):
        yield


def relative_error(output: torch.Tensor, exact: torch.Tensor) -> float:
    return float(((output.double() - exact).norm() / exact.norm()).detach())


def test_the_compiled_training_forward_computes_what_the_network_computes(
    digit_folder: Path, tmp_path: Path, eager_random: None
) -> None:
    overrides = [*fast_digits_overrides(digit_folder, tmp_path), *SMALL, "trainer.compile=true"]
    setup = prepare_fit(load_recipe("digits", overrides).config, tmp_path / "run")
    module = setup.module.train()
    items = setup.dataset.split("train")[:8]
    rows = EncodedDataset(items, setup.encoder, setup.dataset.label_index())
    pixels = torch.stack([rows[i][0]["pixel_values"] for i in range(len(rows))])
    inputs = {"pixel_values": pixels.contiguous(memory_format=torch.channels_last)}
    eager_net, exact_net = copy.deepcopy(module.net), copy.deepcopy(module.net).double()
    compiled_before = counters["stats"]["unique_graphs"]
    torch.manual_seed(0)  # the same dropout mask for each
    compiled = module(inputs)
    assert counters["stats"]["unique_graphs"] > compiled_before  # the compiled path ran
    compiled.sum().backward()  # compiles the backward too (the next test's run reuses both)
    torch.manual_seed(0)
    eager = eager_net(inputs["pixel_values"])
    torch.manual_seed(0)
    exact = exact_net(inputs["pixel_values"].double())
    # Inductor fuses and reorders the float32 sums of the same network; each float32 path is
    # compared with float64 (measured: eager 7.7e-6 and compiled 4.2e-6 from it with the
    # default kernels, 1.3e-5 and 3.9e-6 with AVX2 ones). A dropout mask drawn otherwise, or a
    # wrong kernel, is off by far more.
    assert relative_error(compiled, exact) < 1e-4
    assert relative_error(eager, exact) < 1e-4
    # Only the call is compiled: the module's parameters and checkpoint keys are the network's.
    assert all(key.startswith(("net.", "loss.")) for key in module.state_dict())
    # Out of training (validation, test) the network runs eagerly: nothing new is compiled.
    compiled_before = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        module.eval()
        evaluated, direct = module(inputs), module.net(inputs["pixel_values"])
    assert counters["stats"]["unique_graphs"] == compiled_before
    torch.testing.assert_close(evaluated, direct, rtol=0.0, atol=0.0)


def test_a_compiled_training_run_exports_the_network_it_trained(
    digit_folder: Path, tmp_path: Path, eager_random: None, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = [*fast_digits_overrides(digit_folder, tmp_path, epochs=1), *SMALL]
    compiled_before = counters["stats"]["unique_graphs"]
    with caplog.at_level(logging.INFO, logger=PHASE_LOGGER):
        result = train(
            load_recipe("digits", [*overrides, "trainer.compile=true"]),
            tmp_path / "run",
            progress=False,
        )
    assert counters["stats"]["unique_graphs"] > compiled_before
    # The run says why its first epoch takes long.
    assert "fit: training steps compiled by torch.compile (mode default)" in caplog.text
    # The bundle is the eager network, ONNX-exported and parity-checked on the test split.
    meta = result.bundle.meta
    assert_parity_recorded(meta.export, len(result.dataset.split("test")))
    assert meta.config["trainer"]["compile"] is True
    checkpoint = torch.load(
        result.out_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True
    )
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])


def test_a_network_that_cannot_be_compiled_is_a_one_line_error(
    digit_folder: Path, tmp_path: Path
) -> None:
    # A machine without a working C++ compiler, which TorchInductor needs on a CPU.
    no_compiler = {"cpp.cxx": (None, str(tmp_path / "no-such-c++")), "force_disable_caches": True}
    torch._dynamo.reset()
    overrides = [*fast_digits_overrides(digit_folder, tmp_path, epochs=1), *SMALL]
    with torch._inductor.config.patch(no_compiler), pytest.raises(ConfigError) as raised:
        train(
            load_recipe("digits", [*overrides, "trainer.compile=true"]),
            tmp_path / "run",
            progress=False,
        )
    message = str(raised.value)
    assert message.startswith("trainer.compile: torch.compile could not compile the network:")
    assert "InvalidCxxCompiler: No working C++ compiler" in message
    assert message.endswith("train without it: trainer.compile=false")
    assert "\n" not in message
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = mlflow.search_runs(experiment_names=["mlfactory"], output_format="list")
    assert run.info.status == "FAILED"
    torch._dynamo.reset()
