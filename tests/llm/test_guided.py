"""Guided decoding keeps the candidate the detector rates most grounded."""

import numpy as np
import pytest
import torch

from attnkit.llm.guided import guided_generate
from attnkit.llm.lookback_lens import span_features
from attnkit.llm.testbed import TaskConfig, load_testbed, save_testbed
from attnkit.models.lm import CausalLM, CausalLMConfig

pytest.importorskip("transformers")

TASK = TaskConfig(num_keys=20, min_facts=2, max_facts=4, alphabet="abcdefghijklmnop",
                  min_value_len=2, max_value_len=4)  # fmt: skip
CONTEXT = "k03=abc;k17=po;"
PROMPT = CONTEXT + "|k17="
SCORES = [[0.9, 0.2, 0.5, 0.7], [0.3, 0.3, 0.1, 0.8], [0.6, 0.4, 0.9, 0.05]]


class StubDetector:
    """Returns the next row of known scores and keeps the features it was given."""

    def __init__(self, scores):
        self.scores, self.seen = list(scores), []

    def predict_proba(self, features):
        self.seen.append(features)
        return np.array(self.scores[len(self.seen) - 1])


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    torch.manual_seed(0)
    config = CausalLMConfig(vocab_size=len(TASK.vocabulary), dim=32, num_layers=2, num_heads=2,
                            num_kv_heads=2, hidden_dim=64, max_seq_len=64)  # fmt: skip
    directory = save_testbed(CausalLM(config), TASK, tmp_path_factory.mktemp("guided"))
    model, tokenizer, _ = load_testbed(directory)
    model.generation_config.eos_token_id = None  # full chunks from the untrained model
    return model, tokenizer


def _run(testbed, detector, **kwargs):
    model, tokenizer = testbed
    kwargs = {"num_candidates": 4, "chunk_size": 4, "max_new_tokens": 10, "seed": 1, **kwargs}
    return guided_generate(model, tokenizer, PROMPT, CONTEXT, detector, **kwargs)


def test_keeps_the_candidate_with_the_lowest_score(testbed):
    _, tokenizer = testbed
    detector = StubDetector(SCORES)
    result = _run(testbed, detector)
    assert [c.chosen for c in result.chunks] == [1, 2, 3]
    assert [len(t.new_ids) for t in result.traces] == [4, 4, 2]  # 10 tokens in chunks of 4
    for chunk, trace, scores, features in zip(
        result.chunks, result.traces, SCORES, detector.seen, strict=True
    ):
        assert chunk.scores == tuple(scores) and len(chunk.candidates) == 4
        assert chunk.candidates[chunk.chosen] == trace.text
        np.testing.assert_allclose(features[chunk.chosen], span_features(trace.lookback_ratio))
        assert features.shape == (4, 2 * 2)
    assert result.text == "".join(t.text for t in result.traces)
    assert result.new_ids.tolist() == [i for t in result.traces for i in t.new_ids.tolist()]
    assert tokenizer.decode(result.new_ids, skip_special_tokens=True) == result.text
    # each chunk continues the prompt and the chunks kept before it
    expected = tokenizer(PROMPT + result.traces[0].text)["input_ids"]
    assert result.traces[1].prompt_ids.tolist() == expected


def test_seeded_and_leaves_the_global_random_state_alone(testbed):
    state = torch.random.get_rng_state()
    first = _run(testbed, StubDetector(SCORES))
    assert torch.equal(torch.random.get_rng_state(), state)
    again = _run(testbed, StubDetector(SCORES))
    assert again.chunks == first.chunks and torch.equal(again.new_ids, first.new_ids)
    assert _run(testbed, StubDetector(SCORES), seed=2).chunks != first.chunks


def test_stops_at_the_end_token(testbed):
    plain = _run(testbed, StubDetector(SCORES))
    end = int(plain.traces[0].new_ids[-1])
    stopped = _run(testbed, StubDetector(SCORES), eos_token_id=end)
    assert len(stopped.chunks) == 1
    assert torch.equal(stopped.new_ids, plain.traces[0].new_ids)


def test_custom_features_reach_the_detector(testbed):
    def length_and_last(trace):
        return np.array([len(trace.new_ids), int(trace.new_ids[-1])])

    detector = StubDetector(SCORES)
    result = _run(testbed, detector, features=length_and_last)
    assert [c.chosen for c in result.chunks] == [1, 2, 3]
    for trace, chunk, seen in zip(result.traces, result.chunks, detector.seen, strict=True):
        assert seen.shape == (4, 2)
        np.testing.assert_array_equal(seen[chunk.chosen], length_and_last(trace))
    assert [row[0] for row in detector.seen[-1]] == [2, 2, 2, 2]  # the last chunk: 10 - 2 * 4


def test_one_candidate_is_plain_chunked_sampling(testbed):
    result = _run(testbed, StubDetector([[0.5]] * 3), num_candidates=1)
    assert [c.chosen for c in result.chunks] == [0, 0, 0]


def test_bad_arguments(testbed):
    model, tokenizer = testbed
    detector = StubDetector(SCORES)
    for name in ("num_candidates", "chunk_size", "max_new_tokens"):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            _run(testbed, detector, **{name: 0})
    with pytest.raises(ValueError, match="temperature must be > 0"):
        _run(testbed, detector, temperature=0.0)
    with pytest.raises(TypeError, match="predict_proba"):
        _run(testbed, object())
    with pytest.raises(TypeError, match="features must be callable, got int"):
        _run(testbed, detector, features=3)
    with pytest.raises(ValueError, match="substring of the prompt"):
        guided_generate(model, tokenizer, PROMPT, "k99=zz;", detector)
    with pytest.raises(ValueError, match=r"must return \(4,\) scores"):
        _run(testbed, StubDetector([[0.1, 0.2]]))
