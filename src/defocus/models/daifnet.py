"""DAIF-Net: depth and all-in-focus image from a focal stack of any length.

Architecture (what follows the paper, and what we changed and why):

* **Shared encoder, layer-wise global pooling** (paper). Every image of the stack goes through the same encoder.
  After each level the element-wise max over the stack is broadcast back and concatenated to every image's
  features, so each image "sees" the others; the skips and the bottleneck are max-fused over the stack. Max over
  the stack makes the network invariant to the order of the stack and lets it take any N ≥ 1.
* **Focus and camera conditioning** (changed). The paper appends a plane holding the focus distance in metres. We
  append the focus in dioptres (1/fd, better conditioned: blur is linear in it) and log K, the CoC diameter in
  pixels per dioptre (K = A·s/p), because c/p = K·|1/fd − 1/d|: two images blur alike when their K and dioptre
  offsets match, whatever the camera. One set of weights thus serves both presets and cameras between them.
* **One decoder per stack** (paper) followed by **per-image attention heads** (ours): a light head sees the fused
  decoder features and each image's own first-level features and scores every image twice. A softmax over the
  stack of the first score blends the input images into the AIF (plus a small bounded residual), and a softmax of
  the second gives a focus-weighted mean of the stack's dioptres (a soft arg-max of sharpness) to which the decoder
  adds a bounded correction. Both start the optimisation near the classical answer, which is what makes training
  from scratch converge on a CPU in minutes, and both stay order-invariant.
* **Classical prior** (ours): the classical depth-from-focus estimate of the stack (SML focus measure, 3-point
  interpolation; a fixed, gradient-free function of the input, like the focus-measure features), its confidence,
  and the blur every image would show if it were right, are input planes; the depth head blends it, per pixel and
  through a learned gate, with the soft arg-max before the bounded correction. The network thus starts from the
  classical answer and learns, self-supervised, where and how to do better (flat regions, noise, occlusions).
* **Metric, bounded depth** (changed): the inverse depth is a sigmoid mapped between 1/far and 1/near of the given
  depth range — never the paper code's per-image max normalisation, which forces every image's farthest point to
  the far limit.

Inputs: stack (B, N, 3, H, W) in [0, 1]; focus (B, N) metres; blur_per_dioptre K (B, N) pixels per dioptre;
depth_range (B, 2) metres. Output: a :class:`~defocus.models.prediction.Prediction` with ``depth`` (B, 1, H, W)
metres, ``aif`` (B, 3, H, W) in [0, 1], ``inv_depth`` (B, 1, H, W) dioptres, ``attention`` (B, N, 1, H, W) (the
focus weights behind the depth) and ``confidence`` (B, 1, H, W) in [0, 1]. H and W can be anything: the input is
padded inside to a multiple of 2^levels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from defocus.checks import check_shape
from defocus.color import to_grey
from defocus.errors import DefocusError
from defocus.filters import confidence_fill
from defocus.models.classical import dff_core, normalised_cue
from defocus.models.prediction import Prediction
from defocus.optics.camera import blur_px_from_inverse_depth


@dataclass
class DAIFNetConfig:
    """Widths of the encoder levels (the decoder mirrors them) and of the bottleneck."""

    widths: tuple[int, ...] = (16, 32, 64, 128)
    bottleneck: int = 256
    head_width: int = 16
    # Largest correction (in logits of the bounded inverse depth) the decoder may add to the soft arg-max.
    max_logit_correction: float = 4.0
    # Pre-filter of the classical prior's focus measure: a number of pixels, or "auto" (from the stack's own noise,
    # as the adaptive classical baseline). The default 1.0 keeps older checkpoints loading as they were trained.
    prior_presmooth: float | str = 1.0
    # False = the ablation without the classical prior: its planes are zeros and the depth head starts from the
    # learned soft arg-max alone.
    classical_prior: bool = True
    # Texture-less regions at inference: where the stack's focus cue is below this, the inverse depth is replaced by
    # an edge-aware average of the neighbours that have a cue (filters.confidence_fill guided by the AIF), instead of
    # what the network guessed there. The cue is the classical confidence (fmax − mean)/fmax of the focus measure
    # over the stack divided by its largest possible value 1 − 1/N, so that one threshold serves every N. 0 = off.
    # Applied in eval mode only (the training loss sees the raw output).
    cue_fill_threshold: float = 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True)
    )


def focus_measure_features(stack: torch.Tensor, windows: tuple[int, ...] = (5, 13)) -> torch.Tensor:
    """Relative local sharpness of every image: (B, N, len(windows), H, W).

    log of the box-averaged squared Laplacian of the grey image, minus its mean over the stack, for each window.
    A deterministic function of the input (the classical focus measure) that the network can build on instead
    of having to discover it, which is what lets it train in minutes on a CPU.
    """
    b, n, _, h, w = stack.shape
    grey = to_grey(stack).reshape(b * n, 1, h, w)
    lap_k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=grey.dtype, device=grey.device)
    lap = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), lap_k[None, None])
    energy = lap * lap
    feats = []
    for win in windows:
        e = F.avg_pool2d(F.pad(energy, (win // 2,) * 4, mode="replicate"), win, stride=1)
        f = torch.log(e + 1e-6).view(b, n, 1, h, w)
        feats.append(f - f.mean(dim=1, keepdim=True))
    return torch.cat(feats, dim=2)


def inverse_depth_to_logit(inv_depth: torch.Tensor, inv_near, inv_far) -> torch.Tensor:
    """Inverse of :func:`logit_to_inverse_depth` (inputs clamped just inside the range)."""
    u = ((inv_depth - inv_far) / (inv_near - inv_far)).clamp(1e-4, 1 - 1e-4)
    return torch.log(u) - torch.log1p(-u)


def logit_to_inverse_depth(logit: torch.Tensor, inv_near, inv_far) -> torch.Tensor:
    """The bounded depth parameterisation: inverse depth (dioptres) = 1/far + (1/near − 1/far)·sigmoid(logit)."""
    return inv_far + (inv_near - inv_far) * torch.sigmoid(logit)


def _stack_max(x: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """(B·N, C, H, W) → (B, C, H, W) element-wise max over the stack."""
    return x.view(b, n, *x.shape[1:]).amax(dim=1)


def _broadcast(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, C, H, W) → (B·N, C, H, W) repeating each stack-level map for every image."""
    return x[:, None].expand(-1, n, -1, -1, -1).reshape(-1, *x.shape[1:])


