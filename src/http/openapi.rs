//! The OpenAPI 3.1 description served at `GET /openapi.json`, built from data: every door
//! lists its endpoints as [`Operation`]s next to its routes (`crate::http::operations`,
//! `crate::protocols::infrahub::operations`, ...), and `crate::app` hands all the lists to
//! [`document`] once at start. A new door (the dashboard, say) adds one list.
//!
//! Event types come from the compiled [`Registry`]: each type gets its own ingestion path
//! `POST /v1/events/<type>` whose request body is that type's JSON Schema (a component
//! named after the type). One path per type rather than one `{type}` path with a `oneOf`
//! body: with a `oneOf`, a body valid for one type is "valid" for every path of the
//! template, so a client generator (or schemathesis) cannot tell which body goes with which
//! type, and every Swagger UI shows 43 schemas in one drop-down. Each such path carries
//! `x-path-template: /v1/events/{type}`, the endpoint it documents.
//!
//! Errors: one shared `Error` component; every operation lists the statuses it can answer
//! with their stable `error` codes. Statuses every operation of a kind shares are added
//! here, not by each door: 401/403 for a guarded one, 400 `invalid_path` / `invalid_query`
//! for one with path or query parameters.

use super::Registry;
use axum::http::Method;
use serde_json::{json, Map, Value};

/// Who may call an operation (see [`crate::http::auth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// Anyone.
    Open,
    /// The admin token.
    Admin,
    /// An ingestion token, once `[[auth.ingest]]` lists any (open until then).
    Ingest,
    /// `[auth] subscribe_token` or the admin token, once set (open until then).
    Subscribe,
    /// `[auth] fixinventory_token` or the admin token, once set (open until then).
    FixInventory,
}

impl Guard {
    /// The OpenAPI `security` requirement: alternatives, `{}` meaning "no token needed".
    fn security(self) -> Value {
        match self {
            Guard::Open => json!([]),
            Guard::Admin => json!([{ "admin": [] }]),
            Guard::Ingest => json!([{ "ingest": [] }, {}]),
            Guard::Subscribe => json!([{ "subscribe": [] }, { "admin": [] }, {}]),
            Guard::FixInventory => json!([{ "fixinventory": [] }, { "admin": [] }, {}]),
        }
    }
}

/// One method on one path, as a door describes it.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: Method,
    pub path: String,
    summary: String,
    guard: Guard,
    parameters: Vec<Value>,
    body: Option<Value>,
    responses: Map<String, Value>,
    template: Option<&'static str>,
}

impl Operation {
    pub fn new(method: Method, path: impl Into<String>, summary: impl Into<String>) -> Self {
        Operation {
            method,
            path: path.into(),
            summary: summary.into(),
            guard: Guard::Open,
            parameters: Vec::new(),
            body: None,
            responses: Map::new(),
            template: None,
        }
    }

    pub fn get(path: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(Method::GET, path, summary)
    }

    pub fn post(path: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(Method::POST, path, summary)
    }

    pub fn put(path: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(Method::PUT, path, summary)
    }

