"""Evaluation of stacks with ground truth: the network and the classical baseline side by side.

Every method runs through the one pipeline users get (:func:`defocus.predict.predict_stack`, the options of
``defocus predict``: alignment where the frames need it, the working size, guided upsampling), so the figures
describe what ``defocus predict`` writes. The baselines take the same options without refinement; the classical
estimator works at the input's size (it has no preferred blur per dioptre). Depth metrics per stack over valid
pixels (ground truth > 0 and inside the depth range, cropped like the outputs where alignment cropped them), then
averaged over stacks; no median scaling (see :mod:`defocus.metrics`). AIF PSNR / SSIM against ``gt_aif.png`` where
present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Sequence

import torch

from torch import nn

from defocus.data.stack import FocalStack
from defocus.errors import InputError
from defocus.metrics import DEPTH_METRIC_KEYS, depth_metrics, mean_metrics, psnr, ssim
from defocus.models.classical import ClassicalEstimator
from defocus.predict import PredictOptions, StackPrediction, predict_stack, resolve_depth_range

METHODS = ("network", "classical")


def fixed_baselines() -> dict[str, nn.Module]:
    """The other variants of the classical baseline, reported beside the adaptive one on request: the fixed
    pre-filters, and the adaptive one followed by the network's non-learned texture-less fill (threshold 0.5, as the
    shipped weights), which isolates what learning adds."""
    return {"classical_sigma0": ClassicalEstimator(presmooth_sigma=0.0),
            "classical_sigma1": ClassicalEstimator(presmooth_sigma=1.0),
            "classical_fill": ClassicalEstimator(cue_fill_threshold=0.5)}


@dataclass
class StackResult:
    name: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # method -> metric -> value
    predictions: dict[str, StackPrediction] = field(default_factory=dict)


def evaluate_stack(
    model: nn.Module | None,
    stack: FocalStack,
    options: PredictOptions | None = None,
    *,
    baseline: nn.Module | None = None,
    extra_baselines: dict[str, nn.Module] | None = None,
    keep_predictions: bool = False,
    **overrides,
) -> StackResult:
    """Metrics of ``model`` (None: the shipped weights) and of the classical ``baseline`` on one stack, each run
    through :func:`~defocus.predict.predict_stack` with ``options`` (keyword ``overrides`` replace its fields).

    The baseline defaults to the adaptive classical estimator (its pre-filter chosen from the stack's own noise);
    ``extra_baselines`` (name → estimator, e.g. :func:`fixed_baselines`) are reported beside it, with the same
    options but no refinement. The stack must hold ground-truth depth.
    """
    if stack.gt_depth is None:
        raise InputError(f"stack {stack.name} has no ground-truth depth (gt_depth.tiff): evaluation needs ground truth")
    options = replace(options or PredictOptions(), **overrides)
    options = replace(options, depth_range=resolve_depth_range(stack, options.depth_range))
    base_options = replace(options, refine_steps=0)
    estimators = {"classical": baseline or ClassicalEstimator(), **(extra_baselines or {})}
    runs = {"network": (model, options), **{name: (est, base_options) for name, est in estimators.items()}}
    res = StackResult(stack.name)
    for method, (estimator, opts) in runs.items():
        pred = predict_stack(estimator, stack, opts)
        x0, y0, x1, y1 = pred.crop_box  # the outputs cover this part of the input when alignment cropped them
        gt = torch.from_numpy(stack.gt_depth)[y0:y1, x0:x1]
        m = depth_metrics(pred.depth_map, gt, depth_range_m=pred.depth_range)
        if stack.gt_aif is not None:
            gt_aif = stack.gt_aif[:, y0:y1, x0:x1]
            m["aif_psnr"] = psnr(pred.aif_image.clamp(0, 1), gt_aif)
            m["aif_ssim"] = ssim(pred.aif_image.clamp(0, 1), gt_aif)
        res.metrics[method] = m
        if keep_predictions:
            res.predictions[method] = pred
    return res


def summarize(results: Sequence[StackResult]) -> dict[str, dict[str, float]]:
    return {m: mean_metrics([r.metrics[m] for r in results]) for m in _methods(results)}


def _methods(results: Sequence[StackResult]) -> list[str]:
    """The methods every result has, in the order of the first."""
    return [m for m in results[0].metrics if all(m in r.metrics for r in results)] if results else list(METHODS)


SHOWN = [("abs_rel", "AbsRel"), ("sq_rel", "SqRel"), ("rmse", "RMSE"), ("rmse_log", "RMSElog"),
         ("delta1", "δ1"), ("delta2", "δ2"), ("delta3", "δ3"), ("aif_psnr", "PSNR"), ("aif_ssim", "SSIM")]


def format_table(results: Sequence[StackResult], markdown: bool = False) -> str:
    """A per-stack + mean table, network and classical side by side."""
    keys = [k for k, _ in SHOWN if all(k in r.metrics["network"] for r in results)]
    heads = ["stack", "method"] + [dict(SHOWN)[k] for k in keys]
    rows = []
    for r in results:
        for m in _methods(results):
            rows.append([r.name, m] + [f"{r.metrics[m][k]:.3f}" for k in keys])
    mean = summarize(results)
    for m in _methods(results):
        rows.append([f"mean ({len(results)})", m] + [f"{mean[m][k]:.3f}" for k in keys])
    if markdown:
        out = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(heads, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*heads)] + [fmt.format(*r) for r in rows])


def results_to_json(results: Sequence[StackResult], extra: dict | None = None) -> str:
    data = {
        "stacks": [{"name": r.name, **{m: r.metrics[m] for m in _methods(results)}} for r in results],
        "mean": summarize(results),
        "metric_keys": list(DEPTH_METRIC_KEYS),
        **(extra or {}),
    }
    return json.dumps(data, indent=2)
