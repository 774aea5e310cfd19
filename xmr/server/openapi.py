"""The OpenAPI 3.1 description of the server's API, served at ``/api/openapi.json``.

Written out by hand (the API is small) and tested against the routes the app
really has; the search document itself is the ``xmr-search/1`` JSON schema
shipped in ``xmr/data/search.schema.json``.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from xmr import __version__, media

_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_SEARCH_REQUEST: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "q": {"type": "string", "description": 'query language as in the CLI: "dog" + 2:"beach" - "people"; '
              "every term is text (files are uploaded, never named)"},
        "parts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["value"],
                "properties": {
                    "kind": {"const": "text"},
                    "value": {"type": "string"},
                    "weight": {"type": "number", "default": 1.0},
                },
            },
        },
        "like": {
            "description": "catalogue id(s) of indexed files to use as query parts ('more like this')",
            "oneOf": [{"type": "integer"}, {"type": "array", "items": {"type": "integer"}}],
        },
        "type": {"description": "image, audio and/or text", "oneOf": [{"type": "string"}, {"type": "array"}]},
        "under": {"description": "only files under these folders", "oneOf": [{"type": "string"}, {"type": "array"}]},
        "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 10},
        "min_score": {"type": "number"},
        "explain": {"type": "boolean", "default": False},
        "all_segments": {"type": "boolean", "default": False},
        "exact": {"type": "boolean", "default": False},
        "after": {"type": "string", "description": "only files taken (else modified) on or after this date (ISO 8601)"},
        "before": {"type": "string", "description": "only files taken (else modified) before this date (ISO 8601)"},
        "camera": {"type": "string", "description": "only photos whose camera make or model contains this"},
        "near": {"description": "only photos taken within KM (default 1) of a place: 'LAT,LON[,KM]' or [lat, lon, km]",
                 "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "number"}}]},
        "sort": {"enum": ["score", "date"], "default": "score",
                 "description": "order of the top k: by score, or newest first"},
        "match": {"enum": ["both", "semantic", "keyword"], "default": "both",
                  "description": "fuse the keyword index's ranking with the semantic one, or use one alone"},
        "keywords": {"type": "string", "description": "the keyword side's query (default: q's positive terms; "
                     "a double-quoted phrase is a phrase)"},
        "file_weights": {"type": "array", "items": {"type": "number"},
                         "description": "multipart only: weight of each uploaded file, in order"},
    },
}


def openapi_document() -> dict[str, Any]:
    schema = json.loads(resources.files("xmr").joinpath("data/search.schema.json").read_text())
    defs = schema.pop("$defs", {})
    schema.pop("$schema", None)
    schema.pop("$id", None)
    # the JSON schema's local refs point at #/$defs; in OpenAPI they live under components
    text = json.dumps({"SearchDocument": schema, **defs}).replace("#/$defs/", "#/components/schemas/")
    components = json.loads(text)
    # result types and upload fields are the registered media kinds' (xmr.media)
    names = list(media.names())
    components["result"]["properties"]["modality"]["enum"] = names
    components["SearchRequest"] = request = json.loads(json.dumps(_SEARCH_REQUEST))
    request["properties"]["type"] = {
        "description": "result types: " + ", ".join(names),
        "oneOf": [{"enum": names}, {"type": "array", "items": {"enum": names}}],
    }
    uploads = {k.query_kind: {"type": "string", "format": "binary"} for k in media.kinds() if k.query_kind}
    components["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "exit_code": {"type": "integer"}},
    }
    doc_response = {
        "description": "an xmr-search/1 document; each result also has file_id and signed urls (for /api/files)",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SearchDocument"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "xmr serve", "version": __version__},
        "components": {
            "schemas": components,
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "description": "the token in INDEX/server.json"},
            },
        },
        "security": [{"token": []}],
        "paths": {
            "/api/search": {
                "post": {
                    "summary": "Search the index (same query language and options as `xmr search`)",
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "query": {"type": "string", "description": "SearchRequest as JSON"},
                                        "file": {"type": "string", "format": "binary",
                                                 "description": "a media query, kind found from its content"},
                                        **uploads,
                                    },
                                }
                            },
                        }
                    },
                    "responses": {"200": doc_response, "400": _ERROR, "413": _ERROR, "422": _ERROR},
                }
            },
            "/api/status": {"get": {"summary": "What the index holds and what the server keeps warm",
                                    "responses": {"200": {"description": "as `xmr status --json`, plus server"}}}},
            "/api/dupes": {"get": {
                "summary": "Groups of near-duplicate images and audio re-encodes (as `xmr dupes --json`); lists only",
                "parameters": [
                    {"name": "type", "in": "query", "schema": {"enum": ["image", "audio"]}},
                    {"name": "threshold", "in": "query", "schema": {"type": "number"},
                     "description": "least cosine of a pair (default 0.90 images, 0.95 audio)"},
                ],
                "responses": {
                    "200": {"description": "{groups: [{modality, files: [{path, similarity, file_id, urls}]}]}"},
                    "400": _ERROR,
                },
            }},
            "/api/files/{file_id}": {
                "get": {
                    "summary": "One indexed file by catalogue id: the original, its thumbnail or playable audio",
                    "parameters": [
                        {"name": "file_id", "in": "path", "required": True, "schema": {"type": "integer"}},
                        {"name": "kind", "in": "query", "schema": {"enum": ["original", "thumb", "audio"]}},
                        {"name": "exp", "in": "query", "schema": {"type": "integer"},
                         "description": "with sig: a signed URL from a result's urls (no token needed)"},
                        {"name": "sig", "in": "query", "schema": {"type": "string"}},
                        {"name": "Range", "in": "header", "schema": {"type": "string"},
                         "description": "one bytes= range"},
                    ],
                    "responses": {
                        "200": {"description": "the whole file"},
                        "206": {"description": "the requested range"},
                        "404": _ERROR,
                        "409": {"description": "the file changed since it was indexed"},
                        "416": {"description": "range not satisfiable"},
                    },
                }
            },
            "/api/ping": {"get": {"summary": "Liveness (the CLI's 200 ms probe)",
                                  "responses": {"200": {"description": "ok"}}}},
            "/api/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "ok"}}}},
        },
    }
