//! The HTTP face of the sandbox API: a `tower::Service` that `kube::Client` talks to directly,
//! with the real server's paths, verbs, content types, watch framing and error bodies, a request
//! log and fault injection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::select::{FieldSelector, LabelSelector};
use super::{
    ApiError, ApiServer, ResourceType, Target, WatchItem, Write, find_resource, scale_view,
};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// How often an idle watch gets a BOOKMARK, as the real server does about once a minute.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// One request the API served.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub verb: &'static str,
    pub kind: String,
    /// The resource's API group and plural, as RBAC names it.
    #[serde(skip)]
    pub group: &'static str,
    #[serde(skip)]
    pub resource: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub code: u16,
    /// When it was served, on the sandbox clock.
    pub at: jiff::Timestamp,
    /// When it was served, in real time, for latency measurements.
    #[serde(skip)]
    pub wall: std::time::Instant,
    /// A successful update or patch that changed nothing (no new resourceVersion).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub noop: bool,
    /// How a write was asked for.
    #[serde(flatten)]
    pub shape: Shape,
}

/// How a write was asked for: the patch type, the field manager and whether it forces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Shape {
    /// `apply` (server-side apply) or `merge` (JSON merge patch), for a patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// The uid a delete is conditioned on (`preconditions.uid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precondition_uid: Option<String>,
}

impl RequestRecord {
    /// Writes change state; reads, lists and watches do not.
    pub fn is_write(&self) -> bool {
        matches!(self.verb, "create" | "update" | "patch" | "delete")
    }
}

/// A fault to inject: the next `times` requests matching `verb`, `kind` and `name` fail with
/// `code` (and `message`, as admission would word it, when given).
#[derive(Clone, Debug, Default)]
pub struct Fault {
    pub verb: Option<&'static str>,
    pub kind: Option<&'static str>,
    pub name: Option<String>,
    pub code: u16,
    pub message: Option<String>,
    pub times: u32,
}

#[derive(Default)]
pub(crate) struct Traffic {
    log: Mutex<Vec<RequestRecord>>,
    faults: Mutex<Vec<Fault>>,
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)).boxed_unsync())
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

fn error_response(error: &ApiError) -> Response<Body> {
    let mut response = json_response(error.code, &error.status());
    if error.code == 429
        && let Ok(value) = header::HeaderValue::from_str("1")
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The parts of a request path: `/api/v1/namespaces/NS/pods/NAME/SUB` and the like.
struct Route {
    resource: &'static ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource: {path}"),
            ));
        }
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("the server could not find the requested resource: {path}"),
            ));
        }
    };
    let resource = find_resource(group, version, plural).ok_or_else(|| {
        ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource: {path}"),
        )
    })?;
    Ok(Route {
        resource,
        namespace,
        name,
        subresource,
    })
}

fn verb_of(method: &Method, route: &Route, query: &HashMap<String, String>) -> &'static str {
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    match (method.as_str(), route.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => "unknown",
    }
}

/// The request's `labelSelector` and `fieldSelector`, empty when absent.
fn selectors(
    resource: &ResourceType,
    query: &HashMap<String, String>,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let param = |name: &str| query.get(name).map(String::as_str).unwrap_or_default();
    Ok((
        LabelSelector::parse(param("labelSelector"))?,
        FieldSelector::parse(resource.plural, param("fieldSelector"))?,
    ))
}

fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .or_else(|_| serde_yaml::from_slice(bytes))
        .map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })
}

