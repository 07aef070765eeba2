//! The dashboard's HTTP server: routes, the token check, server-sent events.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use peer_node_core::GATHER_TIMEOUT;
use peer_node_core::wire::local::Listing;

use super::auth::Access;
use crate::engine::Shared;

/// How often the page gets a new overview.
pub const UPDATE_EVERY: Duration = Duration::from_secs(1);
/// Most connections served at once (each live page holds one).
const MAX_CONNECTIONS: usize = 64;

const PAGE: &str = include_str!("page.html");

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Accept connections until the runtime stops.
pub(super) async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, access: Access) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::debug!("dashboard accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            continue; // dropped: the client sees the connection close
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (shared, access, open) = (Arc::clone(&shared), access.clone(), Arc::clone(&open));
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let (shared, access) = (Arc::clone(&shared), access.clone());
                async move { Ok::<_, Infallible>(route(req, &shared, &access).await) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("dashboard connection: {e}");
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = "no-store".parse() {
        r.headers_mut().insert(CACHE_CONTROL, v);
    }
    r
}

fn text(status: StatusCode, msg: &str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", format!("{msg}\n"))
}

async fn route(req: Request<Incoming>, shared: &Arc<Shared>, access: &Access) -> Response<Body> {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !access.allows(req.uri().query(), auth) {
        return text(
            StatusCode::UNAUTHORIZED,
            "this dashboard needs its token: open the URL `peer up` printed (it ends in ?token=…)",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "the dashboard is read-only");
    }
    let path = req.uri().path();
    let list = path.strip_prefix("/api/list/").and_then(Listing::from_name);
    match (path, list) {
        ("/", _) => full(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        ("/api/events", _) => events(Arc::clone(shared)),
        ("/api/overview", _) => json_answer(gather(shared, Listing::Overview).await),
        ("/api/timeline", _) => json_answer(
            gather(shared, Listing::Timeline)
                .await
                .map(|g| crate::timeline::chrome_trace(&g)),
        ),
        (_, Some(what)) => json_answer(gather(shared, what).await),
        _ => text(StatusCode::NOT_FOUND, "no such page"),
    }
}

fn json_answer(v: Option<serde_json::Value>) -> Response<Body> {
    match v {
        Some(v) => full(StatusCode::OK, "application/json", v.to_string()),
        None => text(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    }
}

/// A listing from every peer (None: the node is stopping).
pub(crate) async fn gather(shared: &Shared, what: Listing) -> Option<serde_json::Value> {
    let rx = shared.gather(what);
    let answer = tokio::time::timeout(GATHER_TIMEOUT * 2, rx)
        .await
        .ok()?
        .ok()?;
    serde_json::from_str(&answer).ok()
}

/// Server-sent events: an overview at once, then one each [`UPDATE_EVERY`],
/// until the page goes away.
fn events(shared: Arc<Shared>) -> Response<Body> {
    let stream = futures::stream::unfold((shared, true), |(shared, first)| async move {
        if !first {
            tokio::time::sleep(UPDATE_EVERY).await;
        }
        let overview = gather(&shared, Listing::Overview).await?;
        let frame = Frame::data(Bytes::from(format!("data: {overview}\n\n")));
        Some((Ok::<_, Infallible>(frame), (shared, false)))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    if let Ok(v) = "text/event-stream".parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = "no-store".parse() {
        r.headers_mut().insert(CACHE_CONTROL, v);
    }
    r
}
