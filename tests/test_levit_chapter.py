"""Chapter 04 (LeViT): the study, its helpers and the exercises' checks."""

import pytest
import torch

import vitedu
from vitedu import check
from vitedu.budget import Budget
from vitedu.experiments import get, levit_study
from vitedu.models.levit import attention_bias_index


def test_registered_and_every_budget_is_valid():
    assert get("04") == ("04_levit", levit_study)
    for name in ("smoke", "cpu", "gpu"):
        cfg = levit_study.config(Budget(name))
        assert (len(cfg.seeds) >= 3) == (name != "smoke")
        assert set(cfg.live_seeds) <= set(cfg.seeds)
        assert cfg.models == levit_study.SMALL_MODELS


def test_smoke_study_end_to_end():
    record = levit_study.run(Budget("smoke"))
    assert [row["variant"] for row in record["summary"]] == list(levit_study.SMALL_MODELS)
    assert all(0.0 <= row["mean"] <= 1.0 and row["n"] == 1 for row in record["summary"])
    assert set(record["small_speed"]) == set(levit_study.SMALL_MODELS)
    assert all(t["images_per_s"] > 0 for t in record["small_speed"].values())
    fusing = record["fusing"]
    assert fusing["batchnorms_before"] > 0 and fusing["batchnorms_after"] == 0 and fusing["max_abs_diff"] < 1e-4
    names = [row["model"] for row in record["paper_speed_table"]]
    assert set(levit_study.PAPER_LEVITS) | set(levit_study.EFFICIENTNETS) | {"resnet50", levit_study.UNFUSED} <= set(names)
    paired = [row for row in record["paper_speed_table"] if "vs" in row]
    assert [row["vs"] for row in paired] == list(levit_study.EFFICIENTNETS)
    assert all(row["speedup"] > 0 and row["paper_speedup"] > 1 for row in paired)
    layers = record["attention_biases"]
    assert [layer["resolution"] for layer in layers] == [4, 4, 2, 2]  # stage 1, shrink, stage 2, shrink; 1x1 left out
    assert torch.tensor(layers[0]["bias"]).shape == (2, 4, 4)  # 2 heads in stage 1 of levit_pico_32


def test_paper_throughput_restores_the_thread_count():
    threads = torch.get_num_threads()
    cfg = levit_study.config(Budget("smoke"))
    levit_study.paper_throughput(cfg)
    assert torch.get_num_threads() == threads


def test_speed_table_ratios_are_paired_medians_and_the_papers_numbers():
    timings = {name: {"seconds": [1.0, 2.0, 3.0], "images_per_s": 16.0, "images_per_s_median": 8.0, "params": 10 ** 6}
               for name in ("levit_192", "efficientnet_b2", "resnet50")}
    timings["efficientnet_b2"]["seconds"] = [4.0, 4.0, 12.0]  # ratios 4, 2, 4 -> median 4
    timings["resnet50"]["seconds"] = [10.0, 10.0, 10.0]  # ratios 10, 5, 3.33 -> median 5
    rows = {row["model"]: row for row in levit_study.speed_table(timings)}
    assert rows["levit_192"]["speedup"] == pytest.approx(4.0)
    assert rows["levit_192"]["speedup_vs_resnet50"] == pytest.approx(5.0)
    assert rows["levit_192"]["paper_speedup"] == pytest.approx(65.0 / 13.2)
    assert rows["resnet50"]["paper_images_per_s"] is None and "speedup" not in rows["resnet50"]


def test_architecture_rows_follow_the_papers_pyramid():
    rows = levit_study.architecture_rows(vitedu.create_model("levit_128s"))
    assert [r["resolution"] for r in rows] == [224, 112, 56, 28, 14, 14, 7, 7, 4, 4]
    assert [r["channels"] for r in rows] == [3, 16, 32, 64, 128, 128, 256, 256, 384, 384]
    stages = [r for r in rows if r["step"].startswith("stage")]
    assert [(r["blocks"], r["heads"]) for r in stages] == [(2, 4), (3, 6), (4, 8)]
    shrinks = [r for r in rows if r["step"] == "shrinking attention"]
    assert [r["heads"] for r in shrinks] == [8, 16]  # C / D heads


