"""`vae`: one figure on a ground, the figure's mask drawn by a learned shape prior.

Like `silhouette`, the picture is two flat colours blended by one mask, so a lane cannot paint a
texture of colour fragments. Unlike it, the mask is not free: it is the decoder of a small VAE
(`clipterm.prior`) trained on masks of single figures, applied to a 16-number code. So the model
can only move among whole figures, the way VQGAN+CLIP paints through a generator trained on
pictures. The prior never saw a caption or a CLIP model; which figure a prompt gets is the
optimizing model's choice.

Settings narrow the choice further, for models that misuse it: `ground = "grey"` keeps the
ground one grey (the shapes world has only black or white grounds, and a free ground lets a model
swap figure and ground on white); `scale` draws the prior's figure at a fraction of the canvas
about its centre, so the figure stays clear of the rim that zoomed-out views fill with the ground;
`edge = "hard"` cuts the mask at 0.5, so the picture has the world's hard edges where the prior
draws a soft rim (the gradient stays the soft mask's); `prior = "base"` paints through a prior
that learned only the base world's three figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from clipterm import prior
from clipterm.lazy import F, no_grad, torch
from clipterm.parts.base import setting
from clipterm.parts.image import (
    ImageParam,
    figure_and_ground,
    ground_channels,
    ground_setting,
    hard_cut,
    logit,
    register_param,
    shown_ground,
)
from clipterm.parts.param_pyramid import upsample

COLOUR_GAIN = 4.0  # colour logits are scaled up so that one learning rate suits the code and the colours
FIT_STEPS = 40  # gradient steps refining the encoder's code when fitting a picture


@dataclass(frozen=True)
class VaeSettings:
    init_std: float = setting(0.5, float, 0.0, 10.0, live=False, doc="spread of the code's start")
    colour_std: float = setting(0.0, float, 0.0, 10.0, live=False, doc="spread of the two colours' start (0: grey)")
    ground_start: float = setting(
        0.0, float, 0.0, 0.49, live=False, doc="the ground starts this far from mid grey, to black or white by a coin"
    )
    max_norm: float = setting(6.0, float, 0.0, 100.0, doc="longest code (0: any); keeps it where the prior learned")
    ground: str = ground_setting()
    scale: float = setting(1.0, float, 0.2, 1.0, doc="the figure's frame as a fraction of the canvas, about its centre")
    prior: str = setting("rich", str, choices=tuple(prior.PRIORS), live=False, doc="the prior: rich or base world")
    edge: str = setting("soft", str, choices=("soft", "hard"), doc="figure edge: the prior's blur, or a hard 0/1 cut")


@register_param
class Vae(ImageParam):
    name = "vae"
    Settings = VaeSettings
    about = "a figure colour and a ground colour blended by a mask from a learned shape prior"

    @classmethod
    def shapes(cls, settings: VaeSettings, size: int) -> dict[str, tuple[int, ...]]:
        return {
            "code": (prior.latent_size(prior.PRIORS[settings.prior]),),
            "ground": (ground_channels(settings.ground), 1, 1),
            "figure": (3, 1, 1),
        }

    def init(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        code = torch.randn(self.shapes(self.settings, self.size)["code"], generator=gen)[None] * self.settings.init_std
        grounds = ground_channels(self.settings.ground)
        colours = torch.randn((1, grounds + 3, 1, 1), generator=gen) * self.settings.colour_std / COLOUR_GAIN
        ground = colours[:, :grounds]
        if self.settings.ground_start > 0:  # drawn last, so a lane without it keeps its stream
            towards = 1.0 if float(torch.rand((), generator=gen)) < 0.5 else -1.0
            grey = 0.5 + towards * self.settings.ground_start
            ground = ground + math.log(grey / (1 - grey)) / COLOUR_GAIN
        return {"code": code, "ground": ground, "figure": colours[:, grounds:]}

    def _decoder(self):
        return prior.load(str(self.tensors["code"].device), prior.PRIORS[self.settings.prior])

    def _frame(self, scale: float) -> torch.Tensor:
        """The affine sampling grid that maps the canvas onto a centred frame `scale` wide: with
        `scale` < 1 it shrinks a picture into the frame, with 1/`scale` it reads the frame back."""
        code = self.tensors["code"]
        theta = torch.tensor([[[1 / scale, 0.0, 0.0], [0.0, 1 / scale, 0.0]]], device=code.device, dtype=code.dtype)
        return F.affine_grid(theta, [1, 1, self.size, self.size], align_corners=False)

    def mask(self) -> torch.Tensor:
        """The figure's weight per pixel, (1,1,H,W) in (0,1), at the canvas size; outside the
        figure's frame (`scale` < 1) it is 0, the ground."""
        soft = torch.sigmoid(upsample(self._decoder().logits(self.tensors["code"]), self.size))
        if self.settings.scale < 1.0:
            soft = F.grid_sample(soft, self._frame(self.settings.scale), align_corners=False, padding_mode="zeros")
        if self.settings.edge == "soft":
            return soft
        return hard_cut(soft)  # the world's hard edges; the gradient is the soft mask's

    def image(self) -> torch.Tensor:
        ground = shown_ground(torch.sigmoid(COLOUR_GAIN * self.tensors["ground"]), self.settings.ground)
        figure = torch.sigmoid(COLOUR_GAIN * self.tensors["figure"])
        return ground + self.mask() * (figure - ground)

    @no_grad
    def after_step(self) -> None:
        """Pull the code back inside `max_norm`: far out, the decoder draws shapes it never learned."""
        if self.settings.max_norm > 0:
            code = self.tensors["code"]
            code.mul_((self.settings.max_norm / code.norm().clamp_min(1e-12)).clamp(max=1.0))

    def fit(self, canvas: torch.Tensor) -> float:
        """The nearest figure on a ground: the colours as `silhouette` reads them, the code from the
        prior's encoder, refined by a few gradient steps on the mask. A picture that is not one
        figure on a ground cannot be matched: the returned max abs error says how far it is."""
        code = self.tensors["code"]
        target = canvas.to(code).float()
        with torch.no_grad():
            ground, figure, weight = figure_and_ground(target, grey_ground=self.settings.ground != "colour")
            self.tensors["ground"].copy_(logit(ground[:, : ground_channels(self.settings.ground)]) / COLOUR_GAIN)
            self.tensors["figure"].copy_(logit(figure) / COLOUR_GAIN)
            want = weight.clamp(0, 1)
            if self.settings.scale < 1.0:  # the prior draws the frame's contents at full size
                want = F.grid_sample(want, self._frame(1 / self.settings.scale), align_corners=False)
            decoder = self._decoder()
            small = want if want.shape[-1] == prior.SIZE else F.interpolate(want, size=(prior.SIZE,) * 2, mode="area")
            code.copy_(decoder.encode(small)[0])
        trial = code.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([trial], lr=0.05)
        with torch.enable_grad():
            for _ in range(FIT_STEPS):
                loss = F.binary_cross_entropy_with_logits(decoder.logits(trial), small)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            code.copy_(trial)
            return float((self.image() - target).abs().max())
