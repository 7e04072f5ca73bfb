import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file

import vitedu
from vitedu.models import load_weights
from vitedu.models.convert import load_checked


def test_registry_lists_and_suggests():
    assert "vit_pico_patch4_28" in vitedu.list_models("vit_*")
    assert {"deit_small_patch16_224", "deit_tiny_patch16_224"} <= set(vitedu.list_models("deit_*"))
    with pytest.raises(KeyError, match="Did you mean deit_small_patch16_224"):
        vitedu.create_model("deit_smal_patch16_224")
    with pytest.raises(KeyError, match="list_models"):
        vitedu.create_model("completely_unknown")


def test_pretrained_goes_through_the_timm_conversion(monkeypatch, randomise):
    made = {}
    real_create = timm.create_model

    def offline_hub(name, pretrained=False, **kwargs):  # what the hub would give, with random weights
        made["model"] = randomise(real_create(name, pretrained=False, **kwargs)).eval()
        made["pretrained"] = pretrained
        return made["model"]

    monkeypatch.setattr(timm, "create_model", offline_hub)
    model = vitedu.create_model("deit_tiny_patch16_224", pretrained=True, num_classes=7).eval()
    assert made["pretrained"] is True
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(model(x), made["model"](x), atol=1e-4, rtol=0)


def test_pretrained_offline_says_what_to_do():
    code = "import vitedu; vitedu.create_model('deit_tiny_patch16_224', pretrained=True)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0
    assert "need internet" in result.stderr and "load_weights" in result.stderr


def test_presets_have_no_pretrained_weights():
    with pytest.raises(ValueError, match="no pretrained weights"):
        vitedu.create_model("vit_pico_patch4_28", pretrained=True)


def test_load_weights_safetensors_and_torch(tmp_path, randomise):
    source = randomise(vitedu.create_model("vit_pico_patch4_28"))
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    x = torch.randn(1, 1, 28, 28)
    for path in ("w.safetensors", "checkpoint.pt"):
        model = load_weights(vitedu.create_model("vit_pico_patch4_28"), tmp_path / path)
        torch.testing.assert_close(model.eval()(x), source.eval()(x))
    timm_twin = vitedu.models.to_timm(source)
    save_file(timm_twin.state_dict(), tmp_path / "timm.safetensors")
    model = load_weights(vitedu.create_model("vit_pico_patch4_28"), tmp_path / "timm.safetensors", source_layout="timm")
    torch.testing.assert_close(model.eval()(x), source(x))


def test_mismatched_state_dict_is_explained():
    model = vitedu.create_model("vit_pico_patch4_28")
    other = vitedu.create_model("vit_pico_patch4_28", depth=2, num_classes=5).state_dict()
    with pytest.raises(ValueError) as error:
        load_checked(model, other)
    message = str(error.value)
    assert "missing" in message and "blocks.2" in message and "wrong shape" in message and "head.weight" in message
    with pytest.raises(FileNotFoundError):
        load_weights(model, "/nonexistent/weights.safetensors")