    pub fn delete(path: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path, summary)
    }

    pub fn guard(mut self, guard: Guard) -> Self {
        self.guard = guard;
        self
    }

    /// The endpoint a concrete path stands for (`/v1/events/{type}` for `/v1/events/idem/idem-state`).
    pub fn template(mut self, template: &'static str) -> Self {
        self.template = Some(template);
        self
    }

    fn param(mut self, place: &str, name: &str, required: bool, schema: Value, description: &str) -> Self {
        let mut p = json!({ "name": name, "in": place, "required": required, "schema": schema });
        if !description.is_empty() {
            p["description"] = json!(description);
        }
        self.parameters.push(p);
        self
    }

    pub fn path_param(self, name: &str, schema: Value) -> Self {
        self.param("path", name, true, schema, "")
    }

    pub fn query(self, name: &str, schema: Value, description: &str) -> Self {
        self.param("query", name, false, schema, description)
    }

    pub fn header(self, name: &str, required: bool, schema: Value, description: &str) -> Self {
        self.param("header", name, required, schema, description)
    }

    /// A required request body in one or more media types: `(media type, schema)`.
    pub fn body<'a>(self, media: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        self.body_with(true, media)
    }

    /// A request body that may be left out.
    pub fn optional_body<'a>(self, media: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        self.body_with(false, media)
    }

    fn body_with<'a>(mut self, required: bool, media: impl IntoIterator<Item = (&'a str, Value)>) -> Self {
        let content: Map<String, Value> =
            media.into_iter().map(|(m, s)| (m.to_string(), json!({ "schema": s }))).collect();
        self.body = Some(json!({ "required": required, "content": content }));
        self
    }

    /// A success answer with a JSON body of `schema`.
    pub fn ok(self, status: u16, description: &str, schema: Value) -> Self {
        self.answers(status, description, Some(("application/json", schema)))
    }

    /// A success answer in another media type, or with no body (`None`).
    pub fn answers(mut self, status: u16, description: &str, body: Option<(&str, Value)>) -> Self {
        let mut r = json!({ "description": description });
        if let Some((media, schema)) = body {
            r["content"] = json!({ media: { "schema": schema } });
        }
        self.responses.insert(status.to_string(), r);
        self
    }

    /// An OpenAPI link from the `status` answer to the operation `method path`, its
    /// parameters given as runtime expressions (`$response.body#/id`, `$request.path.id`):
    /// how a client (and schemathesis' stateful phase) goes on from this answer.
    pub fn link(mut self, status: u16, method: Method, path: &str, parameters: &[(&str, &str)]) -> Self {
        let target = operation_id(&method, path);
        let parameters: Map<String, Value> = parameters.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let response = self.responses.get_mut(&status.to_string()).expect("link from a documented answer");
        response["links"][target.clone()] = json!({ "operationId": target, "parameters": parameters });
        self
    }

    /// An error status and the stable `error` codes it comes with; the body is `Error`.
    /// Said twice for one status, the codes add up.
    pub fn fails(mut self, status: u16, codes: &str) -> Self {
        let key = status.to_string();
        let codes = match self.responses.get(&key).and_then(|r| r["x-error-codes"].as_str()) {
            Some(before) if !before.split(", ").any(|c| c == codes) => format!("{before}, {codes}"),
            Some(before) => before.to_string(),
            None => codes.to_string(),
        };
        self.responses.insert(
            key,
            json!({
                "description": format!("`error`: {codes}"),
                "x-error-codes": codes,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
            }),
        );
        self
    }

    /// What every operation of its kind shares, added once here.
    fn with_shared_errors(self) -> Self {
        let has = |place: &str| self.parameters.iter().any(|p| p["in"] == place);
        let (path, query, guarded) = (has("path"), has("query"), self.guard != Guard::Open);
        let mut op = self;
        if path {
            op = op.fails(400, "invalid_path");
        }
        if query {
            op = op.fails(400, "invalid_query");
        }
        if guarded {
            op = op.fails(401, "unauthorized").fails(403, "forbidden");
        }
        op
    }

    fn to_json(&self) -> Value {
        let mut op = json!({
            "summary": self.summary,
            "operationId": operation_id(&self.method, &self.path),
            "security": self.guard.security(),
            "responses": self.responses,
        });
        if !self.parameters.is_empty() {
            op["parameters"] = json!(self.parameters);
        }
        if let Some(body) = &self.body {
            op["requestBody"] = body.clone();
        }
        if let Some(t) = self.template {
            op["x-path-template"] = json!(t);
        }
        op
    }
}

/// `post_v1_events_idem_idem-state`: unique per method and path, stable across builds.
fn operation_id(method: &Method, path: &str) -> String {
    let words: String = path.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{}{}", method.as_str().to_ascii_lowercase(), words.trim_end_matches('_'))
}

/// The component name of an event type's schema: `/` is not allowed there.
pub fn component_name(type_name: &str) -> String {
    type_name.replace('/', ".")
}

/// `$ref` to an event type's schema component.
pub fn event_schema(type_name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", component_name(type_name)) })
}

