//! The gateway's HTTP API: `GET /api/v1/devices`, `GET /api/v1/releases`, `GET /metrics`, and the
//! control plane: rollouts and tokens, behind bearer tokens with roles (`crate::control`).
//!
//! | route | role |
//! |---|---|
//! | `GET /api/v1/rollouts`, `GET /api/v1/rollouts/{id}` | viewer |
//! | `POST /api/v1/rollouts` | operator |
//! | `POST /api/v1/rollouts/{id}/start` (`pause`, `resume`, `stop`) | operator |
//! | `POST /api/v1/rollouts/{id}/approve` (`deny`), never by the creator's token | approver |
//! | `GET`/`POST /api/v1/tokens`, `DELETE /api/v1/tokens/{id}` | admin |
//!
//! `GET /api/v1/devices`, `/api/v1/releases` and `/metrics` need any live token too, unless the
//! gateway's `api_open_reads` is set. No token: 401. A token without the role: 403. A transition the rollout's state does not allow:
//! 409. A malformed rollout: 422. Errors are `{"error": "..."}`.

use std::net::SocketAddr;

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Json, Router,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use wardswarm_node::rollout::{RolloutError, RolloutSpec};

use crate::{
    control::{ControlError, Permission, Principal, Role},
    gateway::ApiState,
};

/// The older read routes need a token unless the config opens them (`api_open_reads`).
fn reader(s: &ApiState, h: &HeaderMap) -> Result<(), ApiError> {
    if !s.open_reads() {
        caller(s, h, Permission::Read, "read", "-")?;
    }
    Ok(())
}

async fn devices(State(s): State<ApiState>, h: HeaderMap) -> Result<Response, ApiError> {
    reader(&s, &h)?;
    Ok(Json(s.devices()).into_response())
}

async fn releases(State(s): State<ApiState>, h: HeaderMap) -> Result<Response, ApiError> {
    reader(&s, &h)?;
    Ok(Json(s.releases()).into_response())
}

async fn metrics(State(s): State<ApiState>, h: HeaderMap) -> Result<Response, ApiError> {
    reader(&s, &h)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics(),
    )
        .into_response())
}

/// An API error: its status and message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let code = match &e {
            ControlError::NoRollout(_) | ControlError::NoToken(_) => StatusCode::NOT_FOUND,
            ControlError::Rollout(RolloutError::Transition { .. }) | ControlError::LastAdmin(_) => {
                StatusCode::CONFLICT
            }
            ControlError::Rollout(RolloutError::FourEyes { .. }) => StatusCode::FORBIDDEN,
            ControlError::Rollout(RolloutError::Invalid(_)) | ControlError::BadName(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ControlError::Db(_) | ControlError::Audit(_) | ControlError::TokenFile(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        Self(code, e.to_string())
    }
}

/// The caller, if its bearer token is live and its role has `need`; a refusal of a known caller
/// for want of the role is audited as `action` on `target`.
fn caller(
    s: &ApiState,
    h: &HeaderMap,
    need: Permission,
    action: &str,
    target: &str,
) -> Result<Principal, ApiError> {
    let token = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "a bearer token is required (Authorization: Bearer wst_...)".into(),
            )
        })?;
    let p = s
        .control()
        .authenticate(token.trim())
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "unknown or revoked token".into()))?;
    if !p.role.may(need) {
        if need != Permission::Read {
            s.control().refused_by_role(&p, action, target);
        }
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{} may not do this", p.role.token_phrase()),
        ));
    }
    Ok(p)
}

async fn list_rollouts(State(s): State<ApiState>, h: HeaderMap) -> Result<Response, ApiError> {
    caller(&s, &h, Permission::Read, "rollout.list", "-")?;
    Ok(Json(s.control().rollouts()).into_response())
}

async fn show_rollout(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<u64>,
) -> Result<Response, ApiError> {
    caller(&s, &h, Permission::Read, "rollout.show", "-")?;
    let r = s.control().rollout(id).ok_or(ControlError::NoRollout(id))?;
    Ok(Json(r).into_response())
}

async fn create_rollout(
    State(s): State<ApiState>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let p = caller(&s, &h, Permission::Operate, "rollout.create", "-")?;
    let spec: RolloutSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("rollout: {e}")))?;
    if let Some(w) = &spec.window {
        wardswarm_node::rollout::Window::new(w.clone())
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    }
    let targets = s.targets_of(&spec.release).ok_or_else(|| {
        ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "release {:?} is not a release this gateway has verified (see /api/v1/releases)",
                spec.release
            ),
        )
    })?;
    let r = s.control().create_rollout(s.db(), &p, spec, &targets)?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct Remark {
    #[serde(default)]
    remark: String,
    /// For `override`: the device whose gate is overridden.
    #[serde(default)]
    device: Option<String>,
}

