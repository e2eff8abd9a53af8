//! The OpenAPI 3.1 document of the gateway's API, served at `/api/v1/openapi.json`. It is built
//! from [`ROUTES`], the same table the router's paths come from, and `tests/rollouts.rs` calls every
//! operation it lists against a running gateway, so the document cannot name a route that is not
//! there.

use serde_json::{json, Map, Value};

/// One operation: method, path, the role it needs (`None`: no token), what it does, its success
/// status.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method, lower case.
    pub method: &'static str,
    /// Path, with `{id}`-style parameters.
    pub path: &'static str,
    /// The role needed, or `None` for an open route.
    pub role: Option<&'static str>,
    /// One line.
    pub summary: &'static str,
    /// The status of success.
    pub ok: u16,
}

const fn r(
    method: &'static str,
    path: &'static str,
    role: Option<&'static str>,
    summary: &'static str,
    ok: u16,
) -> Route {
    Route {
        method,
        path,
        role,
        summary,
        ok,
    }
}

/// Every operation of the API.
pub const ROUTES: &[Route] = &[
    r("get", "/api/v1/openapi.json", None, "This document", 200),
    r(
        "get",
        "/api/v1/devices",
        Some("viewer"),
        "Devices: release, state, progress, last seen (open with api_open_reads)",
        200,
    ),
    r(
        "get",
        "/api/v1/releases",
        Some("viewer"),
        "Releases on the origin: verified or refused, and why (open with api_open_reads)",
        200,
    ),
    r(
        "get",
        "/metrics",
        Some("viewer"),
        "Prometheus metrics (open with api_open_reads)",
        200,
    ),
    r(
        "get",
        "/api/v1/rollouts",
        Some("viewer"),
        "Every rollout",
        200,
    ),
    r(
        "post",
        "/api/v1/rollouts",
        Some("operator"),
        "Create a rollout; it waits for approval",
        201,
    ),
    r(
        "get",
        "/api/v1/rollouts/{id}",
        Some("viewer"),
        "One rollout, its groups and each device's status",
        200,
    ),
    r(
        "post",
        "/api/v1/rollouts/{id}/approve",
        Some("approver"),
        "Approve (not with the token that created it)",
        200,
    ),
    r(
        "post",
        "/api/v1/rollouts/{id}/deny",
        Some("approver"),
        "Deny (not with the token that created it)",
        200,
    ),
    r(
        "post",
        "/api/v1/rollouts/{id}/start",
        Some("operator"),
        "Start a ready rollout",
        200,
    ),
    r(
        "post",
        "/api/v1/rollouts/{id}/pause",
        Some("operator"),
        "Hold devices that have not started installing",
        200,
    ),
    r(
        "post",
        "/api/v1/rollouts/{id}/resume",
        Some("operator"),
        "Go on after a pause, a QA hold or an error pause",
        200,
    ),
    r(
        "post",
        "/api/v1/rollouts/{id}/stop",
        Some("operator"),
        "Stop: devices not done are canceled",
        200,
    ),
    r(
        "post",
        "/api/v1/rollouts/{id}/override",
        Some("admin"),
        "Override one device's clinical-use gate in this rollout (body: device and remark; audited)",
        200,
    ),
    r(
        "get",
        "/api/v1/tokens",
        Some("admin"),
        "Every API token, without secrets",
        200,
    ),
    r(
        "post",
        "/api/v1/tokens",
        Some("admin"),
        "Make a token; the answer shows it once",
        201,
    ),
    r(
        "delete",
        "/api/v1/tokens/{id}",
        Some("admin"),
        "Revoke a token",
        204,
    ),
];

