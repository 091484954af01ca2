"""The models that ship in the package: they load without unpickling anything, are the
kinds the package expects, stay small, and the palette network has learned R2."""

import numpy as np
import pytest

from composite_tasking.model import load_checkpoint, read_checkpoint_info
from composite_tasking.weights import default_model_path


@pytest.mark.parametrize("name, kind", [("ctn", "ctn"), ("palette", "palette")])
def test_bundled_checkpoints_load_and_are_small(name, kind):
    path = default_model_path(name)
    info = read_checkpoint_info(path)
    assert (path / "model.safetensors").stat().st_size < 60 * 2**20
    model, loaded = load_checkpoint(path)
    assert model.config.kind == kind and loaded.sha256 == info.sha256
    assert "recipe" in str(info.provenance) or info.provenance  # how it was trained


def test_the_bundled_palette_network_predicts_r2_palettes():
    """On scenes of the synthetic world it was not trained on (the sample seed), its
    palette agrees with R2 applied to the exact semantics far above chance."""
    import torch

    from composite_tasking.inference import Predictor
    from composite_tasking.palette import load_rule
    from composite_tasking.synthetic import generate

    torch.set_num_threads(1)
    pred = Predictor("default", device="cpu", palette_model="default")
    r2 = load_rule("R2")
    agree = []
    for i in range(3):
        scene = generate(424242, i, 128)
        target = r2.palette(semantics=scene["semseg"])
        palette = pred.palette_from_net(scene["image"])
        assert palette.shape == target.shape and palette.max() <= 5
        agree.append(float((palette == target).mean()))
    assert np.mean(agree) > 0.8, agree
