"""Estimators behind one factory, all returning one :class:`Prediction`: DAIF-Net variants and the classical
baseline (see :func:`create_model`)."""

from defocus.models.classical import ClassicalEstimator, classical_depth_from_focus
from defocus.models.daifnet import DAIFNet, DAIFNetConfig
from defocus.models.factory import DEFAULT_MODEL, MODEL_REGISTRY, count_parameters, create_model, list_models
from defocus.models.prediction import Prediction

__all__ = [
    "DAIFNet",
    "DAIFNetConfig",
    "ClassicalEstimator",
    "classical_depth_from_focus",
    "DEFAULT_MODEL",
    "MODEL_REGISTRY",
    "Prediction",
    "count_parameters",
    "create_model",
    "list_models",
]
