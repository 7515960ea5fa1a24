"""Evaluation of stack folders: the network and the classical baseline side by side.

Depth metrics per stack over valid pixels (ground truth > 0 and inside the depth range), then averaged over
stacks; no median scaling (see :mod:`defocus.metrics`). AIF PSNR / SSIM against ``gt_aif.png`` where present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from torch import nn

from defocus.data.folders import read_stack
from defocus.data.stack import FocalStack
from defocus.errors import DefocusError
from defocus.metrics import DEPTH_METRIC_KEYS, depth_metrics, mean_metrics, psnr, ssim
from defocus.models.classical import ClassicalEstimator
from defocus.models.prediction import Prediction
from defocus.optics.forward import ForwardModel
from defocus.predict import predict_stack, resolve_depth_range

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
    predictions: dict[str, Prediction] = field(default_factory=dict)


def evaluate_stack(
    model: nn.Module,
    stack: FocalStack,
    depth_range: tuple[float, float] | None = None,
    refine_steps: int = 0,
    keep_predictions: bool = False,
    refine_model: ForwardModel | str = "auto",
    baseline: nn.Module | None = None,
    extra_baselines: dict[str, nn.Module] | None = None,
) -> StackResult:
    """Metrics of ``model`` (with optional refinement) and of the classical ``baseline`` on one stack.

    The baseline defaults to the adaptive classical estimator (its pre-filter chosen from the stack's own noise);
    ``extra_baselines`` (name → estimator, e.g. :func:`fixed_baselines`) are reported beside it.
    """
    if stack.gt_depth is None:
        raise DefocusError(f"stack {stack.name} has no ground-truth depth (gt_depth.tiff): "
                           "evaluation needs ground truth")
    dr = resolve_depth_range(stack, depth_range)
    gt = torch.from_numpy(stack.gt_depth)
    res = StackResult(stack.name)
    net = predict_stack(model, stack, dr, refine_steps=refine_steps, refine_model=refine_model)
    estimators = {"classical": baseline or ClassicalEstimator(), **(extra_baselines or {})}
    preds = {"network": net, **{name: predict_stack(est, stack, dr) for name, est in estimators.items()}}
    for method, pred in preds.items():
        m = depth_metrics(pred.depth_map, gt, depth_range_m=dr)
        if stack.gt_aif is not None:
            m["aif_psnr"] = psnr(pred.aif_image.clamp(0, 1), stack.gt_aif)
            m["aif_ssim"] = ssim(pred.aif_image.clamp(0, 1), stack.gt_aif)
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


def evaluate_folders(
    model: nn.Module,
    folders: Sequence[str | Path],
    depth_range: tuple[float, float] | None = None,
    refine_steps: int = 0,
    progress: bool = True,
    refine_model: ForwardModel | str = "auto",
    extra_baselines: dict[str, nn.Module] | None = None,
) -> list[StackResult]:
    """:func:`evaluate_stack` on every stack folder (read with ground truth), one stack in memory at a time."""
    from tqdm import tqdm

    results = []
    for folder in tqdm(list(folders), desc="evaluate", disable=not progress or len(folders) < 2, leave=False):
        stack = read_stack(folder)
        results.append(evaluate_stack(model, stack, depth_range, refine_steps, refine_model=refine_model,
                                      extra_baselines=extra_baselines))
    return results


def results_to_json(results: Sequence[StackResult], extra: dict | None = None) -> str:
    data = {
        "stacks": [{"name": r.name, **{m: r.metrics[m] for m in _methods(results)}} for r in results],
        "mean": summarize(results),
        "metric_keys": list(DEPTH_METRIC_KEYS),
        **(extra or {}),
    }
    return json.dumps(data, indent=2)
