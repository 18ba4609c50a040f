//! Routes: which events (a glob or a regex over the type) go through which filters, in
//! order, then which handlers, with what retries; built from `[[route]]` tables and from
//! uploaded plugins' manifests.

use super::config::{RouteConfig, MAX_WAIT_MS};
use super::retry::RetryPolicy;
use super::sink::Sink;
use crate::event::pattern::{compile_regex, Matcher, TypePattern};
use crate::name::Name;
use crate::settings::Invalid;
use crate::wasm::config::{PluginConfig, World};
use crate::wasm::plugin::{Filter, Handler};
use crate::wasm::Plugin;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Matches event types by glob or regex.
#[derive(Clone)]
pub struct Route {
    pub name: String,
    /// A route of a plugin that was deleted: it matches nothing any more, but keeps its place
    /// (retries refer to routes and handlers by index) and its plugins (retries in flight end).
    pub disabled: bool,
    pub matcher: Matcher,
    pub retry: RetryPolicy,
    pub filters: Vec<Filter>,
    /// The route's handler plugins, then its sinks, in that order.
    pub handlers: Vec<RouteHandler>,
}

/// What a route hands a kept event to: a Wasm handler (which may emit events) or a sink
/// (which delivers it out of the router). Both are retried and dead-lettered alike, by name.
#[derive(Clone)]
pub enum RouteHandler {
    Plugin(Handler),
    Sink(Arc<dyn Sink>),
}

impl RouteHandler {
    pub fn name(&self) -> &str {
        match self {
            RouteHandler::Plugin(h) => h.name(),
            RouteHandler::Sink(s) => s.name(),
        }
    }

    /// The name, shared (a plugin's; a sink's is copied: sinks emit nothing).
    pub fn shared_name(&self) -> Name {
        match self {
            RouteHandler::Plugin(h) => h.ctx.name,
            RouteHandler::Sink(s) => Name::intern(s.name()),
        }
    }
}

/// Route `i` of the config; `plugins` and `sinks` are the ones it may name.
pub fn build(i: usize, r: &RouteConfig, plugins: &[Arc<Plugin>], sinks: &[Arc<dyn Sink>]) -> Result<Route, Invalid> {
    let bad = |key: &str, message: String| Invalid::new(format!("route[{i}].{key}"), message);
    let matcher = match (&r.glob, &r.regex) {
        (Some(g), _) => Matcher::Glob(TypePattern::parse(g).map_err(|e| bad("match", e.to_string()))?),
        (None, Some(re)) => Matcher::Regex(compile_regex(re).map_err(|e| bad("regex", e.to_string()))?),
        (None, None) => return Err(bad("match", "set `match` or `regex`".into())),
    };
    let pick = |names: &[String]| -> Vec<Arc<Plugin>> {
        names.iter().filter_map(|n| plugins.iter().find(|p| p.name() == n).cloned()).collect()
    };
    let world = |field: &str, p: &Plugin| bad(field, format!("plugin `{}` is a {}", p.name(), p.world().as_str()));
    let filters = pick(&r.filters)
        .into_iter()
        .map(|p| Filter::new(p.clone()).ok_or_else(|| world("filters", &p)))
        .collect::<Result<_, _>>()?;
    let mut handlers = pick(&r.handlers)
        .into_iter()
        .map(|p| Handler::new(p.clone()).map(RouteHandler::Plugin).ok_or_else(|| world("handlers", &p)))
        .collect::<Result<Vec<_>, _>>()?;
    for name in &r.sinks {
        let sink =
            sinks.iter().find(|s| s.name() == name).ok_or_else(|| bad("sinks", format!("no sink named `{name}`")))?;
        handlers.push(RouteHandler::Sink(sink.clone()));
    }
    Ok(Route {
        disabled: false,
        retry: RetryPolicy {
            max_attempts: r.retry.max_attempts,
            base: Duration::from_millis(r.retry.base_ms),
            max: Duration::from_millis(r.retry.max_ms),
        },
        name: r.name.clone().unwrap_or_else(|| format!("route-{i}")),
        matcher,
        filters,
        handlers,
    })
}

/// An uploaded plugin's manifest (`PUT /v1/plugins/{name}`): the fields of a `[[plugin]]`
/// table but `name` and `component`, and `routes = [{ match = "..." }]` (or `regex`, with an
/// optional `name` and `retry`); the plugin is each route's filter or handler, by its world.
/// Checked like a config file.
pub fn parse_upload(name: &str, text: &str, component: &Path) -> Result<(PluginConfig, Vec<RouteConfig>), Invalid> {
    let bad = |key: &str, message: String| Invalid::new(format!("manifest.{key}"), message);
    let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| bad("(toml)", e.message().to_string()))?;
    let routes = table.remove("routes");
    for key in ["name", "component"] {
        if table.contains_key(key) {
            return Err(bad(key, "set by the upload (the URL's name, the uploaded component)".into()));
        }
    }
    table.insert("name".into(), name.into());
    table.insert("component".into(), component.display().to_string().into());
    let plugin: PluginConfig =
        table.try_into().map_err(|e: toml::de::Error| bad("(plugin)", e.message().to_string()))?;
    let role = match plugin.world {
        World::Filter => "filters",
        World::Handler => "handlers",
    };
    let mut out: Vec<RouteConfig> = Vec::new();
    let empty = Vec::new();
    let list = match &routes {
        Some(toml::Value::Array(a)) => a,
        Some(_) => return Err(bad("routes", "an array of tables".into())),
        None => &empty,
    };
    for (i, r) in list.iter().enumerate() {
        let mut t = r.as_table().cloned().ok_or_else(|| bad(&format!("routes[{i}]"), "a table".into()))?;
        t.insert(role.into(), toml::Value::Array(vec![name.into()]));
        t.entry("name").or_insert_with(|| format!("{name}-{i}").into());
        out.push(t.try_into().map_err(|e: toml::de::Error| bad(&format!("routes[{i}]"), e.message().to_string()))?);
    }
    plugin.check("manifest", MAX_WAIT_MS)?;
    for (i, r) in out.iter().enumerate() {
        r.check(&format!("manifest.routes[{i}]"))?;
    }
    Ok((plugin, out))
}
