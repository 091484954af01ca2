import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def ctn18():
    """A small CTN (ResNet-18 encoder) in eval mode with non-trivial BatchNorm statistics.

    Fresh BatchNorm buffers are mean 0 / var 1, which hides bugs in how the conditioning
    is applied; a few training-mode passes on random data give them real values. At
    initialisation all tasks give almost the same output (gamma ~ 1, beta ~ 0); larger
    conditioning weights make the tasks differ, as after training.
    """
    from composite_tasking.model import TaskCompositionBlock, build_model

    torch.manual_seed(0)
    model = build_model("ctn-resnet18")
    with torch.no_grad():
        for blk in model.modules():
            if isinstance(blk, TaskCompositionBlock):
                blk.gamma.weight.normal_(0.0, 0.05)
                blk.beta.weight.normal_(0.0, 0.05)
        for lin in model.task_representation.mlp:
            if isinstance(lin, torch.nn.Linear):
                lin.weight.normal_(0.0, 0.15)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            x = torch.rand(2, 3, 64, 64)
            p = torch.randint(0, 6, (2, 64, 64))
            model(x, p)
    return model.eval()


def _torch_on_one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def one_thread():
    """torch on one thread for the test (timing-free tests that other jobs share the
    machine with; use with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    yield from _torch_on_one_thread()


@pytest.fixture(scope="module")
def one_thread_module():
    """:func:`one_thread` for a whole module, its module-scoped fixtures (training runs)
    included: ``pytestmark = pytest.mark.usefixtures("one_thread_module")``."""
    yield from _torch_on_one_thread()


@pytest.fixture
def errors(monkeypatch):
    """Messages the plugin's widgets show with napari's ``show_error`` (napari tests):
    every widget module's ``show_error`` appends to this list instead."""
    import importlib

    shown: list[str] = []
    for name in ("palette_widget", "predict_widget", "finetune_widget"):
        module = importlib.import_module(f"composite_tasking._napari.{name}")
        monkeypatch.setattr(module, "show_error", shown.append)
    return shown


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A random ResNet-18 CTN checkpoint on disk (real files, made once per session)."""
    from composite_tasking.model import build_model, save_checkpoint

    torch.manual_seed(0)
    return save_checkpoint(build_model("ctn-resnet18").eval(), tmp_path_factory.mktemp("ckpt") / "ctn")
