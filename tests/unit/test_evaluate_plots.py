"""Evaluation plots: each figure is a real PNG drawn from the metrics it is given."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

from pairflow.stages.evaluate.bootstrap import DeltaCI
from pairflow.stages.evaluate.plots import confusion_plot, delta_plot, plots_html, recall_plot


def _image(png: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(png))
    img.load()
    return img


def _ci(metric: str, delta: float) -> DeltaCI:
    return DeltaCI(metric, 0.5 + delta, 0.5, delta, delta - 0.05, delta + 0.05, 0.95, 500, 80)


def test_recall_plot_draws_both_directions_and_models() -> None:
    cand = {"i2t_recall_at_1": 0.4, "i2t_recall_at_5": 0.8, "t2i_recall_at_1": 0.3}
    champ = {"i2t_recall_at_1": 0.5, "i2t_recall_at_5": 0.9, "t2i_recall_at_1": 0.2}
    alone = recall_plot(cand, None)
    both = recall_plot(cand, champ)
    assert alone is not None and both is not None
    a, b = _image(alone.png), _image(both.png)
    assert a.format == "PNG" and a.width > a.height  # two panels side by side
    assert alone.png != both.png  # the champion's bars are drawn
    only_i2t = recall_plot({"i2t_recall_at_1": 0.4}, None)
    assert only_i2t is not None and _image(only_i2t.png).width < b.width
    assert recall_plot({"accuracy": 0.9, "i2t_recall_at_1": float("nan")}, None) is None


def test_delta_plot_needs_comparisons_and_grows_with_them() -> None:
    assert delta_plot([], 0.01) is None
    one = delta_plot([_ci("accuracy", 0.0)], 0.01)
    three = delta_plot([_ci("accuracy", 0.0), _ci("i2t_recall_at_1", -0.1), _ci("f1", 0.2)], None)
    assert one is not None and three is not None
    assert _image(three.png).height > _image(one.png).height


def test_confusion_plot_and_page_embed_decodable_pngs() -> None:
    matrix = np.array([[5, 1, 0], [0, 4, 2], [1, 0, 6]])
    plot = confusion_plot(matrix, ["circle", "square", "star"], "Confusion <candidate>")
    page = plots_html([plot, plot], "eval & more")
    assert "<h1>eval &amp; more</h1>" in page and "Confusion &lt;candidate&gt;" in page
    uris = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(uris) == 2
    assert _image(base64.b64decode(uris[0])).size == _image(plot.png).size
    assert "No metric to plot" in plots_html([], "empty")
