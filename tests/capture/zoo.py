"""Tiny configs of twenty Hugging Face architectures for the capture conformance zoo.

Each entry builds a randomly initialized model in code (a few thousand parameters) and the
inputs of one forward pass; nothing is downloaded. An architecture the installed transformers
lacks is reported by name and skipped.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import torch

VOCAB = 64
TEXT = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@dataclass(frozen=True)
class Arch:
    """One zoo architecture: transformers class names, config and what it takes."""

    name: str
    config: str  # transformers config class
    model: str  # transformers model class
    kwargs: dict = field(default_factory=dict)
    kind: str = "decoder"  # decoder | encoder | seq2seq | vision | clip | speech
    static: bool = True  # generate with a static cache


def _small(**extra):
    return dict(TEXT, **extra)


LLAMA_LIKE = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=64,
)  # fmt: skip
BERT_LIKE = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    max_position_embeddings=64,
)  # fmt: skip

ARCHS = [
    Arch("bert", "BertConfig", "BertModel", _small(**BERT_LIKE), "encoder"),
    Arch("distilbert", "DistilBertConfig", "DistilBertModel",
         _small(dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64),
         "encoder"),
    Arch("roberta", "RobertaConfig", "RobertaModel", _small(**BERT_LIKE), "encoder"),
    Arch("modernbert", "ModernBertConfig", "ModernBertModel",
         _small(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, global_attn_every_n_layers=2, local_attention=4,
                max_position_embeddings=64, cls_token_id=1, sep_token_id=2),
         "encoder"),
    Arch("t5", "T5Config", "T5ForConditionalGeneration",
         _small(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                decoder_start_token_id=0, relative_attention_num_buckets=8),
         "seq2seq"),
    Arch("bart", "BartConfig", "BartForConditionalGeneration",
         _small(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                max_position_embeddings=64, decoder_start_token_id=2),
         "seq2seq"),
    Arch("gpt2", "GPT2Config", "GPT2LMHeadModel", _small(n_embd=32, n_layer=2, n_head=4,
                                                         n_positions=64)),
    Arch("gpt_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM",
         _small(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64)),
    Arch("opt", "OPTConfig", "OPTForCausalLM",
         _small(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=64, word_embed_proj_dim=32)),
    Arch("llama", "LlamaConfig", "LlamaForCausalLM", _small(**LLAMA_LIKE)),
    Arch("mistral", "MistralConfig", "MistralForCausalLM", _small(**LLAMA_LIKE, sliding_window=6)),
    Arch("qwen2", "Qwen2Config", "Qwen2ForCausalLM", _small(**LLAMA_LIKE)),
    Arch("gemma2", "Gemma2Config", "Gemma2ForCausalLM",
         _small(**LLAMA_LIKE, head_dim=8, sliding_window=6, query_pre_attn_scalar=8,
                attn_logit_softcapping=2.0, final_logit_softcapping=None)),
    Arch("gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM",
         _small(**dict(LLAMA_LIKE, num_hidden_layers=3), head_dim=8, sliding_window=6,
                query_pre_attn_scalar=8, layer_types=["sliding_attention", "sliding_attention",
                                                      "full_attention"])),
    Arch("phi3", "Phi3Config", "Phi3ForCausalLM", _small(**LLAMA_LIKE)),
    Arch("falcon", "FalconConfig", "FalconForCausalLM",
         _small(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, alibi=False,
                new_decoder_architecture=False, multi_query=True)),
    Arch("falcon_alibi", "FalconConfig", "FalconForCausalLM",
         _small(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, alibi=True,
                new_decoder_architecture=False, multi_query=True)),
    Arch("mixtral", "MixtralConfig", "MixtralForCausalLM",
         _small(**LLAMA_LIKE, num_local_experts=2, num_experts_per_tok=1)),
    Arch("vit", "ViTConfig", "ViTModel",
         dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              image_size=16, patch_size=4, num_channels=3),
         "vision"),
    Arch("clip", "CLIPConfig", "CLIPModel",
         dict(text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=4,
                               max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                               eos_token_id=2),
              vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                 num_attention_heads=4, image_size=16, patch_size=4),
              projection_dim=16),
         "clip"),
    Arch("whisper", "WhisperConfig", "WhisperForConditionalGeneration",
         _small(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                num_mel_bins=8, max_source_positions=16, max_target_positions=32,
                decoder_start_token_id=1, suppress_tokens=None, begin_suppress_tokens=None),
         "speech"),
]  # fmt: skip


def build(arch: Arch):
    """``(model to capture, eager model)`` with the same random weights: the first runs sdpa where
    the architecture has it, eager otherwise (Gemma 2); ``None`` if transformers lacks it."""
    import transformers

    config_cls = getattr(transformers, arch.config, None)
    model_cls = getattr(transformers, arch.model, None)
    if config_cls is None or model_cls is None:
        return None
    torch.manual_seed(0)
    config = config_cls(**arch.kwargs)
    config._attn_implementation = "eager"
    eager = model_cls(config).eval()
    captured = copy.deepcopy(eager)
    with contextlib.suppress(ValueError):  # no sdpa (Gemma 2's soft-cap): capture eager
        captured.set_attn_implementation("sdpa")
    return captured, eager


def inputs(arch: Arch, side: str) -> tuple[dict, torch.Tensor]:
    """Model inputs of a batch of two, the second padded on ``side``; and ``(B, N)`` real-token
    flags of the sequence the attention layers see (all True for images and audio)."""
    g = torch.Generator().manual_seed(1)
    if arch.kind == "vision":
        return {"pixel_values": torch.randn(2, 3, 16, 16, generator=g)}, torch.ones(2, 17, 1)
    if arch.kind == "speech":
        features = torch.randn(2, 8, 32, generator=g)
        decoder = torch.randint(3, VOCAB, (2, 5), generator=g)
        return {"input_features": features, "decoder_input_ids": decoder}, None
    ids = torch.randint(3, VOCAB, (2, 9), generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    if side == "left":
        mask[1, :3] = 0
    else:
        mask[1, -3:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    batch = {"input_ids": ids, "attention_mask": mask}
    if arch.kind == "seq2seq":
        batch["decoder_input_ids"] = torch.randint(3, VOCAB, (2, 5), generator=g)
    if arch.kind == "clip":
        batch["pixel_values"] = torch.randn(2, 3, 16, 16, generator=g)
    return batch, mask.bool()
