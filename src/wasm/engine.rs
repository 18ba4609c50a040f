//! The one wasmtime `Engine` of the process and the one place its `Config` is built;
//! the linkers, one per set of granted capabilities (see [`super::link`]); the epoch
//! ticker that enforces per-call deadlines; and the on-disk cache of precompiled components.

use super::host::HostState;
use super::link::{self, Grants};
use super::WasmError;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are whole ticks, so this is their resolution.
/// 1 ms costs one atomic increment per millisecond on one thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// Component instances the pooling allocator keeps slots for: every warm instance of every
/// plugin, across all pipeline workers, plus headroom for strict-mode fresh instances.
pub const POOL_COMPONENT_INSTANCES: u32 = 512;
/// Core instances: a Rust component is several core modules (its code, the WASI adapter).
pub const POOL_CORE_INSTANCES: u32 = 4096;
/// Linear memories and tables across all pooled instances.
pub const POOL_MEMORIES: u32 = 1024;
pub const POOL_TABLES: u32 = 2048;
/// The largest memory any plugin may be granted; each plugin's own cap is lower.
pub const MAX_PLUGIN_MEMORY_BYTES: usize = 512 * 1024 * 1024;
/// Bytes of a freed linear memory (and table) zeroed with `memset` and kept mapped instead
/// of returned with `madvise`. A small guest (the examples link a 64 KiB stack) lives in
/// its first few pages, so a fresh instance in strict mode takes no page faults and no
/// system calls: measured 18.4 -> 6.1 µs per fresh-instance call.
pub const POOL_KEEP_RESIDENT: usize = 256 * 1024;
/// Freed slots whose remaining pages are returned to the OS in one batch.
pub const POOL_DECOMMIT_BATCH: usize = 16;
/// Wasm stack a call may use before it traps with a stack overflow (deep recursion).
pub const MAX_WASM_STACK: usize = 1024 * 1024;

/// `EVENTYARD_WASM_PERFMAP=1` writes `/tmp/perf-<pid>.map`, so `perf` can attribute time
/// to plugin functions instead of anonymous addresses (for components compiled in this
/// process, e.g. by `plugin test`; code loaded from the artifact cache is a file mapping).
pub const PERFMAP_ENV: &str = "EVENTYARD_WASM_PERFMAP";

/// The process-wide engine, linkers and artifact cache.
pub struct WasmEngine {
    pub(crate) engine: Engine,
    /// One linker per set of grants, built when a plugin first needs it.
    linkers: Mutex<[Option<Arc<Linker<HostState>>>; Grants::COUNT]>,
    cache_dir: Option<PathBuf>,
    /// Whether fuel metering is on (then every store gets fuel).
    pub(crate) fuel: bool,
    /// The epoch, mirrored by the ticker: wasmtime does not expose the current epoch, and
    /// a wait in WASI needs it to know how long its call has left (one relaxed load).
    pub(crate) ticks: Arc<AtomicU64>,
}

impl WasmEngine {
    /// `fuel`: whether any plugin has a fuel budget (metering costs every plugin a little,
    /// so it is only switched on when asked for). `cache_dir`: where precompiled
    /// components go; `None` compiles in memory every time.
    pub fn new(fuel: bool, cache_dir: Option<PathBuf>) -> Result<Self, WasmError> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(POOL_COMPONENT_INSTANCES)
            .total_core_instances(POOL_CORE_INSTANCES)
            .total_memories(POOL_MEMORIES)
            .total_tables(POOL_TABLES)
            .max_memory_size(MAX_PLUGIN_MEMORY_BYTES)
            .linear_memory_keep_resident(POOL_KEEP_RESIDENT)
            .table_keep_resident(POOL_KEEP_RESIDENT)
            .decommit_batch_size(POOL_DECOMMIT_BATCH);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .consume_fuel(fuel)
            .max_wasm_stack(MAX_WASM_STACK)
            .cranelift_opt_level(OptLevel::Speed)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if std::env::var_os(PERFMAP_ENV).is_some_and(|v| v == "1") {
            // Names the plugins' compiled code for `perf report` (runtime only: the
            // artifacts and their cache key do not change).
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| WasmError::Engine(format!("{e:#}")))?;
        if let Some(dir) = &cache_dir {
            crate::files::private_dir(dir).map_err(|e| WasmError::Cache(format!("{}: {e}", dir.display())))?;
        }
        // The ticker lives exactly as long as the engine: plugins hold clones of it, so it
        // keeps ticking after this `WasmEngine` is gone and stops with the last plugin.
        let weak = engine.weak();
        let ticks = Arc::new(AtomicU64::new(0));
        let mirror = ticks.clone();
        std::thread::Builder::new()
            .name("eventyard-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(e) => {
                        e.increment_epoch();
                        mirror.fetch_add(1, Ordering::Relaxed);
                    }
                    None => break,
                }
            })
            .map_err(|e| WasmError::Engine(e.to_string()))?;
        Ok(Self { engine, linkers: Mutex::default(), cache_dir, fuel, ticks })
    }

    /// The linker for plugins granted exactly `grants` (built once, then shared).
    pub(crate) fn linker(&self, grants: Grants) -> Result<Arc<Linker<HostState>>, WasmError> {
        let mut linkers = self.linkers.lock().map_err(|_| WasmError::Engine("linker cache poisoned".into()))?;
        let slot = &mut linkers[grants.index()];
        if let Some(l) = slot {
            return Ok(l.clone());
        }
        let l = Arc::new(link::linker(&self.engine, grants).map_err(|e| WasmError::Engine(format!("{e:#}")))?);
        *slot = Some(l.clone());
        Ok(l)
    }

    /// Compiles a component, or loads its precompiled artifact from the cache. The cache
    /// key is the component's SHA-256 plus the engine's compatibility hash (wasmtime
    /// version and every setting that affects code), so a different wasmtime or config
    /// never loads a stale artifact.
    pub fn load(&self, bytes: &[u8]) -> Result<Component, WasmError> {
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes).map_err(|e| WasmError::Compile(format!("{e:#}")));
        };
        let path = dir.join(format!("{}.cwasm", self.cache_key(bytes)));
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine with the
            // same compatibility hash (it is in the file name) into our own cache dir.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "unusable cached artifact; recompiling"),
            }
        }
        let artifact = self.engine.precompile_component(bytes).map_err(|e| WasmError::Compile(format!("{e:#}")))?;
        write_atomically(&path, &artifact).map_err(|e| WasmError::Cache(format!("{}: {e}", path.display())))?;
        // SAFETY: as above, we just wrote it.
        unsafe { Component::deserialize_file(&self.engine, &path) }.map_err(|e| WasmError::Compile(format!("{e:#}")))
    }

    pub fn cache_key(&self, bytes: &[u8]) -> String {
        let mut h = ShaHasher(Sha256::new());
        self.engine.precompile_compatibility_hash().hash(&mut h);
        h.0.update(bytes);
        hex(&h.0.finalize())
    }
}

/// Feeds `Hash` output into SHA-256: unlike `DefaultHasher`, stable across Rust releases,
/// so a cache key means the same thing to every build.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes to a temporary name unique to this process and call, then renames: a reader
/// never sees half an artifact, even with several routers or threads on one cache.
/// Owner-only, like every file of the data directory ([`crate::files`]).
fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    crate::files::write_atomic(path, data)
}
