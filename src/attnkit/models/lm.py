"""A small decoder-only language model built from attnkit's attention, Llama-compatible.

Pre-norm blocks (Touvron et al. 2023, "LLaMA"): RMSNorm, causal grouped-query self-attention with
rotary positions, RMSNorm, SwiGLU feed-forward (Shazeer 2020). The layout matches Hugging Face's
``LlamaForCausalLM`` weight for weight, so a model trained here can be saved in the Hugging Face
format (:meth:`CausalLM.save_pretrained`, loaded back by ``transformers`` itself) and a small
Llama can be brought in (:meth:`CausalLM.from_hf`). Its own checkpoint is one safetensors file
plus ``config.json`` (:meth:`CausalLM.save` / :meth:`CausalLM.load`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.cache import KVCache
from attnkit.attention.multihead import MultiHeadAttention
from attnkit.attention.positional import RotaryEmbedding

__all__ = ["CausalLM", "CausalLMConfig"]


@dataclass(frozen=True)
class CausalLMConfig:
    """Size and shape of a :class:`CausalLM`."""

    vocab_size: int = 256  # tokens; 256 fits byte-level text
    dim: int = 128  # model width E
    num_layers: int = 4  # decoder blocks
    num_heads: int = 4  # query heads; dim / num_heads is the head size
    num_kv_heads: int = 2  # key/value heads (grouped-query attention); num_heads for plain MHA
    hidden_dim: int = 352  # SwiGLU inner width
    max_seq_len: int = 512  # longest sequence the model is meant for (recorded in exports)
    rope_base: float = 10000.0  # rotary embedding wavelength base
    norm_eps: float = 1e-6  # RMSNorm epsilon
    dropout: float = 0.0  # attention-weight dropout in training
    tie_embeddings: bool = False  # share the input embedding with the output projection

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "num_layers", "num_heads", "num_kv_heads", "hidden_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(
                f"dim ({self.dim}) must be num_heads ({self.num_heads}) times an even head size"
            )


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))`` (Shazeer 2020)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(dim, hidden_dim, bias=False)
        self.up = nn.Linear(dim, hidden_dim, bias=False)
        self.down = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """One pre-norm decoder block: attention then feed-forward, each added to the residual."""

    def __init__(self, config: CausalLMConfig) -> None:
        super().__init__()
        head_dim = config.dim // config.num_heads
        self.attn_norm = nn.RMSNorm(config.dim, eps=config.norm_eps)
        self.attn = MultiHeadAttention(
            config.dim,
            config.num_heads,
            num_kv_heads=config.num_kv_heads,
            causal=True,
            dropout=config.dropout,
            bias=False,
            positions=RotaryEmbedding(head_dim, base=config.rope_base),
        )
        self.mlp_norm = nn.RMSNorm(config.dim, eps=config.norm_eps)
        self.mlp = SwiGLU(config.dim, config.hidden_dim)

    def forward(self, x: Tensor, mask: Tensor | None, cache: KVCache | None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), mask=mask, cache=cache).output
        return x + self.mlp(self.mlp_norm(x))


class CausalLM(nn.Module):
    """A decoder-only transformer language model (see the module docstring).

    Example::

        lm = CausalLM(CausalLMConfig(vocab_size=100, dim=64, num_layers=2))
        logits = lm(torch.randint(0, 100, (2, 16)))           # (2, 16, 100)
        tokens = lm.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=5)
    """

    def __init__(self, config: CausalLMConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = nn.RMSNorm(config.dim, eps=config.norm_eps)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.apply(self._init)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        cache: list[KVCache] | None = None,
    ) -> Tensor:
        """Next-token logits.

        Args:
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, K)`` with 1 (or ``True``) for real tokens and 0 for padding,
                over the cached positions and these ``T`` (``K = cached + T``).
            cache: one :class:`KVCache` per block for step-by-step decoding.

        Returns:
            ``(B, T, vocab_size)``.
        """
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"input_ids must be (B, T) integer token ids, got {tuple(input_ids.shape)} "
                f"{input_ids.dtype}"
            )
        if cache is not None and len(cache) != len(self.blocks):
            raise ValueError(
                f"cache must hold one KVCache per block ({len(self.blocks)}), got {len(cache)}"
            )
        mask = None if attention_mask is None else attention_mask.bool()
        x = self.embed(input_ids)  # (B, T, E)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, None if cache is None else cache[i])
        return self.head(self.norm(x))  # (B, T, V)

    def new_cache(self) -> list[KVCache]:
        """An empty KV cache for :meth:`forward`, one per block."""
        return [KVCache() for _ in self.blocks]

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue ``input_ids`` ``(B, T)``; greedy when ``temperature`` is 0.

        Returns:
            ``(B, T + n)`` with ``n <= max_new_tokens`` (fewer when every row hit ``eos``).
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        cache = self.new_cache()
        tokens, step = input_ids, input_ids
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for _ in range(max_new_tokens):
            logits = self(step, cache=cache)[:, -1]  # (B, V)
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)
            if eos_token_id is not None:
                nxt = torch.where(finished, eos_token_id, nxt)
                finished |= nxt == eos_token_id
            step = nxt[:, None]
            tokens = torch.cat([tokens, step], dim=1)
            if eos_token_id is not None and finished.all():
                break
        return tokens

    # ------------------------------------------------------------------ checkpoints

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to ``directory``; return it."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(asdict(self.config), indent=2))
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        if self.config.tie_embeddings:
            state.pop("head.weight")
        save_file(state, directory / "model.safetensors")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> CausalLM:
        """A model saved by :meth:`save`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        config = CausalLMConfig(**json.loads((directory / "config.json").read_text()))
        model = cls(config)
        _load(model, load_file(directory / "model.safetensors"), config.tie_embeddings)
        return model

    def hf_config(self):
        """The equivalent ``transformers.LlamaConfig``."""
        from transformers import LlamaConfig

        c = self.config
        return LlamaConfig(
            **{theirs: getattr(c, ours) for ours, theirs in _CONFIG_NAMES.items()},
            rope_parameters={"rope_type": "default", "rope_theta": c.rope_base},
            attention_dropout=c.dropout,
            bos_token_id=None,
            eos_token_id=None,
        )

    def to_hf(self):
        """A ``transformers.LlamaForCausalLM`` with this model's weights."""
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM(self.hf_config())
        _load(model, _to_llama(self.state_dict(), self.config), self.config.tie_embeddings)
        return model.train(self.training)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Save in the Hugging Face format: ``LlamaForCausalLM.from_pretrained`` loads it."""
        self.to_hf().save_pretrained(directory)
        return Path(directory)

    @classmethod
    def from_hf(cls, model) -> CausalLM:
        """Copy a ``LlamaForCausalLM`` (no biases, default RoPE) into a :class:`CausalLM`."""
        hf = model.config
        rope = (getattr(hf, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
        config = CausalLMConfig(
            **{ours: getattr(hf, theirs) for ours, theirs in _CONFIG_NAMES.items()},
            rope_base=float(rope),
        )
        lm = cls(config)
        _load(lm, _from_llama(model.state_dict(), config), config.tie_embeddings)
        return lm

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> CausalLM:
        """Load a Hugging Face Llama checkpoint saved by :meth:`save_pretrained` (or any)."""
        from transformers import LlamaForCausalLM

        return cls.from_hf(LlamaForCausalLM.from_pretrained(directory))


def _load(module: nn.Module, state: dict[str, Tensor], tied: bool) -> None:
    """Load every parameter; only a tied output projection may be absent from ``state``."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    allowed = {"head.weight", "lm_head.weight"} if tied else set()
    if unexpected or set(missing) - allowed:
        raise ValueError(f"checkpoint does not fit: missing {missing}, unexpected {unexpected}")


