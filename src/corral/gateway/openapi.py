"""The OpenAPI 3.0 document of the gateway, served at ``/openapi.json``.

Written by hand from the Open Inference Protocol (KServe v2) REST API and what this gateway
answers; the tests fuzz the running gateway against it (schemathesis), so a response that
drifts from it fails there.
"""

from __future__ import annotations

from typing import Any

from corral.gateway.tensors import DATATYPES

__all__ = ["openapi_schema"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema or _ERROR}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "The request breaks a rule; `error` names the field and the rule.",
        401: "No or wrong `Authorization: Bearer <admin token>`.",
        404: "No such model, version or endpoint.",
        405: "Method not allowed.",
        413: "The body is larger than max_body_bytes.",
        429: "The serving's queue is full (when overload_status is 429); see Retry-After.",
        500: "The model failed on this request; `error` is its message.",
        503: "The serving's queue is full, or it is not running, or the model is unloaded; "
        "see Retry-After.",
        504: "The request's deadline passed.",
    }
    return {str(s): _answer(texts[s]) for s in statuses}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_TIMEOUT = {
    "name": "Corral-Timeout",
    "in": "header",
    "required": False,
    "description": "The request's deadline, in seconds from its arrival.",
    "schema": {"type": "string"},
}
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]


def _model_paths(base: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        base: {
            "get": {
                "summary": "Model metadata",
                "parameters": params,
                "responses": {
                    "200": _answer("The model.", {"$ref": "#/components/schemas/ModelMetadata"}),
                    **_errors(404),
                },
            }
        },
        f"{base}/ready": {
            "get": {
                "summary": "Model readiness: ready only while a partition of its current "
                "version is up",
                "parameters": params,
                "responses": {
                    "200": _answer("Ready.", {"$ref": "#/components/schemas/ModelReady"}),
                    "400": _answer("Not ready.", {"$ref": "#/components/schemas/ModelReady"}),
                    **_errors(404),
                },
            }
        },
        f"{base}/infer": {
            "post": {
                "summary": "Inference",
                "parameters": [*params, _TIMEOUT],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/InferRequest"}
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "The output (JSON, or a JSON header and raw bytes "
                        "with the binary tensor data extension).",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/InferResponse"}
                            },
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },
                    **_errors(400, 404, 413, 429, 500, 503, 504),
                },
            }
        },
    }


def _repository_paths() -> dict[str, Any]:
    body = {
        "required": False,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/RepositoryRequest"}}
        },
    }
    state = {
        "type": "object",
        "required": ["name", "state"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
        },
    }
    return {
        "/v2/repository/index": {
            "post": {
                "summary": "Every model, its version, state and declared versions",
                "security": _AUTH,
                "requestBody": body,
                "responses": {
                    "200": _answer(
                        "The models.",
                        {"type": "array", "items": {"$ref": "#/components/schemas/IndexRow"}},
                    ),
                    **_errors(400, 401, 413),
                },
            }
        },
        "/v2/repository/models/{name}/load": {
            "post": {
                "summary": "Serve the model again; with parameters.version, hot-swap to that "
                "declared version",
                "security": _AUTH,
                "parameters": [_NAME],
                "requestBody": body,
                "responses": {
                    "200": _answer("Loaded.", state),
                    **_errors(400, 401, 404, 413, 500, 503),
                },
            }
        },
        "/v2/repository/models/{name}/unload": {
            "post": {
                "summary": "Take the model off the gateway (the serving keeps running)",
                "security": _AUTH,
                "parameters": [_NAME],
                "requestBody": body,
                "responses": {"200": _answer("Unloaded.", state), **_errors(400, 401, 404, 413)},
            }
        },
    }


def _tensor(output: bool) -> dict[str, Any]:
    props: dict[str, Any] = {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {
            "type": "string",
            "enum": list(DATATYPES),
        },
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    }
    required = ["name", "shape", "datatype"]
    return {"type": "object", "required": required, "properties": props}


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Live": {
        "type": "object",
        "required": ["live"],
        "properties": {"live": {"type": "boolean"}},
    },
    "Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {"ready": {"type": "boolean"}, "error": {"type": "string"}},
    },
    "ModelReady": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {
            "name": {"type": "string"},
            "ready": {"type": "boolean"},
            "error": {"type": "string"},
        },
    },
    "TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
            "outputs": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/TensorMetadata"},
            },
        },
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "properties": {
                    "timeout": {"type": "number", "description": "deadline, microseconds"},
                    "binary_data_output": {"type": "boolean"},
                },
            },
            "inputs": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {"$ref": "#/components/schemas/RequestTensor"},
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string"},
                        "parameters": {
                            "type": "object",
                            "properties": {"binary_data": {"type": "boolean"}},
                        },
                    },
                },
            },
        },
    },
    "RequestTensor": _tensor(False),
    "ResponseTensor": _tensor(True),
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/ResponseTensor"}},
        },
    },
    "RepositoryRequest": {
        "type": "object",
        "properties": {
            "parameters": {
                "type": "object",
                "properties": {"version": {"type": "string"}},
            }
        },
    },
    "IndexRow": {
        "type": "object",
        "required": ["name", "version", "state"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "state": {"type": "string", "enum": ["READY", "UNAVAILABLE"]},
            "versions": {"type": "array", "items": {"type": "string"}},
        },
    },
}


def openapi_schema(*, repository_on: bool) -> dict[str, Any]:
    """The document; the repository endpoints appear only when they are on."""
    from corral import __version__

    paths: dict[str, Any] = {
        "/v2": {
            "get": {
                "summary": "Server metadata",
                "responses": {
                    "200": _answer("The server.", {"$ref": "#/components/schemas/ServerMetadata"})
                },
            }
        },
        "/v2/health/live": {
            "get": {
                "summary": "Liveness: the gateway answers",
                "responses": {"200": _answer("Live.", {"$ref": "#/components/schemas/Live"})},
            }
        },
        "/v2/health/ready": {
            "get": {
                "summary": "Readiness: every model is ready",
                "responses": {
                    "200": _answer("Ready.", {"$ref": "#/components/schemas/Ready"}),
                    "400": _answer("Not ready.", {"$ref": "#/components/schemas/Ready"}),
                },
            }
        },
        **_model_paths("/v2/models/{name}", [_NAME]),
        **_model_paths("/v2/models/{name}/versions/{version}", [_NAME, _VERSION]),
    }
    components: dict[str, Any] = {"schemas": _SCHEMAS}
    if repository_on:
        paths.update(_repository_paths())
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "corral gateway (Open Inference Protocol, KServe v2)",
            "version": __version__,
        },
        "paths": paths,
        "components": components,
    }
