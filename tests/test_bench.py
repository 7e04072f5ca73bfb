import json

import pytest
import torch

import vitedu
import vitedu.models.resnet  # noqa: F401  (registers the ResNet family)
from vitedu import bench
from vitedu.models import convert

PRESETS = ["vit_pico_patch4_32", "resnet_pico_32"]


@pytest.fixture(scope="module")
def quick_rows():
    return bench.benchmark_models(PRESETS, quick=True, threads=1, progress=False)


def test_quick_mode_times_both_implementations(quick_rows):
    assert [(r["model"], r["task"]) for r in quick_rows] == [(m, t) for m in PRESETS for t in bench.TASKS]
    for r in quick_rows:
        assert r["batch"] == 8 and r["repeats"] == 1 and r["img_size"] == 32 and r["threads"] == 1
        assert len(r["vitedu_times_s"]) == len(r["timm_times_s"]) == 1
        assert r["vitedu_img_s"] > 0 and r["timm_img_s"] > 0
        assert r["ratio"] == pytest.approx(r["vitedu_img_s"] / r["timm_img_s"])
        assert r["vitedu_img_s"] == pytest.approx(8 / min(r["vitedu_times_s"]))
        assert r["vitedu_img_s_median"] == pytest.approx(r["vitedu_img_s"])  # one repetition: best = median
        assert r["peak_gflop_s"] > 0
        assert r["vitedu_gflops_per_img"] > 0
        assert r["vitedu_gflops_per_img"] == pytest.approx(r["timm_gflops_per_img"])  # the same architecture
        assert r["vitedu_peak_frac"] == pytest.approx(r["vitedu_gflop_s"] / r["peak_gflop_s"])
        assert r["max_abs_diff"] <= 1e-5  # the twins hold the same weights
    assert quick_rows[0]["timm_model"] == "VisionTransformer"  # the timm class, with the preset's configuration
    assert quick_rows[2]["timm_model"] == "ResNet"
    infer, train = quick_rows[2]["vitedu_gflops_per_img"], quick_rows[3]["vitedu_gflops_per_img"]
    assert 2.5 < train / infer < 3.1  # the backward costs about twice the forward
    assert "resnet_pico_32" in bench.format_table(quick_rows)


def test_flop_count_includes_attention():
    model = vitedu.create_model("vit_pico_patch4_32")
    tokens, dim, hidden, depth = 65, 64, 128, 4  # 64 patches + class token
    per_block = tokens * dim * 3 * dim + 2 * tokens * tokens * dim + tokens * dim * dim + 2 * tokens * dim * hidden
    macs = depth * per_block + 64 * (3 * 4 * 4) * dim + dim * 10  # blocks, patch projection, head
    assert bench.count_flops(model, torch.randn(1, 3, 32, 32), training=False) == 2 * macs
    resnet18 = vitedu.create_model("resnet18")
    assert bench.count_flops(resnet18, torch.randn(1, 3, 224, 224), training=False) / 1e9 == pytest.approx(
        2 * 1.814, rel=0.01)  # the usual 1.8 GMACs


def test_a_twin_with_other_weights_is_caught(monkeypatch):
    real = convert.to_timm

    def wrong_twin(model):
        twin = real(model)
        with torch.no_grad():
            twin.fc.weight.add_(0.5)
        return twin

    monkeypatch.setattr(convert, "to_timm", wrong_twin)
    rows = bench.benchmark_models(["resnet_pico_32"], quick=True, threads=1, progress=False)
    assert rows[0]["max_abs_diff"] > 1e-2


def test_selection_skips_unregistered_and_keeps_presets_in_quick_mode():
    chosen, skipped = bench.select_models(["resnet_pico_32", "no_such_model_224"])
    assert chosen == ["resnet_pico_32"] and skipped == ["no_such_model_224"]
    chosen, _ = bench.select_models(quick=True)
    assert "resnet_pico_32" in chosen and "vit_pico_patch4_32" in chosen
    assert all(bench.is_preset(name) for name in chosen)
    chosen, _ = bench.select_models()
    assert "resnet50" in chosen and "deit_small_patch16_224" in chosen


def test_input_spec_from_config_or_name():
    assert bench.input_spec(vitedu.create_model("vit_pico_patch4_28"), "vit_pico_patch4_28") == (1, 28)
    assert bench.input_spec(vitedu.create_model("resnet_pico_28"), "resnet_pico_28") == (1, 28)
    assert bench.input_spec(vitedu.create_model("resnet_pico_32"), "resnet_pico_32") == (3, 32)
    assert bench.input_spec(torch.nn.Identity(), "resnet50") == (3, 224)


def test_main_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    assert bench.main(["--quick", "--models", "resnet_pico_28", "no_such_model", "--threads", "1",
                       "--json", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipped (not registered): no_such_model" in out
    assert "resnet_pico_28" in out and "ratio" in out and "GFLOP/s" in out
    saved = json.loads(path.read_text())
    assert saved["meta"]["peak_gflop_s"] > 0
    assert [r["task"] for r in saved["results"]] == list(bench.TASKS)
    assert saved["results"][0]["in_chans"] == 1 and saved["results"][0]["img_size"] == 28