impl ApiServer {
    /// Serves this API over HTTP on `listener` until `stop` resolves, so that a separate process
    /// (`workerpool-operator run`, `kubectl`) can talk to it through a kubeconfig.
    pub async fn serve_http(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let server = self.clone();
            async move {
                server
                    .cpu
                    .metered(server.clone().handle(request))
                    .await
                    .map(axum::body::Body::new)
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
    }

    /// A kubeconfig (YAML) that points at this API served on `address`.
    pub fn kubeconfig(address: std::net::SocketAddr) -> String {
        use kube::config::{
            AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
        };
        const NAME: &str = "sandbox";
        let config = Kubeconfig {
            api_version: Some("v1".into()),
            kind: Some("Config".into()),
            clusters: vec![NamedCluster {
                name: NAME.into(),
                cluster: Some(Cluster {
                    server: Some(format!("http://{address}")),
                    ..Cluster::default()
                }),
                ..NamedCluster::default()
            }],
            auth_infos: vec![NamedAuthInfo {
                name: NAME.into(),
                auth_info: Some(AuthInfo::default()),
                ..NamedAuthInfo::default()
            }],
            contexts: vec![NamedContext {
                name: NAME.into(),
                context: Some(Context {
                    cluster: NAME.into(),
                    user: Some(NAME.into()),
                    namespace: Some("default".into()),
                    ..Context::default()
                }),
                ..NamedContext::default()
            }],
            current_context: Some(NAME.into()),
            ..Kubeconfig::default()
        };
        serde_yaml::to_string(&config).unwrap_or_default()
    }

    /// A `kube::Client` whose requests this server answers in-process.
    pub fn client(self: &Arc<Self>) -> kube::Client {
        kube::Client::new(SandboxService(self.clone()), "default")
    }

    /// Makes the next matching requests fail.
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut faults) = self.traffic.faults.lock() {
            faults.push(fault);
        }
    }

    /// Every request served so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.traffic
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    pub fn request_count(&self) -> usize {
        self.traffic.log.lock().map(|l| l.len()).unwrap_or_default()
    }

    /// Forgets every fault not yet served.
    pub fn clear_faults(&self) {
        if let Ok(mut faults) = self.traffic.faults.lock() {
            faults.clear();
        }
    }

    fn take_fault(&self, verb: &str, kind: &str, name: Option<&str>) -> Option<ApiError> {
        let mut faults = self.traffic.faults.lock().ok()?;
        let fault = faults.iter_mut().find(|f| {
            f.times > 0
                && f.verb.is_none_or(|v| v == verb)
                && f.kind.is_none_or(|k| k == kind)
                && f.name.as_deref().is_none_or(|n| Some(n) == name)
        })?;
        fault.times -= 1;
        let (code, message) = (fault.code, fault.message.clone());
        faults.retain(|f| f.times > 0);
        if let Some(message) = message {
            let reason = match code {
                422 => "Invalid",
                403 => "Forbidden",
                _ => "BadRequest",
            };
            return Some(ApiError::new(code, reason, message));
        }
        Some(match code {
            409 => ApiError::new(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again (injected)",
            ),
            429 => ApiError::new(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later (injected)",
            ),
            code => ApiError::new(
                code,
                "InternalError",
                "an error on the server (\"injected fault\") has prevented the request from succeeding",
            ),
        })
    }

    fn record(
        &self,
        verb: &'static str,
        route: Option<&Route>,
        code: u16,
        noop: bool,
        shape: Shape,
    ) {
        let record = RequestRecord {
            verb,
            kind: route
                .map(|r| r.resource.kind.to_string())
                .unwrap_or_default(),
            group: route.map_or("", |r| r.resource.group),
            resource: route.map_or("", |r| r.resource.plural),
            subresource: route.and_then(|r| r.subresource.clone()),
            namespace: route.and_then(|r| r.namespace.clone()),
            name: route.and_then(|r| r.name.clone()),
            code,
            at: (self.clock)(),
            wall: std::time::Instant::now(),
            noop,
            shape,
        };
        if let Ok(mut log) = self.traffic.log.lock() {
            log.push(record);
        }
    }

    async fn handle<B>(self: Arc<Self>, request: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::fmt::Display,
    {
        let (parts, body) = request.into_parts();
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let route = match route(parts.uri.path()) {
            Ok(route) => route,
            Err(error) => {
                self.record("unknown", None, error.code, false, Shape::default());
                return error_response(&error);
            }
        };
        let verb = verb_of(&parts.method, &route, &query);
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let mut shape = Shape {
            patch: (verb == "patch").then(|| {
                match content_type.split(';').next().unwrap_or_default().trim() {
                    "application/apply-patch+yaml" => "apply",
                    "application/merge-patch+json" => "merge",
                    _ => "other",
                }
            }),
            field_manager: query.get("fieldManager").cloned(),
            force: query.get("force").is_some_and(|f| f == "true"),
            precondition_uid: None,
        };
        if let Some(error) = self.take_fault(verb, route.resource.kind, route.name.as_deref()) {
            self.record(verb, Some(&route), error.code, false, shape);
            return error_response(&error);
        }
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => {
                let error = ApiError::bad_request(format!("reading the request body: {e}"));
                self.record(verb, Some(&route), error.code, false, shape);
                return error_response(&error);
            }
        };
        let version = |server: &Self| {
            route.name.as_deref().and_then(|name| {
                server
                    .get(
                        route.resource,
                        route.namespace.as_deref().unwrap_or_default(),
                        name,
                    )
                    .ok()
                    .and_then(|o| o.pointer("/metadata/resourceVersion").cloned())
            })
        };
        if verb == "delete" {
            shape.precondition_uid = serde_json::from_slice::<Value>(&bytes).ok().and_then(|o| {
                o.pointer("/preconditions/uid")?
                    .as_str()
                    .map(str::to_string)
            });
        }
        let before = matches!(verb, "update" | "patch")
            .then(|| version(&self))
            .flatten();
        let response = if verb == "watch" {
            self.serve_watch(&route, &query)
        } else {
            self.serve(verb, &route, &query, &content_type, &bytes)
        };
        let response = response.unwrap_or_else(|error| error_response(&error));
        let noop = response.status().is_success() && before.is_some() && before == version(&self);
        self.record(verb, Some(&route), response.status().as_u16(), noop, shape);
        response
    }

    fn serve(
        &self,
        verb: &str,
        route: &Route,
        query: &HashMap<String, String>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Response<Body>, ApiError> {
        let resource = route.resource;
        let namespace = route.namespace.as_deref();
        let name = route.name.as_deref().unwrap_or_default();
        let manager = query.get("fieldManager").map(String::as_str);
        let target = match route.subresource.as_deref() {
            None => Target::Main,
            Some("status") => Target::Status,
            Some("scale") => Target::Scale,
            Some("log") if resource.plural == "pods" && verb == "get" => {
                return self.serve_log(namespace.unwrap_or_default(), name, query);
            }
            Some(other) => {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("{} \"{name}\" has no subresource {other}", resource.plural),
                ));
            }
        };
        let respond = |object: &Value| -> Response<Body> {
            if target == Target::Scale {
                json_response(200, &scale_view(object))
            } else {
                json_response(200, object)
            }
        };
        match verb {
            "get" => {
                let object = self.get(resource, namespace.unwrap_or_default(), name)?;
                Ok(respond(&object))
            }
            "list" => {
                let (labels, fields) = selectors(resource, query)?;
                let limit = query
                    .get("limit")
                    .and_then(|l| l.parse().ok())
                    .filter(|l| *l > 0);
                let (items, rv, more) = self.list(
                    resource,
                    namespace,
                    &labels,
                    &fields,
                    limit,
                    query.get("continue").map(String::as_str),
                );
                let mut metadata = json!({"resourceVersion": rv.to_string()});
                if let Some(token) = more {
                    metadata["continue"] = json!(token);
                }
                let items: Vec<&Value> = items.iter().map(|i| i.as_ref()).collect();
                Ok(json_response(
                    200,
                    &json!({
                        "apiVersion": resource.api_version(),
                        "kind": format!("{}List", resource.kind),
                        "metadata": metadata,
                        "items": items,
                    }),
                ))
            }
            "create" => {
                let object = parse_body(body)?;
                let created =
                    self.create(resource, namespace.unwrap_or_default(), object, manager)?;
                Ok(json_response(201, &created))
            }
            "update" => {
                let object = parse_body(body)?;
                let object = if target == Target::Scale {
                    json!({"metadata": object.get("metadata").cloned().unwrap_or(json!({})), "spec": object.get("spec").cloned().unwrap_or(json!({}))})
                } else {
                    object
                };
                let written = self.write(
                    resource,
                    namespace.unwrap_or_default(),
                    name,
                    target,
                    Write::Replace(object),
                    manager,
                )?;
                Ok(respond(&written))
            }
            "patch" => {
                let patch = parse_body(body)?;
                let write = match content_type.split(';').next().unwrap_or_default().trim() {
                    "application/merge-patch+json" => Write::Merge(patch),
                    "application/apply-patch+yaml" => Write::Apply {
                        patch,
                        force: query.get("force").is_some_and(|f| f == "true"),
                    },
                    other => {
                        return Err(ApiError::new(
                            415,
                            "UnsupportedMediaType",
                            format!(
                                "the sandbox does not support the patch type {other:?}; use a merge patch or server-side apply"
                            ),
                        ));
                    }
                };
                // An apply may create the object; the real server then answers 201, and asks
                // for the `create` verb as well as `patch`.
                let creates = matches!(write, Write::Apply { .. })
                    && self
                        .get(resource, namespace.unwrap_or_default(), name)
                        .is_err();
                let written = self.write(
                    resource,
                    namespace.unwrap_or_default(),
                    name,
                    target,
                    write,
                    manager,
                )?;
                Ok(match creates {
                    true => json_response(201, &written),
                    false => respond(&written),
                })
            }
            "delete" => {
                let options: Value = if body.is_empty() {
                    json!({})
                } else {
                    parse_body(body)?
                };
                let grace = options
                    .get("gracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .or_else(|| query.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
                let propagation = options
                    .get("propagationPolicy")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| query.get("propagationPolicy").cloned());
                // A delete that names a uid deletes only the object that still has it.
                if let Some(uid) = options
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                {
                    let live = self.get(resource, namespace.unwrap_or_default(), name)?;
                    let found = live.pointer("/metadata/uid").and_then(Value::as_str);
                    if found != Some(uid) {
                        return Err(ApiError::new(
                            409,
                            "Conflict",
                            format!(
                                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                                found.unwrap_or_default()
                            ),
                        ));
                    }
                }
                let deleted = self.delete(
                    resource,
                    namespace.unwrap_or_default(),
                    name,
                    grace,
                    propagation.as_deref(),
                )?;
                Ok(json_response(200, &deleted))
            }
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )),
        }
    }

    fn serve_log(
        &self,
        namespace: &str,
        pod: &str,
        query: &HashMap<String, String>,
    ) -> Result<Response<Body>, ApiError> {
        let object = self.get(&super::RESOURCES[0], namespace, pod)?;
        let container = match query.get("container") {
            Some(c) => c.clone(),
            None => object
                .pointer("/spec/containers/0/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        };
        let text = self.read_log(
            namespace,
            pod,
            &container,
            query.get("previous").is_some_and(|p| p == "true"),
            query.get("tailLines").and_then(|t| t.parse().ok()),
            query.get("limitBytes").and_then(|l| l.parse().ok()),
        )?;
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from(text)).boxed_unsync())
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync())))
    }

    fn serve_watch(
        self: &Arc<Self>,
        route: &Route,
        query: &HashMap<String, String>,
    ) -> Result<Response<Body>, ApiError> {
        let resource = route.resource;
        let (labels, fields) = selectors(resource, query)?;
        let since =
            match query.get("resourceVersion").map(String::as_str) {
                None | Some("") | Some("0") => None,
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
        let timeout = Duration::from_secs(
            query
                .get("timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1800),
        );
        let bookmarks = query
            .get("allowWatchBookmarks")
            .is_some_and(|b| b == "true");
        let receiver = self.watch(resource, route.namespace.as_deref(), labels, fields, since);
        let stream = WatchStream {
            server: self.clone(),
            resource,
            receiver,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            bookmarks: bookmarks.then(|| {
                let mut interval = tokio::time::interval(BOOKMARK_INTERVAL);
                interval.reset();
                interval
            }),
            done: false,
        };
        let body = StreamBody::new(
            futures::stream::unfold(stream, |mut stream| async move {
                let server = stream.server.clone();
                let line = server.cpu.metered(stream.next_line()).await?;
                Some((Ok::<_, Infallible>(http_body::Frame::data(line)), stream))
            })
            .boxed(),
        );
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.boxed_unsync())
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync())))
    }

    /// The resourceVersion a bookmark may carry now, unless an event is still queued for this
    /// watch; checked under the lock so a bookmark never overtakes an event.
    fn bookmark_or_pending(
        &self,
        receiver: &mut mpsc::UnboundedReceiver<WatchItem>,
    ) -> Result<u64, WatchItem> {
        let state = super::lock(&self.state);
        match receiver.try_recv() {
            Ok(item) => Err(item),
            Err(_) => Ok(state.rv),
        }
    }
}

