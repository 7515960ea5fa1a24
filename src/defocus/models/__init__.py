"""Networks: DAIF-Net and its registered variants (see :func:`create_model`)."""

from defocus.models.daifnet import DAIFNet, DAIFNetConfig, count_parameters, create_model, list_models

__all__ = ["DAIFNet", "DAIFNetConfig", "count_parameters", "create_model", "list_models"]
