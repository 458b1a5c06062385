"""Forward stage of DS-ATGO: the adaptive threshold (AT), docs/METHOD.md section 3.

    mu[t] = mean(H[t]),  sigma[t] = std(H[t], ddof=1),  theta[t] = f_c (mu[t] + sigma[t])

over the whole layer at step t. If H ~ N(mu, sigma^2), P(H >= theta) = 15.87 % for f_c = 1
(Theorem 1), whatever the layer's scale. Eval mode uses running thresholds, averaged like
BatchNorm's statistics. mu, sigma and theta are constants of the backward unless
threshold_grad (threshold_vjp, DERIVATIONS.md section 6).
"""
from __future__ import annotations

from ..backend import get_xp


def layer_stats(h):
    """(mu, sigma) of the whole tensor h, as 0-d arrays; sigma uses ddof=1 like torch.std.

    No float() here: on a GPU that would force a device sync at every step. (The CPU kernels
    take the same two numbers from row sums: dsatgo_np/fast/neuron.py, fast_layer_stats.)
    """
    xp = get_xp(h)
    mu = xp.mean(h)
    sigma = xp.std(h, ddof=1)
    return mu, sigma


def adaptive_threshold(mu, sigma, f_c: float = 1.0):
    """theta = f_c * (mu + sigma): about 15.9 % of a Gaussian layer fires when f_c = 1."""
    return f_c * (mu + sigma)


def estimated_threshold(lam, f_c: float = 1.0, v_th: float = 1.0):
    """The ablation's "estimated" threshold f_c * sqrt(1 + lam^2) * v_th (no measured statistics).

    From the Gaussian model of H: after the first step H = lam V[t-1] + X[t] adds two terms of
    scale v_th, so its spread is about sqrt(1 + lam^2) v_th.
    """
    xp = get_xp(lam)
    return f_c * xp.sqrt(1 + lam * lam) * v_th


def update_running(running, value, momentum: float = 0.1, factor: float | None = None):
    """R <- (1 - m) R + m value, elementwise (over the T steps of the running thresholds);
    returns a new array. BatchNorm's running variance passes factor = M / (M - 1), the
    unbiased correction: R <- (1 - m) R + m value factor."""
    if factor is None:
        return (1 - momentum) * running + momentum * value
    return (1 - momentum) * running + momentum * value * factor


def threshold_vjp(dtheta, h, mu, sigma, f_c: float = 1.0):
    """dL/dH contributed through theta = f_c (mu + sigma), given dL/dtheta (a 0-d array).

        dmu/dH_i    = 1 / N
        dsigma/dH_i = (H_i - mu) / ((N - 1) sigma)      (ddof = 1)

    so dL/dH_i = dL/dtheta * f_c * (1/N + (H_i - mu) / ((N - 1) sigma)).

    A constant H[t] (sigma = 0) has no derivative of its std: there the sigma term is taken
    as 0 (the std's subgradient at a constant), leaving the mean's 1/N, never inf or NaN.
    """
    xp = get_xp(h)
    n = h.size
    spread = (h - mu) / ((n - 1) * xp.where(sigma > 0, sigma, 1))
    return dtheta * f_c * (1.0 / n + xp.where(sigma > 0, spread, 0))
