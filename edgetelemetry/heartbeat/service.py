"""botocore's ``sagemaker-edge`` service model: the one place it is loaded (once, on first use).

The device side and the endpoint read the same model: operation names and HTTP paths, input
shapes, named shapes.  Importing this module imports no botocore.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from botocore.model import OperationModel, ServiceModel, Shape, StructureShape

__all__ = ["SERVICE_NAME", "SIGNING_NAME", "input_shape", "operations", "service_model", "shape"]

SERVICE_NAME = "sagemaker-edge"
SIGNING_NAME = "sagemaker"  # the model's signingName: what SigV4 scopes a request to


@functools.cache
def service_model() -> ServiceModel:
    """botocore's ``sagemaker-edge`` model (loading takes a few milliseconds)."""
    import botocore.session  # deferred: importing botocore is not free

    return botocore.session.get_session().get_service_model(SERVICE_NAME)


def input_shape(operation: str) -> StructureShape:
    """The input shape of ``operation`` (``SendHeartbeat``, ``GetDeployments``, ...)."""
    model = service_model()
    if operation not in model.operation_names:
        raise ValueError(
            f"unknown sagemaker-edge operation {operation!r}; "
            f"known: {', '.join(model.operation_names)}"
        )
    from botocore.model import StructureShape

    shape_ = model.operation_model(operation).input_shape
    assert isinstance(shape_, StructureShape)  # every operation of this model has an input
    return shape_


@functools.cache
def shape(name: str) -> Shape:
    """A named shape of the model (``EdgeDeployment``, ``DeviceName``...).

    One object per name: botocore builds a new one on every lookup, and the validator compiles
    each shape object once.
    """
    return service_model().shape_for(name)


@functools.cache
def operations() -> dict[str, OperationModel]:
    """``request path -> operation model`` for every POST operation of the model."""
    model = service_model()
    routes: dict[str, OperationModel] = {}
    for name in model.operation_names:
        op = model.operation_model(name)
        if op.http.get("method", "POST") == "POST":
            routes[op.http.get("requestUri", "/" + name)] = op
    return routes
