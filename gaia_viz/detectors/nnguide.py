"""NNGuide: the energy guided by nearest neighbours in an energy-scaled bank of ID features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gaia_viz.detectors.base import OutputDetector, register
from gaia_viz.errors import ModelError

BANK_CHUNK = 8192  # bank rows compared at once: memory O(batch * BANK_CHUNK)
BANK_SEED = 0  # which random subset a bank_size keeps


@register
class NNGuide(OutputDetector):
    """NNGuide (Park, Jung & Teoh, "Nearest neighbor guidance for out-of-distribution
    detection", ICCV 2023; code github.com/roomo7time/nnguide).

    ``fit`` builds the bank from the ID training features ``h_i`` and logits ``l_i``: the
    normalised features scaled by their energy confidence,
    ``b_i = logsumexp(l_i) * h_i / ||h_i||``. With ``z = h(x) / ||h(x)||``::

        guidance(x) = mean of the k largest <z, b_i>                    (k = 10)
        score(x)    = -guidance(x) * logsumexp(l(x))

    The paper's score ``guidance * logsumexp`` is ID-high; it is negated here (OOD-high).
    The neighbours are the largest inner products with the scaled bank, as in the reference
    code (faiss ``IndexFlatIP`` on ``b_i``) and pytorch-ood 0.4.0. The paper's bank is a
    random 1 % of ImageNet's training set; ``bank_size`` (None: the whole fit set) keeps
    that many fit samples, a random subset drawn with seed 0 (so the same fit set gives the
    same bank). ``k`` is clamped to the bank's size. Labels are not used (pytorch-ood drops
    samples labelled below 0; here -1 only means "label unknown").
    """

    name = "nnguide"
    label = "NNGuide"
    needs_fit = True
    fitted_keys = ("bank",)

    def __init__(self, model, k: int = 10, bank_size: int | None = None):
        super().__init__(model)
        if int(k) != k or int(k) < 1:
            raise ModelError(f"k must be a positive integer, got {k}.")
        if bank_size is not None and (int(bank_size) != bank_size or int(bank_size) < 1):
            raise ModelError(f"bank_size must be a positive integer (or None for the whole fit set), got {bank_size}.")
        self.k = int(k)
        self.bank_size = None if bank_size is None else int(bank_size)
        self.bank: Tensor | None = None

    def fit_features(self, features: Tensor, logits: Tensor, labels: Tensor) -> "NNGuide":
        if self.bank_size is not None and self.bank_size < features.shape[0]:
            generator = torch.Generator().manual_seed(BANK_SEED)
            keep = torch.randperm(features.shape[0], generator=generator)[: self.bank_size].sort().values
            features, logits = features[keep], logits[keep]
        confidence = torch.logsumexp(logits.float(), dim=1)
        self.bank = F.normalize(features.float(), dim=1) * confidence[:, None]
        self._fitted = True
        return self

    def score_outputs(self, logits: Tensor, features: Tensor) -> Tensor:
        self._require_fit()
        k = min(self.k, self.bank.shape[0])
        queries = F.normalize(features.float().cpu(), dim=1)
        best = torch.empty(queries.shape[0], 0)
        for start in range(0, self.bank.shape[0], BANK_CHUNK):
            sims = queries @ self.bank[start : start + BANK_CHUNK].T
            best = torch.cat([best, sims], dim=1).topk(min(k, best.shape[1] + sims.shape[1]), dim=1).values
        guidance = best.mean(dim=1)
        return -(guidance * torch.logsumexp(logits.float().cpu(), dim=1))