/// An event type's schema as an OpenAPI component, and its `$defs` as components of their
/// own: inside the OpenAPI document `#` is the document, so `#/$defs/meta` would point
/// nowhere. `$id` and `$schema` go too (a resolver would take `$id` as the base of every
/// reference inside).
fn components_of(type_name: &str, schema: &Value) -> Vec<(String, Value)> {
    let name = component_name(type_name);
    let mut schema = schema.clone();
    rewrite_refs(&mut schema, &name);
    let obj = schema.as_object_mut().expect("an event schema is an object");
    obj.remove("$id");
    obj.remove("$schema");
    let mut out: Vec<(String, Value)> = match obj.remove("$defs") {
        Some(Value::Object(defs)) => defs.into_iter().map(|(d, s)| (format!("{name}__{d}"), s)).collect(),
        _ => Vec::new(),
    };
    out.push((name, schema));
    out
}

fn rewrite_refs(v: &mut Value, component: &str) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some(def) = r.strip_prefix("#/$defs/") {
                    *r = format!("#/components/schemas/{component}__{def}");
                }
            }
            m.values_mut().for_each(|x| rewrite_refs(x, component));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, component)),
        _ => {}
    }
}

/// Shapes several doors answer with.
pub mod shape {
    use serde_json::{json, Value};

    /// An object with these required properties (and maybe more).
    pub fn object(required: &[&str]) -> Value {
        json!({ "type": "object", "required": required })
    }

    /// `{"id"}`: an accepted event.
    pub fn accepted() -> Value {
        json!({ "type": "object", "required": ["id"], "properties": { "id": { "type": "string" } } })
    }

    /// A string of 1 to `max` bytes (ids, names a client chooses).
    pub fn id(max: usize) -> Value {
        json!({ "type": "string", "minLength": 1, "maxLength": max })
    }

    /// One of the given strings.
    pub fn one_of<'a>(values: impl IntoIterator<Item = &'a str>) -> Value {
        json!({ "type": "string", "enum": values.into_iter().collect::<Vec<_>>() })
    }

    /// The headers of a WebSocket handshake, required on an endpoint that is one (without
    /// them the answer is 426 `websocket_required`).
    pub fn websocket(op: super::Operation) -> super::Operation {
        op.header("Connection", true, json!({ "type": "string", "enum": ["Upgrade", "upgrade"] }), "")
            .header("Upgrade", true, json!({ "type": "string", "enum": ["websocket"] }), "")
            .header("Sec-WebSocket-Version", true, json!({ "type": "string", "enum": ["13"] }), "")
            .header(
                "Sec-WebSocket-Key",
                true,
                json!({ "type": "string", "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$" }),
                "16 random bytes, base64",
            )
            .answers(101, "switching to WebSocket", None)
            .fails(426, "websocket_required")
    }
}

/// The whole document: every door's operations and every event type's schema.
pub fn document(registry: &Registry, operations: impl IntoIterator<Item = Operation>) -> Value {
    let mut paths = Map::new();
    for op in operations {
        let op = op.with_shared_errors();
        let entry = paths.entry(op.path.clone()).or_insert_with(|| json!({}));
        entry[op.method.as_str().to_ascii_lowercase()] = op.to_json();
    }
    let mut schemas = Map::new();
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "required": ["error", "message"],
            "description": "Every error: a stable code to switch on, a message for people, and fields of that error (`errors`, `did_you_mean`, `limit_bytes`, ...).",
            "properties": {
                "error": { "type": "string", "description": "stable code, e.g. validation_failed, unknown_event_type, invalid_query" },
                "message": { "type": "string" },
            },
        }),
    );
    for t in registry.iter() {
        schemas.extend(components_of(&t.name, &t.schema));
    }
    let bearer = |who: &str| json!({ "type": "http", "scheme": "bearer", "description": who });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Eventyard",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A WebAssembly-extensible event router. Every error is JSON with a stable `error` code (the `Error` schema).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "admin": bearer("the admin token: `[auth] admin_token`, or the one generated into `<store dir>/admin-token`"),
                "ingest": bearer("an `[[auth.ingest]]` token (ingestion is open while none is configured)"),
                "subscribe": bearer("`[auth] subscribe_token` (event streams are open while it is not set)"),
                "fixinventory": bearer("`[auth] fixinventory_token` (Fix Inventory's endpoints are open while it is not set)"),
            },
        },
    })
}