struct WatchStream {
    server: Arc<ApiServer>,
    resource: &'static ResourceType,
    receiver: mpsc::UnboundedReceiver<WatchItem>,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    bookmarks: Option<tokio::time::Interval>,
    done: bool,
}

impl WatchStream {
    /// One watch event as the real server frames it: `type` before `object`. A client may then
    /// decode the object as it streams instead of buffering it until the type arrives.
    fn line(type_: &str, object: &Value) -> Bytes {
        #[derive(Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            type_: &'a str,
            object: &'a Value,
        }
        let mut bytes = serde_json::to_vec(&Line { type_, object }).unwrap_or_default();
        bytes.push(b'\n');
        Bytes::from(bytes)
    }

    fn item_line(&mut self, item: WatchItem) -> Bytes {
        match item {
            WatchItem::Event(kind, object) => Self::line(kind, object.as_ref()),
            WatchItem::Gone(message) => {
                self.done = true;
                Self::line("ERROR", &ApiError::new(410, "Expired", message).status())
            }
        }
    }

    async fn next_line(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let tick = async {
            match self.bookmarks.as_mut() {
                Some(interval) => {
                    interval.tick().await;
                }
                None => futures::future::pending::<()>().await,
            }
        };
        tokio::select! {
            biased;
            item = self.receiver.recv() => {
                let item = item?;
                Some(self.item_line(item))
            }
            _ = &mut self.deadline => None,
            _ = tick => {
                match self.server.bookmark_or_pending(&mut self.receiver) {
                    Err(item) => Some(self.item_line(item)),
                    Ok(rv) => Some(Self::line(
                        "BOOKMARK",
                        &json!({
                            "apiVersion": self.resource.api_version(),
                            "kind": self.resource.kind,
                            "metadata": {"resourceVersion": rv.to_string()},
                        }),
                    )),
                }
            }
        }
    }
}

/// `tower::Service` over the sandbox API, for `kube::Client::new`.
#[derive(Clone)]
pub struct SandboxService(pub Arc<ApiServer>);

impl tower::Service<Request<kube::client::Body>> for SandboxService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<kube::client::Body>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move { Ok(server.cpu.metered(server.clone().handle(request)).await) })
    }
}