def test_fusing_check_and_attention_biases_on_a_randomised_model(randomise):
    model = randomise(vitedu.create_model("levit_pico_32")).eval()
    result = levit_study.fusing_check(model, torch.randn(4, 3, 32, 32))
    assert result["max_abs_diff"] < 1e-4 * max(1.0, result["max_abs_logit"])
    assert result["same_predictions"] and result["batchnorms_after"] == 0
    layers = levit_study.attention_biases(model)
    first = model.stages[0].blocks[0].attn
    assert torch.equal(torch.tensor(layers[0]["bias"]), first.attention_biases.detach().reshape(2, 4, 4))


def test_plots_draw():
    import matplotlib
    matplotlib.use("Agg")
    levit_study.plot_architecture(vitedu.create_model("levit_128s"))
    model = vitedu.create_model("levit_pico_32")
    levit_study.plot_attention_biases(levit_study.attention_biases(model))
    summary = [{"variant": "a", "mean": 0.5, "std": 0.1, "values": [0.4, 0.6]}]
    levit_study.plot_accuracy_vs_speed(summary, {"a": {"images_per_s": 100.0}})


def test_attention_bias_index_check():
    assert check.attention_bias_index(attention_bias_index)
    assert "negative" in check.attention_bias_index(
        lambda r, s: attention_bias_index(r, s) - r * r).message
    def swapped(r, s):
        keys = torch.stack(torch.meshgrid(torch.arange(r), torch.arange(r), indexing="ij")).flatten(1)
        sub = torch.arange(0, r, s)
        q = torch.stack(torch.meshgrid(sub, sub, indexing="ij")).flatten(1)
        off = (q[:, :, None] - keys[:, None, :]).abs()
        return off[1] * r + off[0]
    assert "swapped" in check.attention_bias_index(swapped).message
    no_stride = check.attention_bias_index(lambda r, s: attention_bias_index(r, 1))
    assert not no_stride and "stride" in no_stride.message
    assert "raised" in check.attention_bias_index(lambda r, s: 1 / 0).message


def _fuse(linear, bn, eps=True, sqrt=True, mean=True):
    var = bn.running_var + (bn.eps if eps else 0.0)
    s = bn.weight / (var.sqrt() if sqrt else var)
    return linear.weight * s[:, None], bn.bias - (s * bn.running_mean if mean else 0.0)


def test_fuse_linear_bn_check():
    assert check.fuse_linear_bn(_fuse)
    assert "eps" in check.fuse_linear_bn(lambda l, b: _fuse(l, b, eps=False)).message
    assert "standard deviation" in check.fuse_linear_bn(lambda l, b: _fuse(l, b, sqrt=False)).message
    assert "running mean" in check.fuse_linear_bn(lambda l, b: _fuse(l, b, mean=False)).message
    columns = check.fuse_linear_bn(lambda l, b: (_fuse(l, b)[0].T, _fuse(l, b)[1]))
    assert not columns and "rows" in columns.message
    # the real fuse of vitedu's LinearBN agrees with the check
    from vitedu.models.levit import LinearBN

    def via_vitedu(linear, bn):
        unit = LinearBN(linear.in_features, linear.out_features).double()
        unit.linear, unit.bn = linear, bn
        fused = unit.fuse()
        return fused.weight, fused.bias
    assert check.fuse_linear_bn(via_vitedu)


def test_levit_attention_bias_parameters_check():
    assert check.levit_attention_bias_parameters(5314)  # 2*4*196 + 8*196 + 3*6*49 + 16*49 + 4*8*16
    assert "shrinking" in check.levit_attention_bias_parameters(2962).message
    assert "heads" in check.levit_attention_bias_parameters(196 * 3 + 196 + 49 * 3 + 49 + 16 * 4).message
    assert not check.levit_attention_bias_parameters(0)