async fn act(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path((id, action)): Path<(u64, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let need = match action.as_str() {
        "approve" | "deny" => Permission::Approve,
        "start" | "pause" | "resume" | "stop" => Permission::Operate,
        "override" => Permission::Admin,
        other => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                "no rollout action {other:?}: approve, deny, start, pause, resume, stop, override"
            ),
            ))
        }
    };
    let p = caller(&s, &h, need, &format!("rollout.{action}"), &id.to_string())?;
    let remark: Remark = if body.is_empty() {
        Remark::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("body: {e}")))?
    };
    let r = if action == "override" {
        let Some(device) = remark.device.as_deref() else {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "override needs {\"device\": \"<device id>\", \"remark\": \"why\"}".into(),
            ));
        };
        if remark.remark.trim().is_empty() {
            return Err(ApiError(
                StatusCode::UNPROCESSABLE_ENTITY,
                "override needs a remark saying why the clinical-use gate is overridden".into(),
            ));
        }
        s.control()
            .override_gate(s.db(), &p, id, device, &remark.remark)?
    } else {
        s.control().act(s.db(), &p, id, &action, &remark.remark)?
    };
    Ok(Json(r).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
}

async fn list_tokens(State(s): State<ApiState>, h: HeaderMap) -> Result<Response, ApiError> {
    caller(&s, &h, Permission::Admin, "token.list", "-")?;
    let v: Vec<serde_json::Value> = s
        .control()
        .tokens()
        .into_iter()
        .map(|t| {
            serde_json::json!({"id": t.id, "name": t.name, "role": t.role,
                "created": t.created, "revoked": t.revoked})
        })
        .collect();
    Ok(Json(v).into_response())
}

async fn create_token(
    State(s): State<ApiState>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let p = caller(&s, &h, Permission::Admin, "token.create", "-")?;
    let t: NewToken = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("token: {e}")))?;
    let (rec, token) = s.control().create_token(s.db(), &p, &t.name, t.role)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"id": rec.id, "name": rec.name, "role": rec.role, "token": token})),
    )
        .into_response())
}

async fn revoke_token(
    State(s): State<ApiState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let p = caller(&s, &h, Permission::Admin, "token.revoke", &id)?;
    s.control().revoke_token(s.db(), &p, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}

/// The router. Its paths are those of [`crate::openapi::ROUTES`] (`tests/rollouts.rs` calls each).
pub fn router(s: ApiState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/releases", get(releases))
        .route("/metrics", get(metrics))
        .route("/api/v1/rollouts", get(list_rollouts).post(create_rollout))
        .route("/api/v1/rollouts/{id}", get(show_rollout))
        .route("/api/v1/rollouts/{id}/{action}", post(act))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .with_state(s)
}

/// Loads the API's TLS certificate and key.
pub async fn tls_config(
    t: &crate::gateway::ApiTls,
) -> Result<axum_server::tls_rustls::RustlsConfig, crate::GatewayError> {
    axum_server::tls_rustls::RustlsConfig::from_pem_file(&t.cert, &t.key)
        .await
        .map_err(|e| {
            crate::GatewayError::Config(format!(
                "api_tls: certificate {} with key {}: {e}",
                t.cert.display(),
                t.key.display()
            ))
        })
}

/// Serves the API on a bound listener until `stop`, over TLS if `tls` is given; returns the bound
/// address.
pub fn serve(
    s: ApiState,
    l: tokio::net::TcpListener,
    stop: CancellationToken,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
) -> std::io::Result<SocketAddr> {
    let a = l.local_addr()?;
    let app = router(s);
    if let Some(tls) = tls {
        let server = axum_server::from_tcp_rustls(l.into_std()?, tls)?;
        let handle = axum_server::Handle::new();
        let h = handle.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        });
        tokio::spawn(async move {
            if let Err(e) = server.handle(handle).serve(app.into_make_service()).await {
                tracing::error!(error = %e, "gateway API (TLS) stopped");
            }
        });
        return Ok(a);
    }
    tokio::spawn(async move {
        let r = axum::serve(l, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "gateway API stopped");
        }
    });
    Ok(a)
}