fn schemas() -> Value {
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
        "Remark": {"type": "object", "properties": {"remark": {"type": "string"},
            "device": {"type": "string", "description": "override only: the device whose gate is overridden"}}},
        "NewToken": {"type": "object", "required": ["name", "role"], "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$"},
            "role": {"type": "string", "enum": ["viewer", "operator", "approver", "admin"]}}},
        "Window": {"type": "object", "required": ["schedule", "duration", "timezone"], "properties": {
            "schedule": {"type": "string", "description": "five cron fields, local time"},
            "duration": {"type": "string", "examples": ["6h"]},
            "timezone": {"type": "string", "examples": ["Europe/Berlin"]}}},
        "Group": {"type": "object", "required": ["name", "select"], "properties": {
            "name": {"type": "string"},
            "select": {"type": "object", "required": ["by"], "properties": {
                "by": {"type": "string", "enum": ["devices", "product", "hardware", "labels", "percent", "rest"]},
                "ids": {"type": "array", "items": {"type": "string"}},
                "product": {"type": "string"}, "hardware": {"type": "string"},
                "labels": {"type": "array", "items": {"type": "string"}},
                "percent": {"type": "number"}}},
            "success_percent": {"type": "integer", "minimum": 0, "maximum": 100},
            "success_action": {"type": "string", "enum": ["next_group", "pause"]},
            "error": {"$ref": "#/components/schemas/ErrorCondition"}}},
        "ErrorCondition": {"type": "object", "properties": {
            "percent": {"type": "integer"}, "count": {"type": "integer"}, "min_sample": {"type": "integer"}}},
        "RolloutSpec": {"type": "object", "required": ["name", "release", "groups"], "properties": {
            "name": {"type": "string"}, "release": {"type": "string"},
            "action": {"type": "string", "enum": ["forced", "soft", "download_only"]},
            "groups": {"type": "array", "items": {"$ref": "#/components/schemas/Group"}},
            "error": {"$ref": "#/components/schemas/ErrorCondition"},
            "window": {"$ref": "#/components/schemas/Window"}}},
        "Rollout": {"type": "object", "properties": {
            "id": {"type": "integer"},
            "spec": {"$ref": "#/components/schemas/RolloutSpec"},
            "state": {"type": "string", "enum": ["creating", "waiting_for_approval", "approval_denied", "ready", "running", "paused", "stopped", "finished"]},
            "created_by": {"type": "string"},
            "paused_reason": {"type": ["string", "null"]},
            "groups": {"type": "array", "items": {"type": "object", "properties": {
                "state": {"type": "string", "enum": ["scheduled", "running", "finished", "error"]},
                "devices": {"type": "object", "additionalProperties": {"type": "string",
                    "enum": ["scheduled", "downloading", "downloaded", "gated", "installing", "rebooting", "finished", "error", "canceled"]}}}}}}}
    })
}

fn body_of(op: &Route) -> Option<&'static str> {
    match (op.method, op.path) {
        ("post", "/api/v1/rollouts") => Some("RolloutSpec"),
        ("post", "/api/v1/tokens") => Some("NewToken"),
        ("post", _) => Some("Remark"),
        _ => None,
    }
}

/// The document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in ROUTES {
        let mut o = json!({
            "summary": op.summary,
            "responses": { op.ok.to_string(): {"description": "success"} },
        });
        if let Some(role) = op.role {
            o["security"] = json!([{"bearer": []}]);
            o["x-wardswarm-role"] = json!(role);
            for (code, what) in [
                ("401", "no token, or an unknown one"),
                ("403", "the token's role may not"),
            ] {
                o["responses"][code] = json!({"description": what,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
            }
        }
        if op.path.contains("{id}") {
            o["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
            o["responses"]["404"] = json!({"description": "no such rollout or token"});
        }
        if op.path.starts_with("/api/v1/rollouts/{id}/") {
            o["responses"]["409"] =
                json!({"description": "the rollout's state does not allow this"});
        }
        if let Some(schema) = body_of(op) {
            o["requestBody"] = json!({"required": schema != "Remark",
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
            o["responses"]["422"] = json!({"description": "malformed body"});
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Wardswarm gateway API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "The ward gateway: devices, releases, rollouts and API tokens. See docs/rollouts.md."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "wst_<id>_<secret>"}},
            "schemas": schemas()
        }
    })
}
