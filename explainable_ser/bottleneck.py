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


class DisentanglementBlock(nn.Module):
    """Softmax layer weights -> Linear-GELU-Linear-GELU -> (mu, softplus sigma) -> z.

    With ``variational=False`` (paper Sys.4, no disentanglement) the block is only the weighted
    layer sum and ``z`` is that sum: no encoder, no KL.
    """

    def __init__(self, num_layers: int, in_dim: int, hidden_dim: int, latent_dim: int,
                 variational: bool = True):
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))  # softmax -> uniform at start
        self.variational = variational
        if variational:
            self.encoder = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(),
                                         nn.Linear(hidden_dim, hidden_dim), nn.GELU())
            self.mu = nn.Linear(hidden_dim, latent_dim)
            self.sigma = nn.Linear(hidden_dim, latent_dim)
            # Start nearly deterministic (sigma = softplus(-3) ~ 0.05): with softplus(0) ~ 0.69
            # the noise swamps mu at init, the decoder learns to ignore the speech tokens and
            # the posterior collapses. The KL term then raises sigma only as far as the task allows.
            nn.init.constant_(self.sigma.bias, -3.0)
        self.out_dim = latent_dim if variational else in_dim

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits.float(), dim=0)

    def forward(self, layers: torch.Tensor, lens: torch.Tensor, sample: bool):
        # layers: [L, B, F, D]; lens: [B] valid frames
        w = self.layer_weights().to(layers.dtype)
        x = torch.einsum("l,lbfd->bfd", w, layers)  # [B, F, D]
        if not self.variational:
            return x, x.new_zeros(x.shape[0], dtype=torch.float32)
        h = self.encoder(x)  # [B, F, H]
        mu = self.mu(h)  # [B, F, Z]
        sigma = F.softplus(self.sigma(h)) + 1e-5  # [B, F, Z], > 0
        z = mu + sigma * torch.randn_like(mu) if sample else mu  # reparameterisation
        return z, gaussian_kl(mu, sigma, lens)


class Adapter(nn.Module):
    """Concatenate every k frames (remainder dropped), then Linear-ReLU-Linear into the LLM."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, k: int = 5):
        super().__init__()
        self.k = k
        self.proj = nn.Sequential(nn.Linear(in_dim * k, hidden_dim), nn.ReLU(),
                                  nn.Linear(hidden_dim, out_dim))

    def forward(self, z: torch.Tensor, lens: torch.Tensor):
        # z: [B, F, Z] -> tokens [B, F // k, H_llm], token lengths [B] = lens // k
        b, f, d = z.shape
        n = f // self.k
        x = z[:, : n * self.k].reshape(b, n, self.k * d)  # [B, N, k*Z]
        return self.proj(x), lens // self.k
