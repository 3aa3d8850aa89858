"""What the views put in the page is the recorded numbers: decoded payloads against the weights."""

import base64
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import attnkit
from attnkit.views import explanation_view, recording_view
from attnkit.views.kit import image_data_uri, script_json


def payload(html: str) -> dict:
    found = re.search(r'<script type="application/json" class="attnkit-data">(.*?)</script>', html)
    return json.loads(found.group(1))


def decode(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=np.dtype(dtype).newbyteorder("<"))


@pytest.fixture(scope="module")
def recording():
    torch.manual_seed(0)
    encoder = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(16, 4, batch_first=True), num_layers=2
    ).eval()
    with torch.no_grad(), attnkit.capture(encoder, weights=True) as rec:
        encoder(torch.randn(2, 9, 16))
    return rec


def test_every_weight_is_in_the_page_to_one_step_of_1_65535(recording):
    view = recording_view(recording, tokens=[f"t{i}" for i in range(9)], example=1)
    data = payload(view.html)
    assert data["k"] == 9 and data["layers"] == recording.layers and data["heads"] == [4, 4]
    indices = decode(data["idx"], np.uint16).reshape(2, 4, 9, 9).astype(np.int64)
    values = decode(data["val"], np.uint16).reshape(2, 4, 9, 9) / 65535
    for layer, name in enumerate(recording.layers):
        weights = recording.weights[name][1].numpy()  # (H, Q, K)
        rebuilt = np.zeros_like(weights)
        np.put_along_axis(rebuilt, indices[layer], values[layer], axis=-1)
        assert np.abs(rebuilt - weights).max() <= 0.5 / 65535 + 1e-7
    rest = decode(data["rest"], np.uint16) / 65535
    assert rest.max() <= 1 / 65535  # every key is shown: nothing is left outside


def test_the_budget_keeps_the_largest_weights_and_says_what_is_left(recording):
    per_k = 8 * 9 * 4  # heads x queries x (2-byte index + 2-byte weight)
    data = payload(recording_view(recording, max_bytes=3 * per_k).html)
    assert data["k"] == 3
    values = decode(data["val"], np.uint16).reshape(2, 4, 9, 3) / 65535
    rest = decode(data["rest"], np.uint16).reshape(2, 4, 9) / 65535
    for layer, name in enumerate(recording.layers):
        top = recording.weights[name][0].topk(3, dim=-1).values.numpy()
        assert np.abs(values[layer] - top).max() <= 0.5 / 65535 + 1e-7
        assert np.abs(rest[layer] - (1 - top.sum(-1))).max() <= 1 / 65535 + 1e-6
    assert (
        "the 3 largest weights of each query (of 9 keys)"
        in recording_view(recording, max_bytes=3 * per_k).html
    )


def test_a_long_input_fits_the_budget():
    """2,000 tokens (6 heads here, to spare the memory): the page stays near max_bytes (base64:
    x 4/3), with k from the budget."""

    long = SimpleNamespace(
        want_weights=True,
        weights={  # sparse rows, as real heads often are: 5 keys per query
            f"layer{i}": torch.zeros(1, 3, 2000, 2000).scatter_(
                -1, torch.randint(0, 2000, (1, 3, 2000, 5)), 0.2
            )
            for i in range(2)
        },
    )
    view = recording_view(long, max_bytes=200_000)
    data = payload(view.html)
    assert data["k"] == 200_000 // (6 * 2000 * 4) == 4
    assert len(view.html) < 200_000 * 4 / 3 + 100_000


def test_statistics_without_weights():
    encoder = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(16, 2, batch_first=True), num_layers=1
    ).eval()
    with torch.no_grad(), attnkit.capture(encoder, stats=("entropy",)) as rec:
        encoder(torch.randn(1, 5, 16))
    html = recording_view(rec).html
    mean = rec.stats["entropy"]["layers.0.self_attn"][0].mean(-1)
    assert f"{mean[0].item():.3g}" in html and f"{mean[1].item():.3g}" in html
    assert 'class="attnkit-view attnkit-recording"' in rec._repr_html_()


def test_bad_arguments_name_themselves(recording):
    with pytest.raises(ValueError, match="tokens must have 9 entries"):
        recording_view(recording, tokens=["a"])
    with pytest.raises(ValueError, match=r"example must be in \[0, 2\)"):
        recording_view(recording, example=2)
    with pytest.raises(ValueError, match="max_bytes must be positive"):
        recording_view(recording, max_bytes=0)


def test_untrusted_text_cannot_close_the_script():
    text = script_json({"tokens": ["</script><script>alert(1)</script>", "<!--"]})
    assert "<" not in text and json.loads(text)["tokens"][1] == "<!--"


def test_png_is_the_image():
    pil = pytest.importorskip("PIL.Image")
    import io

    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    data = base64.b64decode(image_data_uri(image).split(",", 1)[1])
    assert np.array_equal(np.asarray(pil.open(io.BytesIO(data)).convert("RGB")), image)


def test_explanation_view_shows_every_method_and_n():
    from attnkit.interpret.explanation import Explanation
    from attnkit.interpret.verdicts import MethodVerdict

    verdict = MethodVerdict("rollout", "leave-one-out", 0.4, 0.03, 0.3, 0.1, 0.35, 0.05, True)
    explanation = Explanation(
        tokens=[["a", "<b>", "c"]],
        mask=torch.tensor([[True, True, False]]),
        predicted=torch.tensor([1]),
        scores={"rollout": torch.tensor([[0.5, 0.25, 0.0]])},
        verdicts=[verdict],
        weights={},
    )
    html = explanation_view(explanation).html
    assert (
        "n = 1 examples" in html and "&lt;b&gt;" in html and "<b>" not in html.split("rollout")[-1]
    )
    assert 'title="0.25"' in html and "rollout 0.03" in html