/// The methods `document` serves at `path` (a request path, percent-decoded or not), for the
/// `Allow` header of a 405: a concrete path wins over templates (as OpenAPI says), a
/// `{param}` matches one segment. `None` when no documented path matches.
pub fn allowed_methods(document: &Value, path: &str) -> Option<String> {
    let paths = document["paths"].as_object()?;
    let decoded = percent_decode(path);
    let item = paths.get(path).or_else(|| paths.get(&decoded)).or_else(|| {
        let segments: Vec<&str> = path.split('/').collect();
        paths.iter().find_map(|(template, item)| {
            let parts: Vec<&str> = template.split('/').collect();
            let fits = parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
            fits.then_some(item)
        })
    })?;
    let mut methods: Vec<String> = item.as_object()?.keys().map(|m| m.to_ascii_uppercase()).collect();
    if methods.iter().any(|m| m == "GET") {
        // axum answers HEAD wherever it answers GET.
        methods.push("HEAD".into());
    }
    Some(methods.join(","))
}

/// The 405 of a method `path` does not serve, with `Allow` from the document.
pub fn method_not_allowed(document: &Value, path: &str) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut res = super::ApiError::MethodNotAllowed.into_response();
    if let Some(allow) = allowed_methods(document, path).and_then(|a| axum::http::HeaderValue::from_str(&a).ok()) {
        res.headers_mut().insert(axum::http::header::ALLOW, allow);
    }
    res
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        let catalog = crate::schema::catalog::Catalog::embedded().unwrap();
        let registry = Registry::from_catalog(&catalog, &Default::default()).unwrap();
        let ops = vec![
            Operation::post("/v1/events/idem/idem-state", "one type").template("/v1/events/{type}"),
            Operation::get("/v1/events/{id}", "status").path_param("id", json!({ "type": "string" })),
            Operation::get("/v1/dead-letters", "list").guard(Guard::Admin).query(
                "limit",
                json!({ "type": "integer" }),
                "",
            ),
        ];
        document(&registry, ops)
    }

    #[test]
    fn shared_errors_are_added_by_kind() {
        let d = doc();
        let list = &d["paths"]["/v1/dead-letters"]["get"]["responses"];
        assert_eq!(list["400"]["x-error-codes"], "invalid_query");
        assert_eq!(list["401"]["x-error-codes"], "unauthorized");
        assert_eq!(d["paths"]["/v1/events/{id}"]["get"]["responses"]["400"]["x-error-codes"], "invalid_path");
        assert_eq!(d["paths"]["/v1/events/{id}"]["get"]["security"], json!([]));
    }

    #[test]
    fn event_schemas_are_components_whose_refs_resolve() {
        let d = doc();
        let text = d.to_string();
        assert!(!text.contains("\"#/$defs/"), "a $ref still points into $defs");
        let echo = &d["components"]["schemas"]["infrahub.send.echo.request"];
        assert_eq!(echo["properties"]["meta"]["$ref"], "#/components/schemas/infrahub.send.echo.request__meta");
        assert!(d["components"]["schemas"]["infrahub.send.echo.request__meta"]["properties"]["priority"].is_object());
        assert!(echo.get("$id").is_none());
    }

    #[test]
    fn allow_lists_what_the_documented_path_serves() {
        let d = doc();
        assert_eq!(allowed_methods(&d, "/v1/events/idem/idem-state").as_deref(), Some("POST"));
        assert_eq!(allowed_methods(&d, "/v1/events/idem%2Fidem-state").as_deref(), Some("POST"));
        assert_eq!(allowed_methods(&d, "/v1/events/0193-abc").as_deref(), Some("GET,HEAD"));
        assert_eq!(allowed_methods(&d, "/nowhere"), None);
    }

    #[test]
    fn a_link_names_its_target_operation() {
        let op = Operation::post("/v1/events/idem/idem-state", "x").ok(202, "accepted", shape::accepted()).link(
            202,
            Method::GET,
            "/v1/events/{id}",
            &[("id", "$response.body#/id")],
        );
        let link = &op.responses["202"]["links"]["get_v1_events__id"];
        assert_eq!(link["operationId"], "get_v1_events__id");
        assert_eq!(link["parameters"]["id"], "$response.body#/id");
    }

    #[test]
    fn codes_of_one_status_add_up() {
        let op = Operation::get("/x", "x").fails(400, "a").fails(400, "b").fails(400, "a");
        assert_eq!(op.responses["400"]["x-error-codes"], "a, b");
    }
}
