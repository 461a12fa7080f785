"""A TopK sparse autoencoder on residual-stream activations (Gao et al. 2024), with the auxiliary loss
that revives dead latents, and its quality numbers.

    sae, log = train_sae(x, d_sae=1024, k=16, steps=3000, seed=0)     # x [tokens, d_model]
    acts = sae.encode(x)                # [tokens, d_sae], at most k positive per row
    sae.decoder_directions[j]           # [d_model] unit vector: raising latent j moves along it
    sae_quality(sae, x_heldout)         # variance explained, mean active latents, dead latents

    a(x) = TopK(ReLU(((x / scale) - b_dec) W_enc + b_enc)),   x_hat = scale * (a(x) W_dec + b_dec)

`scale` makes the mean squared norm of the training activations d_model, so one learning rate fits every
layer; decoder rows are kept at unit norm. A latent is dead once it has not fired for `dead_after`
training tokens; the auxiliary loss reconstructs the main loss's residual x - x_hat with the k_aux most
active dead latents (weight aux_coef = 1/32), which gives them gradients again.

Why in-house rather than SAELens: at d_model 128-512 the whole autoencoder is ~60 lines of torch on
activations we already hold in memory; SAELens would add a dependency tree (transformer-lens, datasets,
wandb-style logging) for a model whose activations it cannot read without an adapter. Used by
biolab.mech.entities_study.
"""

from __future__ import annotations

import torch
from torch import nn


class TopKSAE(nn.Module):
    def __init__(self, d_in: int, d_sae: int, k: int, scale: float = 1.0):
        super().__init__()
        if not 1 <= k <= d_sae:
            raise ValueError(f"need 1 <= k <= d_sae, got k={k}, d_sae={d_sae}")
        self.k = k
        w_dec = torch.randn(d_sae, d_in)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)                        # [d_sae, d_in], unit rows
        self.W_enc = nn.Parameter(w_dec.T.clone())              # [d_in, d_sae], tied at initialisation
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.register_buffer("scale", torch.tensor(float(scale)))

    @property
    def d_sae(self) -> int:
        return self.W_dec.shape[0]

    @property
    def decoder_directions(self) -> torch.Tensor:
        """[d_sae, d_in] unit directions in the residual stream, one per latent."""
        return (self.W_dec / self.W_dec.norm(dim=1, keepdim=True)).detach()

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, d_in] -> [n, d_sae] ReLU'd encoder outputs before the TopK."""
        return torch.relu((x / self.scale - self.b_dec) @ self.W_enc + self.b_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [n, d_in] -> [n, d_sae] with the k largest pre-activations kept, the rest 0."""
        pre = self.pre_acts(x)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, top.values)

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """acts [n, d_sae] -> [n, d_in] in the input's units."""
        return (acts @ self.W_dec + self.b_dec) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _normalised_mse(error: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return error.pow(2).sum(-1).mean() / (x - x.mean(0)).pow(2).sum(-1).mean().clamp(min=1e-12)


def train_sae(x: torch.Tensor, d_sae: int, k: int, steps: int = 3000, batch_size: int = 1024, lr: float = 1e-3,
              seed: int = 0, dead_after: int = 50_000, aux_coef: float = 1 / 32, k_aux: int | None = None
              ) -> tuple[TopKSAE, dict]:
    """Fit a TopKSAE to x [tokens, d_in] with Adam; returns it (eval, no grad) and a log of the final
    losses and the number of dead latents at the end of training."""
    generator = torch.Generator().manual_seed(seed)
    x = x.float()
    scale = (x.pow(2).sum(-1).mean() / x.shape[1]).sqrt().item()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sae = TopKSAE(x.shape[1], d_sae, k, scale)
    with torch.no_grad():
        sae.b_dec.copy_((x / scale).mean(0))
    k_aux = k_aux or max(1, x.shape[1] // 2)
    optimizer = torch.optim.Adam(sae.parameters(), lr=lr)
    since_fired = torch.zeros(d_sae)                          # tokens since each latent last fired
    for _ in range(steps):
        batch = x[torch.randint(len(x), (batch_size,), generator=generator)]            # [b, d_in]
        pre = sae.pre_acts(batch)                                                       # [b, d_sae]
        top = pre.topk(k, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, top.indices, top.values)
        error = batch - sae.decode(acts)                                                # [b, d_in]
        loss = _normalised_mse(error, batch)
        fired = (acts > 0).any(0)
        since_fired = torch.where(fired, 0.0, since_fired + batch_size)
        dead = since_fired >= dead_after
        aux = torch.zeros(())
        if dead.any():
            dead_pre = pre.masked_fill(~dead, 0.0)
            top_dead = dead_pre.topk(min(k_aux, int(dead.sum())), dim=-1)
            aux_acts = torch.zeros_like(pre).scatter(-1, top_dead.indices, top_dead.values)
            aux = _normalised_mse(error.detach() / sae.scale - aux_acts @ sae.W_dec, error.detach() / sae.scale)
        optimizer.zero_grad()
        (loss + aux_coef * aux).backward()
        optimizer.step()
        with torch.no_grad():
            sae.W_dec /= sae.W_dec.norm(dim=1, keepdim=True)
    log = {"final_loss": loss.item(), "final_aux_loss": aux.item(), "dead_at_end_of_training": int(dead.sum())}
    return sae.eval().requires_grad_(False), log


@torch.no_grad()
def sae_quality(sae: TopKSAE, x: torch.Tensor) -> dict:
    """On held-out activations x [tokens, d_in]: variance explained (1 - SSE / total variance), mean number
    of active latents per token, and latents that fire on none of these tokens."""
    acts = sae.encode(x.float())
    error = x.float() - sae.decode(acts)
    active = acts > 0
    return {"variance_explained": 1.0 - _normalised_mse(error, x.float()).item(),
            "mean_active_latents": active.sum(1).float().mean().item(),
            "dead_latents": int((~active.any(0)).sum()), "d_sae": sae.d_sae, "k": sae.k, "tokens": len(x)}


@torch.no_grad()
def firing_rate(sae: TopKSAE, x: torch.Tensor) -> torch.Tensor:
    """x [n, d_in] -> [d_sae] fraction of rows on which each latent is active (> 0)."""
    return (sae.encode(x.float()) > 0).float().mean(0)
