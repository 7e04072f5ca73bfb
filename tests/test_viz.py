import matplotlib
import torch

import vitedu
from vitedu.train import History

matplotlib.use("Agg")


def test_cls_attention_maps():
    model = vitedu.create_model("vit_pico_patch4_28")
    images = torch.rand(3, 1, 28, 28)
    maps = vitedu.viz.cls_attention(model, images)
    assert maps.shape == (3, 4, 7, 7)
    assert torch.all(maps.flatten(2).sum(-1) <= 1 + 1e-5)  # the rest goes to the class token itself
    assert model.training  # the mode is restored
    upsampled = vitedu.viz.upsample(maps, 28)
    assert upsampled.shape == (3, 4, 28, 28) and torch.equal(upsampled[..., :4, :4].amax((-1, -2)), maps[..., 0, 0])
    figure = vitedu.viz.show_cls_attention(images, maps, titles=["a", "b", "c"])
    assert len(figure.axes) == 3 * 6


def test_history_plot_and_live_curves():
    history = History(epochs=[{"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "val_acc": 0.7}],
                      step_losses=[1.2, 1.0, 0.8])
    axes = vitedu.viz.plot_history(history)
    assert axes[1].get_ylabel() == "validation accuracy (%)"
    live = vitedu.viz.LiveCurves("test")
    live(history)
    history.epochs.append({"epoch": 2, "train_loss": 0.8, "val_loss": 0.7, "val_acc": 0.8})
    live(history)
    assert len(live.axes[1].lines) == 1 and list(live.axes[1].lines[0].get_xdata()) == [1, 2]
