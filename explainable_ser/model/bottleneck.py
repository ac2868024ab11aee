"""Disentanglement block (weighted layer sum + variational information bottleneck) and adapter."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def frame_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """[B] lengths -> [B, max_len] bool, True on valid (unpadded) positions."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per utterance, summed over latent dims and valid frames
    (the objective chooses the reduction: ``training.kl_reduction``).

    mu, sigma: [B, F, Z]; lens: [B] -> [B]. Computed in fp32 (bf16 loses the small terms).
    """
    mu, sigma = mu.float(), sigma.float()
    kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 1.0 - 2.0 * torch.log(sigma)).sum(-1)  # [B, F]
    mask = frame_mask(lens, mu.shape[1]).float()
    return (kl * mask).sum(1)


def masked_stats(h: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """[B, F, H] frames, [B] valid counts -> [B, 2H]: mean and std over each utterance's frames."""
    mask = frame_mask(lens, h.shape[1]).to(h.dtype)[..., None]  # [B, F, 1]
    n = mask.sum(1).clamp(min=1)  # [B, 1]
    mean = (h * mask).sum(1) / n  # [B, H]
    var = ((h - mean[:, None]) ** 2 * mask).sum(1) / n
    return torch.cat([mean, (var + 1e-6).sqrt()], dim=-1)


class DisentanglementBlock(nn.Module):
    """Softmax layer weights -> Linear-GELU-Linear-GELU -> (mu, softplus sigma) -> z.

    With ``variational=False`` (paper Sys.4, no disentanglement) the block is only the weighted
    layer sum and ``z`` is that sum: no encoder, no KL.

    ``utterance_context`` (not in the paper): the mean and std of the hidden frames over the
    utterance are appended to every frame before the mu / sigma heads (x-vector style
    statistics pooling). Without it nothing before the LLM sees more than k frames, while the
    emotion and a pitch "high for this voice" are properties of the whole utterance.
    """

    def __init__(
        self,
        num_layers: int,
        in_dim: int,
        hidden_dim: int,
        latent_dim: int,
        variational: bool = True,
        utterance_context: bool = False,
    ):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))  # softmax -> uniform at start
        self.variational = variational
        self.utterance_context = utterance_context and variational
        if variational:
            self.encoder = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU()
            )
            head_in = 3 * hidden_dim if self.utterance_context else hidden_dim
            self.mu = nn.Linear(head_in, latent_dim)
            self.sigma = nn.Linear(head_in, latent_dim)
            # Start nearly deterministic (sigma = softplus(-3) ~ 0.05): with softplus(0) ~ 0.69
            # the noise swamps mu at init, the decoder learns to ignore the speech tokens and
            # the posterior collapses. The KL term then raises sigma only as far as the task allows.
            nn.init.constant_(self.sigma.bias, -3.0)
        self.out_dim = latent_dim if variational else in_dim

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits.float(), dim=0)

    def mix(self, layers: torch.Tensor) -> torch.Tensor:
        """[L, B, F, D] encoder layers -> [B, F, D], their softmax-weighted sum."""
        w = self.layer_weights().to(layers.dtype)
        return torch.einsum("l,lbfd->bfd", w, layers)

    def forward(self, layers: torch.Tensor, lens: torch.Tensor, sample: bool):
        # layers: [L, B, F, D]; lens: [B] valid frames
        x = self.mix(layers)  # [B, F, D]
        if not self.variational:
            return x, x.new_zeros(x.shape[0], dtype=torch.float32)
        h = self.encoder(x)  # [B, F, H]
        if self.utterance_context:
            g = masked_stats(h, lens)  # [B, 2H]
            h = torch.cat([h, g[:, None].expand(-1, h.shape[1], -1)], dim=-1)  # [B, F, 3H]
        mu = self.mu(h)  # [B, F, Z]
        sigma = F.softplus(self.sigma(h)) + 1e-5  # [B, F, Z], > 0
        z = mu + sigma * torch.randn_like(mu) if sample else mu  # reparameterisation
        return z, gaussian_kl(mu, sigma, lens)


class Adapter(nn.Module):
    """Concatenate every k frames (remainder dropped), then Linear-ReLU-Linear into the LLM."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, k: int = 5):
        super().__init__()
        self.k = k
        self.proj = nn.Sequential(nn.Linear(in_dim * k, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))

    def forward(self, z: torch.Tensor, lens: torch.Tensor):
        # z: [B, F, Z] -> tokens [B, F // k, H_llm], token lengths [B] = lens // k
        b, f, d = z.shape
        n = f // self.k
        x = z[:, : n * self.k].reshape(b, n, self.k * d)  # [B, N, k*Z]
        return self.proj(x), lens // self.k
