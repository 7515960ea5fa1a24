"""Depth and all-in-focus image for focal stacks: run an estimator (and optional refinement), write the outputs.

``predict_stack`` runs any model of the factory (DAIF-Net or the classical baseline) on one stack at its own
resolution and returns a :class:`~defocus.models.prediction.Prediction` (batch of one); ``write_prediction`` writes
the files of ``defocus predict``; :func:`estimate` is the one-call version for notebooks (``defocus.estimate``; not ``defocus.predict``, which is
this module).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from defocus.data.codecs import save_image, write_depth_png_mm, write_depth_tiff
from defocus.data.folders import read_stack
from defocus.data.stack import FocalStack, require_camera
from defocus.errors import DefocusError
from defocus.files import atomic_folder
from defocus.models.prediction import Prediction
from defocus.optics.camera import default_depth_range
from defocus.optics.forward import ForwardModel
from defocus.refine import refine

#: Files ``write_prediction`` writes for each stack.
OUTPUT_FILES = ("depth.tiff", "depth.png", "depth_preview.png", "aif.png", "confidence.tiff")


def resolve_depth_range(stack: FocalStack, depth_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """The given (near, far) range, checked, or the stack's default (see ``default_depth_range``)."""
    camera = require_camera(stack)
    dr = depth_range or default_depth_range(camera, stack.focus_distances_m)
    if not (0 < dr[0] < dr[1]):
        raise DefocusError(f"depth range must satisfy 0 < near < far, got {dr}")
    return dr


@torch.no_grad()
def predict_stack(
    model: nn.Module,
    stack: FocalStack,
    depth_range: tuple[float, float] | None = None,
    refine_steps: int = 0,
    refine_model: ForwardModel | str = "disk",
) -> Prediction:
    """Runs ``model`` (and ``refine_steps`` of refinement under ``refine_model``) on one stack.

    Args:
        model: a model of :func:`~defocus.models.factory.create_model` (DAIF-Net or ``classical``).
        stack: the focal stack; it must have a camera.
        depth_range: (near, far) metres of the bounded output; default from the camera and focus distances.
        refine_steps: test-time refinement steps (0 = none).
        refine_model: the forward model of the refinement, or a family name (``"disk"``, ``"gaussian"``).
    Returns:
        A Prediction with a batch dimension of 1: depth (1, 1, H, W) metres, aif (1, 3, H, W), confidence.
    """
    camera = require_camera(stack)
    fd = stack.focus_distances_m.float()[None]
    k = camera.blur_per_dioptre(fd)
    dr = resolve_depth_range(stack, depth_range)
    images = stack.images[None].float()
    model.eval()
    pred = model(images, fd, k, torch.tensor([dr], dtype=torch.float64))
    if refine_steps > 0:
        physics = refine_model if isinstance(refine_model, ForwardModel) else ForwardModel.from_family(refine_model)
        with torch.enable_grad():
            pred = refine(images, fd, k, dr, pred, refine_steps, physics)
    return pred


def write_prediction(out_dir: str | os.PathLike, pred: Prediction, title: str | None = None) -> Path:
    """Writes the outputs of one stack into ``out_dir`` atomically (a temporary folder renamed into place):
    ``depth.tiff`` (float32 metres), ``depth.png`` (uint16 mm), ``depth_preview.png``, ``aif.png`` and
    ``confidence.tiff``. ``pred`` is a single-stack prediction."""
    from defocus.visualize import depth_preview

    depth = pred.depth_map.detach().cpu().numpy().astype("float32")

    def fill(tmp: Path) -> None:
        write_depth_tiff(tmp / "depth.tiff", depth)
        write_depth_png_mm(tmp / "depth.png", depth)
        depth_preview(depth, title=title).save(tmp / "depth_preview.png")
        save_image(tmp / "aif.png", pred.aif_image.clamp(0, 1))
        write_depth_tiff(tmp / "confidence.tiff", pred.confidence_map.detach().cpu().numpy().astype("float32"))

    return atomic_folder(Path(out_dir), fill, "predictions to")


def estimate(
    stack: FocalStack | str | os.PathLike,
    model: nn.Module | None = None,
    depth_range: tuple[float, float] | None = None,
    refine_steps: int = 0,
    refine_model: ForwardModel | str = "disk",
) -> Prediction:
    """One call from a stack (or a stack folder) to a prediction, with the shipped weights by default."""
    from defocus.models.factory import DEFAULT_MODEL, create_model

    if not isinstance(stack, FocalStack):
        stack = read_stack(stack, load_ground_truth=False)
    model = model if model is not None else create_model(DEFAULT_MODEL, pretrained=True)
    return predict_stack(model, stack, depth_range, refine_steps, refine_model)