class DAIFNet(nn.Module):
    """Depth + all-in-focus network with layer-wise global pooling over the stack (see module docstring)."""

    # dioptre plane, log-K plane, classical inverse depth, classical confidence, expected blur under the classical
    # estimate (K·(1/fd − 1/d_classical), signed).
    IN_EXTRA = 5
    FOCUS_WINDOWS = (5, 13)  # windows of the focus-measure input features

    def __init__(self, config: DAIFNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or DAIFNetConfig()
        widths = list(self.config.widths)
        self.levels = len(widths)
        enc = []
        nf = len(self.FOCUS_WINDOWS)
        cin = 3 + self.IN_EXTRA + nf
        for w in widths:
            enc.append(_conv_block(cin, w))
            cin = 2 * w  # own features + stack max, fed to the next level
        self.encoder = nn.ModuleList(enc)
        self.bottleneck = _conv_block(cin, self.config.bottleneck)
        dec = []
        cin = self.config.bottleneck
        for w in reversed(widths):
            dec.append(_conv_block(cin + 2 * w, w))  # upsampled + fused skip (own|max pooled features)
            cin = w
        self.decoder = nn.ModuleList(dec)
        w0, hw = widths[0], self.config.head_width
        # Per-image head: fused decoder features + the image's own first-level features -> two scores.
        self.image_head = nn.Sequential(
            nn.Conv2d(w0 + 2 * w0 + nf, hw, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hw, 2, 1)
        )
        # Stack-level heads: bounded AIF residual and inverse-depth correction.
        self.stack_head = nn.Conv2d(w0, 5, 3, padding=1)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):  # He initialisation keeps activations alive through plain conv-ReLU
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                nn.init.zeros_(mod.bias)
        nn.init.zeros_(self.stack_head.weight)
        with torch.no_grad():  # start by trusting the classical estimate (gate ≈ 0.88), see forward()
            self.stack_head.bias[4] = 2.0

    # ------------------------------------------------------------------------------------------------ helpers
    def _classical_prior(self, stack: torch.Tensor, focus: torch.Tensor, inv_near: torch.Tensor,
                         inv_far: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classical estimate as (inverse depth clamped to the range, confidence), each (B, 1, H, W); no
        gradient: a fixed function of the input, like the focus-measure features."""
        if not self.config.classical_prior:
            b, _, _, h, w = stack.shape
            mid = 0.5 * (inv_near + inv_far)
            return mid.expand(b, 1, h, w).float(), stack.new_zeros(b, 1, h, w)
        # "auto" picks the pre-filter per stack from its estimated noise, by selection rather than a Python branch
        # (see classical.dff_core): the same numbers, and a graph that exports with any batch.
        depth, _, conf = dff_core(stack.detach(), focus.detach(), presmooth_sigma=self.config.prior_presmooth)
        inv = torch.minimum(torch.maximum(1.0 / depth.to(inv_near.dtype), inv_far), inv_near)
        return inv, conf

    @staticmethod
    def check_inputs(
        stack: torch.Tensor, focus: torch.Tensor, blur_per_dioptre: torch.Tensor, depth_range: torch.Tensor
    ) -> None:
        sizes = check_shape(stack, "B N 3 H W", "stack")
        check_shape(focus, "B N", "focus", sizes)
        check_shape(blur_per_dioptre, "B N", "blur_per_dioptre", sizes)
        check_shape(depth_range, "B 2", "depth_range", sizes)
        if not (depth_range[:, 0] > 0).all() or not (depth_range[:, 1] > depth_range[:, 0]).all():
            raise DefocusError("depth_range must satisfy 0 < near < far")
        # What the classical prior's own input check (classical_depth_from_focus) rejected before it ran unchecked.
        if not stack.is_floating_point():
            raise DefocusError(f"images must be floating point in [0, 1], got dtype {stack.dtype}")
        if not bool(torch.isfinite(stack).all()):
            raise DefocusError("images contain non-finite values")
        if not bool((torch.isfinite(focus) & (focus > 0)).all()):
            raise DefocusError(f"focus distances must be finite and positive metres, got {focus.tolist()}")

    def forward(
        self,
        stack: torch.Tensor,
        focus: torch.Tensor,
        blur_per_dioptre: torch.Tensor,
        depth_range: torch.Tensor,
    ) -> Prediction:
        self.check_inputs(stack, focus, blur_per_dioptre, depth_range)
        return self.forward_unchecked(stack, focus, blur_per_dioptre, depth_range)

    def forward_unchecked(
        self,
        stack: torch.Tensor,
        focus: torch.Tensor,
        blur_per_dioptre: torch.Tensor,
        depth_range: torch.Tensor,
    ) -> Prediction:
        """:meth:`forward` without :meth:`check_inputs` (whose checks on input values are Python branches, which
        an exported graph cannot hold: the ONNX runner makes the same checks before it runs the graph). The tensor
        path has no Python control flow on tensor values or on B, N, H, W, so that it exports with all four
        dynamic (defocus.export)."""
        depth_range = depth_range.float()  # a float64 range gives the same network input as a float32 one
        b, n, _, h, w = stack.shape
        mult = 2**self.levels
        ph, pw = (-h) % mult, (-w) % mult
        focus_feats = focus_measure_features(stack, self.FOCUS_WINDOWS) / 4.0  # (B, N, nf, H, W), ~unit scale
        # Padding by zero pixels is the identity: padding unconditionally keeps the graph free of shape branches.
        x = F.pad(torch.cat([stack - 0.5, focus_feats], dim=2).reshape(b * n, -1, h, w), (0, pw, 0, ph),
                  mode="replicate")
        hp, wp = x.shape[-2:]
        dioptre = (1.0 / focus).to(x.dtype)
        log_k = torch.log(blur_per_dioptre.to(x.dtype).clamp_min(1e-3))
        inv_near = (1.0 / depth_range[:, 0]).to(x.dtype)[:, None, None, None]
        inv_far = (1.0 / depth_range[:, 1]).to(x.dtype)[:, None, None, None]
        # The classical depth-from-focus estimate (a fixed function of the input, no gradient) as a prior.
        with torch.no_grad():
            cls_inv, cls_conf = self._classical_prior(stack, focus, inv_near, inv_far)  # (B, 1, H, W) each
            cls_inv, cls_conf = cls_inv.to(x.dtype), cls_conf.to(x.dtype)
            # (B, N, 1, H, W) signed CoC in pixels, K·(1/fd − 1/d)
            expected_blur = blur_px_from_inverse_depth(cls_inv, focus, blur_per_dioptre, signed=True)
        cond = torch.cat(
            [
                expected_blur / 10.0,
                (cls_inv - 1.0)[:, None].expand(-1, n, -1, -1, -1),
                cls_conf[:, None].expand(-1, n, -1, -1, -1),
            ],
            dim=2,
        ).reshape(b * n, 3, h, w)
        if not self.config.classical_prior:
            cond = torch.zeros_like(cond)
        cond = F.pad(cond, (0, pw, 0, ph), mode="replicate")
        # Centre/scale the conditioning roughly to unit range over the cameras we care about.
        planes = torch.stack([dioptre - 1.0, (log_k - 2.5) / 1.5], dim=-1).reshape(b * n, 2, 1, 1)
        x = torch.cat([x, planes.expand(-1, -1, hp, wp), cond], dim=1)

        skips = []
        for level, block in enumerate(self.encoder):
            e = block(x)
            e = torch.cat([e, _broadcast(_stack_max(e, b, n), n)], dim=1)
            skips.append(e)
            x = F.max_pool2d(e, 2)
        y = _stack_max(self.bottleneck(x), b, n)
        for block, skip in zip(self.decoder, reversed(skips)):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, _stack_max(skip, b, n)], dim=1))
        # y: (B, w0, Hp, Wp) fused decoder features.
        first = skips[0][:, : self.config.widths[0]]  # each image's own first-level features
        ff = F.pad(focus_feats.reshape(b * n, -1, h, w), (0, pw, 0, ph), mode="replicate")
        scores = self.image_head(
            torch.cat([_broadcast(y, n), first, _broadcast(_stack_max(first, b, n), n), ff], 1)
        )
        scores = scores.view(b, n, 2, hp, wp)[..., :h, :w]
        extra = self.stack_head(y)[..., :h, :w]

        aif_weights = torch.softmax(scores[:, :, 0:1], dim=1)  # (B, N, 1, H, W)
        aif = (aif_weights * stack).sum(dim=1) + 0.1 * torch.tanh(extra[:, 0:3])
        aif = aif.clamp(0.0, 1.0)

        attention = torch.softmax(scores[:, :, 1:2], dim=1)  # (B, N, 1, H, W)
        soft = (attention * dioptre[:, :, None, None, None]).sum(dim=1)  # (B, 1, H, W) dioptres
        # Per pixel: classical prior vs learned soft arg-max (the ablation has no prior to trust).
        gate = torch.sigmoid(extra[:, 4:5]) if self.config.classical_prior else torch.zeros_like(extra[:, 4:5])
        mixed = gate * cls_inv + (1.0 - gate) * soft
        logit = inverse_depth_to_logit(mixed, inv_near, inv_far)
        logit = logit + self.config.max_logit_correction * torch.tanh(extra[:, 3:4])
        inv_depth = logit_to_inverse_depth(logit, inv_near, inv_far)
        # The stack length as a (B, 1, 1, 1) tensor: N = 1 is handled by selection, not by a branch on N.
        n_t = torch.ones_like(dioptre).sum(dim=1).view(b, 1, 1, 1)
        if self.config.cue_fill_threshold > 0 and self.config.classical_prior and not self.training:
            # With N = 1 the classical confidence is 0, so the cue is 0 and confidence_fill leaves the stack as is;
            # the selection keeps its inverse depth bit for bit, as the branch on N did before.
            filled = confidence_fill(inv_depth, normalised_cue(cls_conf, n_t), to_grey(aif)[:, None],
                                     self.config.cue_fill_threshold)
            filled = torch.minimum(torch.maximum(filled, inv_far), inv_near)
            inv_depth = torch.where(n_t > 1, filled, inv_depth)
        depth = 1.0 / inv_depth
        # Confidence: how peaked the focus attention is (1 = one image clearly sharpest; 0 = uniform, or N = 1).
        entropy = -(attention * attention.clamp_min(1e-8).log()).sum(dim=1)
        confidence = (1.0 - entropy / torch.log(n_t).clamp_min(1e-6)).clamp(0.0, 1.0)
        confidence = torch.where(n_t > 1, confidence, torch.zeros_like(confidence))
        prior = {}
        if self.training and self.config.classical_prior:  # for the loss's prior_consistency term
            prior = {"prior_inv_depth": cls_inv, "prior_cue": normalised_cue(cls_conf, n_t)}
        return Prediction(depth=depth, aif=aif, confidence=confidence, inv_depth=inv_depth, attention=attention,
                          **prior)