# CausalLMConfig field -> LlamaConfig field
_CONFIG_NAMES = {
    "vocab_size": "vocab_size",
    "dim": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "num_kv_heads": "num_key_value_heads",
    "hidden_dim": "intermediate_size",
    "max_seq_len": "max_position_embeddings",
    "norm_eps": "rms_norm_eps",
    "tie_embeddings": "tie_word_embeddings",
}

# attnkit name -> Hugging Face Llama name, for parameters that map one to one
_GLOBAL_NAMES = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
_BLOCK_NAMES = {
    "attn.out_proj.weight": "self_attn.o_proj.weight",
    "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate.weight": "mlp.gate_proj.weight",
    "mlp.up.weight": "mlp.up_proj.weight",
    "mlp.down.weight": "mlp.down_proj.weight",
}


def _name_pairs(config: CausalLMConfig) -> list[tuple[str, str]]:
    """Every (attnkit, Llama) pair of names except the fused q/k/v projection."""
    pairs = list(_GLOBAL_NAMES.items())
    if not config.tie_embeddings:
        pairs.append(("head.weight", "lm_head.weight"))
    for i in range(config.num_layers):
        pairs += [(f"blocks.{i}.{a}", f"model.layers.{i}.{b}") for a, b in _BLOCK_NAMES.items()]
    return pairs


def _to_llama(state: dict[str, Tensor], config: CausalLMConfig) -> dict[str, Tensor]:
    """attnkit parameter names to Hugging Face Llama's."""
    out = {theirs: state[ours] for ours, theirs in _name_pairs(config)}
    kv = config.num_kv_heads * (config.dim // config.num_heads)
    for i in range(config.num_layers):
        fused = state[f"blocks.{i}.attn.in_proj_weight"].split([config.dim, kv, kv])
        for name, weight in zip("qkv", fused, strict=True):
            out[f"model.layers.{i}.self_attn.{name}_proj.weight"] = weight
    return out


def _from_llama(state: dict[str, Tensor], config: CausalLMConfig) -> dict[str, Tensor]:
    """Hugging Face Llama parameter names to attnkit's (the inverse of :func:`_to_llama`)."""
    out = {ours: state[theirs] for ours, theirs in _name_pairs(config)}
    for i in range(config.num_layers):
        projections = [state[f"model.layers.{i}.self_attn.{p}_proj.weight"] for p in "qkv"]
        out[f"blocks.{i}.attn.in_proj_weight"] = torch.cat(projections)
    return out
