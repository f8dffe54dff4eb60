"""The additive network and the sparse design product it uses on wide confounder designs."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


class SparseDesign:
    """A wide sparse design (e.g. one-hot of thousands of test ids) as CSR tensors: psi and
    its transpose, so that both the product and its gradient are fast CSR mat-vecs."""

    def __init__(self, m: sp.spmatrix, dtype) -> None:
        self.m = self._csr(sp.csr_matrix(m), dtype)
        self.mt = self._csr(sp.csr_matrix(m.T), dtype)
        self.shape = m.shape

    @staticmethod
    def _csr(m: sp.csr_matrix, dtype) -> torch.Tensor:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we only use mat-vec
            warnings.simplefilter("ignore")
            return torch.sparse_csr_tensor(
                torch.from_numpy(m.indptr.astype(np.int64)), torch.from_numpy(m.indices.astype(np.int64)),
                torch.from_numpy(m.data).to(dtype), m.shape, check_invariants=False,
            )

    def __matmul__(self, beta: torch.Tensor) -> torch.Tensor:
        return SparseMatmul.apply(beta, self)


class SparseMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, beta, design):
        ctx.design = design
        return design.m @ beta

    @staticmethod
    def backward(ctx, grad):
        return ctx.design.mt @ grad, None


def torch_design(m: sp.spmatrix, dtype):
    """Dense when narrow (fastest), CSR pair for wide designs."""
    if m.shape[1] <= 512:
        return torch.from_numpy(np.ascontiguousarray(m.toarray())).to(dtype)
    return SparseDesign(m, dtype)


class AdditiveNet(nn.Module):
    """eta = b + f(phi) + beta . psi: the network behind :class:`~deconfoundlm.glm.model.AdditiveGLM`.

    ``f`` is linear on standardized features (``x_mean``, ``x_scale``) or an MLP; with
    ``interactions`` one MLP takes [phi, psi] (no separate confounder term).
    """

    def __init__(self, d_text: int, d_conf: int, head: str, hidden: int, interactions: bool):
        super().__init__()
        head = "linear" if (d_text + (d_conf if interactions else 0)) == 0 else head
        self.interactions = interactions
        self.register_buffer("x_mean", torch.zeros(d_text))
        self.register_buffer("x_scale", torch.ones(d_text))
        self.bias = nn.Parameter(torch.zeros(1))
        d_in = d_text + d_conf if interactions else d_text
        if head == "linear" or d_in == 0:
            with warnings.catch_warnings():  # d_in may be 0 (a confounder-only nuisance model)
                warnings.simplefilter("ignore")
                self.text = nn.Linear(d_in, 1, bias=False)
            nn.init.zeros_(self.text.weight)  # a convex problem: start at 0, deterministic
        else:
            self.text = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.conf = nn.Parameter(torch.zeros(0 if interactions else d_conf))
        # Coefficients live on unit-RMS columns: one penalty fits one-hot and spline columns
        # alike, and L-BFGS sees a well-conditioned problem.
        self.register_buffer("conf_scale", torch.ones(0 if interactions else d_conf))

    def conf_coef(self) -> torch.Tensor:
        return self.conf / self.conf_scale

    @property
    def standardizes_inputs(self) -> bool:
        """Whether :meth:`f` builds the standardized input (every head but the plain linear one)."""
        return not (isinstance(self.text, nn.Linear) and not self.interactions)

    def inputs(self, phi: torch.Tensor, psi_dense: torch.Tensor | None = None) -> torch.Tensor:
        """The head's input: the standardized text features (with interactions, next to the
        confounders). Fixed while a fit runs, so a fit computes it once and passes it to
        :meth:`forward`."""
        z = (phi - self.x_mean) / self.x_scale
        return torch.cat([z, psi_dense], dim=1) if self.interactions else z

    def f(self, phi: torch.Tensor, psi_dense: torch.Tensor | None = None,
          inputs: torch.Tensor | None = None) -> torch.Tensor:
        """The text term (with interactions: the joint term at the given confounders);
        ``inputs``: :meth:`inputs` of the same rows, already computed."""
        if not self.standardizes_inputs:
            # (phi - m) / s @ w without materializing the standardized copy of phi (large logs).
            w = self.text.weight[0] / self.x_scale
            return phi @ w - self.x_mean @ w
        return self.text(self.inputs(phi, psi_dense) if inputs is None else inputs).squeeze(-1)

    def f_averaged(self, phi: torch.Tensor, psi_ref: torch.Tensor) -> torch.Tensor:
        """mean_j f(phi, psi_ref[j]) for the interaction model, without materializing the
        n x J grid of inputs: the first layer is linear, so split it into text and
        confounder parts and add them per reference row."""
        z = (phi - self.x_mean) / self.x_scale
        d = z.shape[1]
        if isinstance(self.text, nn.Linear):
            return self.text(torch.cat([z, psi_ref.mean(0).expand(len(z), -1)], dim=1)).squeeze(-1)
        first, act, last = self.text
        a = z @ first.weight[:, :d].T + first.bias  # n x h
        b = psi_ref @ first.weight[:, d:].T  # J x h
        out = torch.zeros(len(z), dtype=z.dtype)
        for row in b:
            out += last(act(a + row)).squeeze(-1)
        return out / len(b)

    def forward(self, phi, psi, psi_dense=None, inputs=None):
        eta = self.bias + self.f(phi, psi_dense, inputs)
        if not self.interactions and psi is not None and self.conf.numel():
            eta = eta + (psi @ self.conf_coef()[:, None]).squeeze(-1)
        return eta

    @torch.no_grad()
    def scale_output(self, unit: float) -> None:
        """Multiply eta by ``unit`` (a model fitted with the outcome divided by it): the bias, the
        confounder coefficients and the text term's last layer."""
        last = self.text if isinstance(self.text, nn.Linear) else self.text[-1]
        for param in (self.bias, self.conf, last.weight, *([last.bias] if last.bias is not None else [])):
            param.mul_(unit)

    def penalty(self) -> tuple[torch.Tensor, torch.Tensor]:
        text = sum((p**2).sum() for n, p in self.text.named_parameters() if "weight" in n)
        return text, (self.conf**2).sum()
