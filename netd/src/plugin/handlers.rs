//! One handler per method of Docker's remote network driver: decode, translate, call
//! the core (`Daemon::docker_*`), encode. dockerd sends its bodies without a JSON
//! content type (and Activate's may be empty), so bodies are decoded here, and every
//! failure is the plugin protocol's `{"Err": ...}`.
use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{header::CONTENT_TYPE, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use log::debug;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use super::{
    translate,
    wire::{self, *},
};
use crate::{daemon::Daemon, error::NetdError, model::fmt_mac};

type D = State<Arc<Daemon>>;

/// A failed call: the status of the core's error and `{"Err": message}`.
pub struct PluginError(NetdError);

impl From<NetdError> for PluginError {
    fn from(e: NetdError) -> Self {
        PluginError(e)
    }
}

impl IntoResponse for PluginError {
    fn into_response(self) -> Response {
        let code =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        log::warn!("docker plugin: {}", self.0);
        reply_with(
            code,
            &ErrResponse {
                err: self.0.to_string(),
            },
        )
    }
}

type Reply = Result<Response, PluginError>;

fn reply_with<T: Serialize>(code: StatusCode, body: &T) -> Response {
    let json = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    (code, [(CONTENT_TYPE, wire::CONTENT_TYPE)], json).into_response()
}

fn reply<T: Serialize>(body: &T) -> Reply {
    Ok(reply_with(StatusCode::OK, body))
}

fn ok() -> Reply {
    reply(&ErrResponse::default())
}

/// The body as `T`; an empty body is `T::default()`.
fn decode<T: DeserializeOwned + Default>(method: &str, body: &Bytes) -> Result<T, PluginError> {
    debug!("docker plugin {method}: {}", String::from_utf8_lossy(body));
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        PluginError(NetdError::InvalidArgument(format!(
            "{method}: malformed request body: {e}"
        )))
    })
}

pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/Plugin.Activate", post(activate))
        .route("/NetworkDriver.GetCapabilities", post(capabilities))
        .route("/NetworkDriver.CreateNetwork", post(create_network))
        .route("/NetworkDriver.DeleteNetwork", post(delete_network))
        .route("/NetworkDriver.CreateEndpoint", post(create_endpoint))
        .route("/NetworkDriver.DeleteEndpoint", post(delete_endpoint))
        .route("/NetworkDriver.EndpointOperInfo", post(endpoint_info))
        .route("/NetworkDriver.Join", post(join))
        .route("/NetworkDriver.Leave", post(leave))
        .route(
            "/NetworkDriver.ProgramExternalConnectivity",
            post(program_external),
        )
        .route(
            "/NetworkDriver.RevokeExternalConnectivity",
            post(revoke_external),
        )
        .route("/NetworkDriver.DiscoverNew", post(discover))
        .route("/NetworkDriver.DiscoverDelete", post(discover))
        .fallback(not_found)
        .with_state(d)
}

/// libnetwork takes a 404 as "not implemented" (e.g. swarm's AllocateNetwork).
async fn not_found(uri: Uri) -> PluginError {
    PluginError(NetdError::NotFound(format!(
        "404 page not found: netd does not implement {}",
        uri.path()
    )))
}

async fn activate(body: Bytes) -> Reply {
    let _: Option<Value> = decode("Plugin.Activate", &body)?;
    reply(&ActivateResponse {
        implements: vec!["NetworkDriver"],
    })
}

async fn capabilities(body: Bytes) -> Reply {
    let _: Option<Value> = decode("GetCapabilities", &body)?;
    reply(&CapabilitiesResponse {
        scope: "local",
        connectivity_scope: "local",
    })
}

async fn create_network(State(d): D, body: Bytes) -> Reply {
    let req: CreateNetworkRequest = decode("CreateNetwork", &body)?;
    d.docker_create_network(translate::network(&req)?).await?;
    ok()
}

async fn delete_network(State(d): D, body: Bytes) -> Reply {
    let req: NetworkRef = decode("DeleteNetwork", &body)?;
    d.docker_delete_network(&req.network_id).await?;
    ok()
}

async fn create_endpoint(State(d): D, body: Bytes) -> Reply {
    let req: CreateEndpointRequest = decode("CreateEndpoint", &body)?;
    let iface = req.interface.unwrap_or_default();
    let addrs =
        translate::endpoint_address(&iface.address, &iface.address_ipv6, &iface.mac_address)?;
    let chosen = d
        .docker_create_endpoint(
            &req.network_id,
            &req.endpoint_id,
            addrs.ip,
            addrs.ip6,
            addrs.mac,
        )
        .await?;
    // Docker sets the MAC we name on the interface in the sandbox; naming the
    // addresses too (either family) would be a change of Docker's IPAM choice, which
    // libnetwork refuses.
    let interface = EndpointInterface {
        mac_address: if addrs.mac.is_some() {
            String::new()
        } else {
            fmt_mac(&chosen)
        },
        ..Default::default()
    };
    reply(&CreateEndpointResponse { interface })
}

async fn delete_endpoint(State(d): D, body: Bytes) -> Reply {
    let req: EndpointRef = decode("DeleteEndpoint", &body)?;
    d.docker_delete_endpoint(&req.endpoint_id).await?;
    ok()
}

async fn endpoint_info(State(d): D, body: Bytes) -> Reply {
    let req: EndpointRef = decode("EndpointOperInfo", &body)?;
    let ep = d.docker_endpoint(&req.endpoint_id).await?;
    let mut value = Map::new();
    value.insert(OPT_MAC.into(), Value::String(fmt_mac(&ep.mac)));
    value.insert(
        OPT_PORTMAP.into(),
        serde_json::to_value(translate::bindings(&ep.ports)).unwrap_or_default(),
    );
    value.insert(
        OPT_EXPOSED.into(),
        serde_json::to_value(translate::transport_ports(&ep.exposed)).unwrap_or_default(),
    );
    reply(&EndpointInfoResponse { value })
}

async fn join(State(d): D, body: Bytes) -> Reply {
    let req: JoinRequest = decode("Join", &body)?;
    let j = d.docker_join(&req.endpoint_id, &req.sandbox_key).await?;
    reply(&JoinResponse {
        interface_name: InterfaceName {
            src_name: j.ifname,
            dst_prefix: "eth".into(),
        },
        gateway: j.gateway.map(|g| g.to_string()).unwrap_or_default(),
        gateway_ipv6: j.gateway6.map(|g| g.to_string()).unwrap_or_default(),
        static_routes: Vec::new(),
        disable_gateway_service: false,
    })
}

async fn leave(State(d): D, body: Bytes) -> Reply {
    let req: EndpointRef = decode("Leave", &body)?;
    d.docker_leave(&req.endpoint_id).await?;
    ok()
}

async fn program_external(State(d): D, body: Bytes) -> Reply {
    let req: JoinRequest = decode("ProgramExternalConnectivity", &body)?;
    let p = translate::ports(&req.options.unwrap_or_default())?;
    d.docker_publish(&req.endpoint_id, p.ports, p.exposed)
        .await?;
    ok()
}

async fn revoke_external(State(d): D, body: Bytes) -> Reply {
    let req: EndpointRef = decode("RevokeExternalConnectivity", &body)?;
    d.docker_unpublish(&req.endpoint_id).await?;
    ok()
}

/// Node discovery is for multi-host drivers: accepted and ignored.
async fn discover(body: Bytes) -> Reply {
    let _: Option<Value> = decode("Discover", &body)?;
    ok()
}
