import json
import math
import time

import pytest
import torch

import vitedu
import vitedu.cli
import vitedu.models.resnet  # (registers the ResNet family)
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
        assert r["ratio_paired"] == pytest.approx(r["ratio"])  # one pair: its ratio is the ratio
        assert r["ratio_paired_iqr"] == pytest.approx((r["ratio"], r["ratio"]))
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


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_convolution_gradients_cost_twice_the_forward_whatever_the_groups(groups):
    # torch's own formula counts a grouped convolution's weight gradient `groups` times over
    conv = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1, groups=groups, bias=False), torch.nn.Flatten())
    x = torch.randn(2, 16, 8, 8)  # the flattened maps serve as logits for the benchmark's loss
    macs = 2 * 32 * (16 // groups) * 9 * 8 * 8
    assert bench.count_flops(conv, x, training=False) == 2 * macs
    assert bench.count_flops(conv, x, training=True) == 2 * 2 * macs  # the input needs no gradient: weight only
    assert bench.count_flops(conv, x.requires_grad_(), training=True) == 3 * 2 * macs


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
    assert bench.main(["models", "--quick", "--models", "resnet_pico_28", "no_such_model", "--threads", "1",
                       "--json", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipped (not registered): no_such_model" in out
    assert "resnet_pico_28" in out and "ratio" in out and "GFLOP/s" in out
    saved = json.loads(path.read_text())
    assert saved["meta"]["peak_gflop_s"] > 0
    assert [r["task"] for r in saved["results"]] == list(bench.TASKS)
    assert saved["results"][0]["in_chans"] == 1 and saved["results"][0]["img_size"] == 28


TRAIN_KEYS = {"model", "img_size", "in_chans", "batch", "steps", "repeats", "warmup", "threads", "params",
              "gflops_per_img", "engine_img_s", "engine_img_s_median", "engine_times_s", "bare_img_s",
              "bare_img_s_median", "bare_times_s", "ratio", "ratio_paired", "overhead_pct", "engine_gflop_s",
              "engine_peak_frac", "peak_gflop_s", "weights_equal", "max_abs_diff", "max_abs_update"}


def test_quick_training_benchmark_runs_the_same_computation_in_both_loops():
    rows = bench.benchmark_training(["vit_pico_patch4_32"], quick=True, threads=1, progress=False)
    assert len(rows) == 1
    r = rows[0]
    assert set(r) == TRAIN_KEYS
    assert (r["model"], r["batch"], r["steps"], r["repeats"], r["threads"]) == ("vit_pico_patch4_32", 8, 2, 1, 1)
    assert len(r["engine_times_s"]) == len(r["bare_times_s"]) == 1
    # fit and the bare loop end with the same weights, bit for bit, and training did move them
    assert r["weights_equal"] and r["max_abs_diff"] == 0.0
    assert r["max_abs_update"] > 1e-4
    assert r["ratio"] > 0 and math.isfinite(r["ratio"])
    assert r["ratio"] == pytest.approx(r["engine_img_s"] / r["bare_img_s"])
    assert r["overhead_pct"] == pytest.approx(100 * (1 - r["ratio"]))
    assert r["engine_img_s"] == pytest.approx(16 / r["engine_times_s"][0])  # 2 steps of 8 images
    assert r["ratio_paired"] == pytest.approx(r["ratio"])  # one repetition: the pair is the best
    assert r["gflops_per_img"] == pytest.approx(bench.count_flops(vitedu.create_model("vit_pico_patch4_32"),
                                                                  torch.randn(1, 3, 32, 32), training=True) / 1e9)
    assert r["engine_peak_frac"] == pytest.approx(r["engine_gflop_s"] / r["peak_gflop_s"])
    assert "vit_pico_patch4_32" in bench.format_train_table(rows) and "equal" in bench.format_train_table(rows)


def test_a_bare_loop_with_other_maths_is_caught(monkeypatch):
    real = bench.bare_fit

    def no_weight_decay_anywhere(model, loader, lr, min_lr, weight_decay, seed=0):
        real(model, loader, lr, min_lr, 0.0, seed)

    monkeypatch.setattr(bench, "bare_fit", no_weight_decay_anywhere)
    rows = bench.benchmark_training(["vit_pico_patch4_32"], quick=True, threads=1, progress=False)
    assert not rows[0]["weights_equal"] and rows[0]["max_abs_diff"] > 0
    assert "differ by" in bench.format_train_table(rows)


def test_interleaved_times_prepares_each_run_untimed_and_alternates_the_order():
    calls = []
    steps = {"a": lambda arg: calls.append(("a", arg)), "b": lambda arg: calls.append(("b", arg))}
    prepare = {"a": lambda: "fresh a", "b": lambda: "fresh b"}
    times = bench._interleaved_times(steps, warmup=1, repeats=2, prepare=prepare)
    assert [key for key, _ in calls] == ["a", "b", "b", "a", "a", "b"]
    assert all(arg == f"fresh {key}" for key, arg in calls)
    assert len(times["a"]) == len(times["b"]) == 2


def test_interleaved_times_repeats_short_steps_to_min_seconds_and_reports_seconds_per_call():
    calls = {"fast": 0, "slow": 0}

    def step(key, seconds):
        def run():
            calls[key] += 1
            time.sleep(seconds)
        return run

    times = bench._interleaved_times({"fast": step("fast", 0.002), "slow": step("slow", 0.004)}, warmup=1,
                                     repeats=2, min_seconds=0.05)
    # 2 calibration calls each, then 3 repetitions of the same count, set by the fastest step (0.05 / 0.002 ~ 25)
    per_repeat = (calls["fast"] - 2) / 3
    assert calls["fast"] == calls["slow"] and per_repeat == int(per_repeat) and 2 <= per_repeat <= 25
    assert len(times["fast"]) == len(times["slow"]) == 2
    assert all(0.002 <= t < 0.02 for t in times["fast"]) and all(0.004 <= t < 0.04 for t in times["slow"])
    with pytest.raises(ValueError, match="prepare"):
        bench._interleaved_times({"a": lambda arg: None}, warmup=1, repeats=1, prepare={"a": lambda: 0},
                                 min_seconds=0.1)


def test_training_models_default_and_quick_selection():
    chosen, _ = bench.select_training_models()
    assert chosen == bench.TRAIN_MODELS and "deit_tiny_patch16_224" in chosen
    chosen, _ = bench.select_training_models(quick=True)
    assert chosen and all(bench.is_preset(name) for name in chosen)
    assert bench.select_training_models(["resnet_pico_32", "nope"]) == (["resnet_pico_32"], ["nope"])


def test_main_train_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "train.json"
    assert bench.main(["train", "--quick", "--models", "resnet_pico_28,no_such_model", "--steps", "2", "--threads",
                       "1", "--json", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipped (not registered): no_such_model" in out
    assert "resnet_pico_28" in out and "overhead" in out and "equal" in out
    saved = json.loads(path.read_text())
    assert saved["meta"]["benchmark"] == "train" and saved["meta"]["peak_gflop_s"] > 0
    assert [r["model"] for r in saved["results"]] == ["resnet_pico_28"]
    assert saved["results"][0]["weights_equal"] is True  # also with BatchNorm buffers and no no_weight_decay()


def test_cli_dispatches_both_benchmarks(monkeypatch):
    seen = []
    monkeypatch.setattr(bench, "main", lambda argv: seen.append(argv) or 0)
    assert vitedu.cli.main(["bench", "train", "--quick", "--steps", "3"]) == 0
    assert vitedu.cli.main(["bench", "models", "--quick"]) == 0
    assert seen == [["train", "--quick", "--steps", "3"], ["models", "--quick"]]
    with pytest.raises(SystemExit):
        vitedu.cli.main(["bench", "nothing"])


def test_quartiles_of_paired_ratios():
    assert bench._quartiles([0.9, 1.0, 1.1, 1.2, 1.3]) == pytest.approx((1.0, 1.2))
    assert bench._quartiles([1.05]) == (1.05, 1.05)


def test_training_memory_counts_what_autograd_saves_once_and_leaves_parameters_out():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    x = torch.randn(2, 4)
    memory = bench.training_memory(model, x)
    # Linear keeps its input for the weight's gradient (2x4 floats); ReLU keeps its output (2x3 floats).
    assert memory == {"activations": (2 * 4 + 2 * 3) * 4, "parameters": (4 * 3 + 3) * 4}
    assert all(p.grad is None for p in model.parameters())


def test_training_memory_grows_with_resolution_like_the_token_count():
    model = vitedu.create_model("vit_pico_patch4_32", img_size=32)
    small = bench.training_memory(model, torch.randn(2, 3, 32, 32))["activations"]
    large = bench.training_memory(vitedu.create_model("vit_pico_patch4_32", img_size=64),
                                  torch.randn(2, 3, 64, 64))["activations"]
    assert 3.5 < large / small < 6  # 4x the tokens, and the attention matrices grow faster still


def test_compare_throughput_times_every_model_in_one_interleaved_run():
    models = {"a": (torch.nn.Linear(8, 2), torch.randn(4, 8)), "b": (torch.nn.Linear(8, 2), torch.randn(6, 8))}
    rows = bench.compare_throughput(models, training=True, warmup=0, repeats=3)
    assert list(rows) == ["a", "b"]
    for name, (_, x) in models.items():
        assert len(rows[name]["seconds"]) == 3
        assert rows[name]["images_per_s"] == pytest.approx(x.shape[0] / min(rows[name]["seconds"]))
        assert rows[name]["images_per_s"] >= rows[name]["images_per_s_median"]
    with pytest.raises(ValueError, match="repeats"):
        bench.compare_throughput(models, repeats=0)
