"""ODIN: temperature scaling plus input perturbation."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from gaia_viz.detectors.base import Detector, check_positive, register
from gaia_viz.errors import ModelError
from gaia_viz.forward import ForwardNeeds, ForwardOutputs
from gaia_viz.model_output import model_logits
from gaia_viz.model_state import eval_mode


@register
class ODIN(Detector):
    """ODIN (Liang, Li & Srikant, "Enhancing the reliability of OOD image detection", ICLR 2018).

    With temperature ``T`` and the predicted class ``y = argmax f(x)``::

        x' = x - eps * sign(-grad_x log softmax(f(x) / T)_y)
        score(x) = -max_c softmax(f(x') / T)_c

    The perturbation raises the softmax score, more so for ID inputs. ``eps`` is in
    ``[0, 1]`` pixel units, as in the paper and its code: on normalised inputs the step is
    divided by the per-channel ``input_std`` of the normalisation. Every entry point (the
    sweep, hence the CLI, the report and the app) sets ``input_std`` from the input preset
    when it is not given (:meth:`data_defaults`) and records it; ``input_std=None`` applies
    ``eps`` in the model's input units. Defaults ``T = 1000``, ``eps = 0.0014``.

    The gradient is taken with respect to the input only, from the shared forward pass
    (:meth:`needs`): parameters are frozen for the call (flags restored after, ``p.grad``
    never written) and the model runs in eval mode. The second forward, on the perturbed
    input, is ODIN's own.
    """

    name = "odin"
    label = "ODIN"
    needs_grad = True

    def __init__(
        self,
        model,
        temperature: float = 1000.0,
        epsilon: float = 0.0014,
        input_std: Sequence[float] | None = None,
    ):
        super().__init__(model)
        self.temperature = check_positive("temperature", temperature)
        self.epsilon = float(epsilon)
        if self.epsilon < 0:
            raise ModelError(f"epsilon must be >= 0, got {self.epsilon}.")
        self.input_std = None if input_std is None else tuple(float(s) for s in input_std)

    @classmethod
    def data_defaults(cls, preset) -> dict:
        return {"input_std": tuple(float(s) for s in preset.std)} if preset is not None else {}

    def needs(self) -> ForwardNeeds:
        return ForwardNeeds(input_objective=self.input_objective)

    def input_objective(self, logits: Tensor) -> Tensor:
        """The loss whose input gradient ODIN steps against: sum_b -log softmax(f(x_b)/T)_y.

        Summed, not averaged, so each sample's gradient is its own."""
        tempered = logits / self.temperature
        return F.cross_entropy(tempered, tempered.argmax(dim=1), reduction="sum")

    def perturb(self, x: Tensor) -> Tensor:
        """``x'``: one signed-gradient step that increases the tempered max softmax."""
        from gaia_viz.forward import shared_forward

        outputs = shared_forward(self.model, self._input(x), self.needs())
        return self.step(outputs.x, outputs.input_grad)

    def step(self, x: Tensor, grad: Tensor) -> Tensor:
        """``x - eps * sign(grad)`` (divided by ``input_std`` per channel when given)."""
        step = torch.sign(grad)
        if self.input_std is not None:
            std = torch.tensor(self.input_std, dtype=step.dtype, device=step.device)
            if std.numel() != step.shape[1]:
                raise ModelError(
                    f"input_std has {std.numel()} values but the input has {step.shape[1]} channels."
                )
            step = step / std.view(1, -1, *([1] * (step.ndim - 2)))
        return (x - self.epsilon * step).detach()

    def score_perturbed(self, x_perturbed: Tensor) -> Tensor:
        """``-max softmax(f(x') / T)`` for already perturbed inputs."""
        with torch.no_grad(), eval_mode(self.model):
            logits = model_logits(self.model(x_perturbed))
        return (-torch.softmax(logits.float() / self.temperature, dim=1).amax(dim=1)).cpu()

    def score_forward(self, outputs: ForwardOutputs) -> Tensor:
        x = outputs.x.to(device=outputs.input_grad.device, dtype=outputs.input_grad.dtype)
        return self.score_perturbed(self.step(x, outputs.input_grad))
