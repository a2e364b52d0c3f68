//! The Wasm runtime: one wasmtime `Engine` for the agent, one `Store` per pod instance.
//!
//! - Core modules run as WASI preview 1 commands (`_start`); components run
//!   as WASI preview 2 `wasi:cli/run` commands.
//! - Compiled code is cached on disk per module digest, because compiling
//!   costs tens of milliseconds per module on a Pi and instantiating costs
//!   microseconds. Pods running the same digest share one loaded program
//!   in memory (one mapping of its code, one set of its metadata).
//! - A background thread bumps the engine's epoch every [`EPOCH_TICK`]; every
//!   store yields to tokio at each tick, so a guest spinning in a loop cannot
//!   starve its neighbours, and dropping its future stops it.
//! - `resources.limits.cpu` is enforced by charging the time the guest runs
//!   between yields to a per-instance bucket and keeping it pending on a
//!   timer once the bucket is empty (see [`cpu`]).
//! - Guests' timers and sockets live in a tokio runtime of their own whose
//!   one thread waits in its driver ([`reactor`]), so that a pod's sleep
//!   ends on time while the agent's workers are busy with other guests.
//! - A spinning guest runs a few nice levels below the agent's own threads
//!   and waiting guests, so a thread that wakes (a pod whose timer fired,
//!   the agent's MQTT) preempts it at once (see [`priority`]).
//! - `resources.limits.memory` is enforced by a [`wasmtime::ResourceLimiter`]:
//!   growing past it traps, and the outcome is reported as `OOMKilled`.
//! - A guest is asked to stop by closing its stdin ([`StopSignal`]); the
//!   supervisor drops the instance after the grace period.
//! - An `exec` probe calls an export in a second instance of the same
//!   program, in a store of its own ([`Runtime::probe`]).
//! - Components get WASI sockets under the container's [`NetPolicy`]:
//!   listen on declared ports, connect where `spec.egress` allows.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, InstancePre, Module, ResourceLimiter, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::pods::logs::LogStream;

pub mod cpu;
pub mod net;
pub mod priority;
mod reactor;
mod stop;
pub use net::NetPolicy;
pub use priority::Priority;
pub use stop::StopSignal;
#[cfg(test)]
mod tests;

/// How often the epoch advances: the longest a guest runs without yielding.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Task polls between two checks of tokio's timers and sockets (tokio's
/// default is 61). A spinning guest yields at every epoch tick, and each
/// yield is one task poll: with the default, a board whose workers all run
/// spinning guests would see timers and MQTT traffic up to ~0.6 s late. The
/// agent's tokio runtime is built with this value.
pub const TOKIO_EVENT_INTERVAL: u32 = 4;

/// The agent's tokio runtime: multi-threaded, with [`TOKIO_EVENT_INTERVAL`]
/// and [`worker_threads`] workers. `main.rs` and the benchmarks build it here.
pub fn tokio_runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(TOKIO_EVENT_INTERVAL)
        .worker_threads(worker_threads())
        .build()
}

/// Tokio workers: two per core, so that some are idle while guests spin.
///
/// A poll of a spinning guest holds its worker for a whole epoch tick. With
/// one worker per core (tokio's default), a board whose workers are all
/// inside guest slices runs a neighbour whose timer fired only when a slice
/// ends: the neighbour waits up to a tick, however little its own work. With
/// spare workers, the reactor's wake-up (see [`reactor`]) finds an idle one
/// that runs the neighbour at once, and the kernel shares the cores between
/// its thread and the spinning ones as it shares any threads (a thread that
/// slept gets the CPU quickly). A spinner's CPU limit is unaffected: it is
/// charged the CPU time its thread used, not the time the kernel gave to
/// others during its slice. Idle workers cost a parked thread each (a few
/// KiB resident).
pub fn worker_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cores).max(4)
}

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be configured (a wasmtime/host mismatch).
    #[error("cannot create the Wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The bytes are not a program this agent can run (compile or link error).
    #[error("{0}")]
    Invalid(String),
    /// Reading the module from the data dir failed.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How one instance ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `_start` returned (0) or the guest called `proc_exit(code)`.
    Exited(i32),
    /// The guest tried to grow memory past its limit.
    OomKilled(String),
    /// A trap or a host error ended the guest.
    Trapped(String),
}

/// What an instance is given.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// `argv`, including `argv[0]`.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Bytes of linear memory the guest may use; `None` for no limit.
    pub memory_limit: Option<u64>,
    /// Thousandths of a CPU the guest may use; `None` for no limit.
    pub cpu_limit_milli: Option<u64>,
    /// Directories the guest is given (its volume mounts).
    pub mounts: Vec<Mount>,
    pub stdout: LogStream,
    pub stderr: LogStream,
    /// Raised to ask the guest to stop: its stdin reaches end of file.
    pub stop: StopSignal,
    /// Sockets (components only): what the guest may listen on and reach.
    pub network: NetPolicy,
    /// `namespace/name/container`, for the agent's log.
    pub who: String,
}

/// How much of a probe's output is kept for its failure message.
const PROBE_OUTPUT_BYTES: usize = 512;

/// A host directory given to the guest as a WASI preopen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    /// The name the guest opens it by (`mountPath`).
    pub guest: String,
    /// Reads only: wasmtime-wasi refuses every write, create and delete.
    pub read_only: bool,
}

/// A compiled program, ready to instantiate many times.
pub struct Loaded {
    program: Program,
}

/// Where [`Runtime::load`] found a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Already in memory: another pod (or instance) of the same digest had it.
    Shared,
    /// Deserialized from the on-disk compiled-code cache.
    Cache,
    /// Compiled from the module's bytes (and cached on disk).
    Compiled,
}

/// The two kinds of program, which the compiled cache names apart so that a
/// load need not open the file twice to tell which it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Module,
    Component,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Module, Kind::Component];

    /// The file name suffix of its cache entries.
    fn suffix(self) -> &'static str {
        match self {
            Kind::Module => ".module.cwasm",
            Kind::Component => ".component.cwasm",
        }
    }
}

enum Program {
    Core(InstancePre<CoreState>),
    Component(CommandPre<ComponentState>),
}

/// Store data of a core-module instance.
struct CoreState {
    wasi: WasiP1Ctx,
    limits: Limits,
}

/// Store data of a component instance.
struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
    limits: Limits,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// The memory limit of one store. Unlike wasmtime's `StoreLimits` it records
/// that it refused, so that the outcome can say `OOMKilled` rather than a
/// generic trap.
struct Limits {
    memory: Option<usize>,
    refused: Option<String>,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if let Some(max) = self.memory
            && desired > max
        {
            // Trapping (rather than letting memory.grow return -1) matches
            // Kubernetes: a container over its memory limit is killed.
            let message = format!(
                "memory limit of {max} bytes exceeded: the guest asked for {desired} bytes"
            );
            self.refused = Some(message.clone());
            return Err(wasmtime::Error::msg(message));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// The agent's Wasm runtime. Share it behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    core_linker: wasmtime::Linker<CoreState>,
    component_linker: wasmtime::component::Linker<ComponentState>,
    compiled_dir: PathBuf,
    reactor: reactor::Reactor,
    priority: Priority,
    /// Programs some pod still holds, by digest: weak, so a program is
    /// dropped with the last pod that runs it.
    shared: Mutex<HashMap<String, Weak<Loaded>>>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Runtime {
    /// Builds the engine and starts its epoch ticker. Compiled code is cached
    /// in `compiled_dir`. Spinning guests run [`priority::DEFAULT_GUEST_NICE`] nice
    /// levels below the agent where the process may do so
    /// ([`Runtime::with_priority`] changes it).
    pub fn new(compiled_dir: &Path) -> Result<Runtime, Error> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // Virtual memory is sized explicitly. A 64-bit Pi kernel gives a
        // process a 39-bit (512 GiB) address space, and wasmtime's defaults
        // reserve 4 GiB plus 32 MiB of guard per linear memory up front, so a
        // few dozen pods would exhaust it. A small reservation and guard make
        // wasmtime emit explicit bounds checks (a little slower) and move a
        // memory that outgrows its reservation; the extra room for growth
        // limits how often that copy happens.
        config.memory_reservation(16 << 20);
        config.memory_guard_size(64 << 10);
        config.memory_reservation_for_growth(2 << 20);
        let engine = Engine::new(&config).map_err(Error::Engine)?;

        let mut core_linker = wasmtime::Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut core_linker, |s: &mut CoreState| &mut s.wasi)
            .map_err(Error::Engine)?;
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker).map_err(Error::Engine)?;

        // The ticker holds only a weak handle, so it ends with the engine.
        let weak = engine.weak();
        let spawned = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            });
        if let Err(e) = spawned {
            return Err(Error::Engine(wasmtime::Error::msg(format!(
                "cannot start the epoch thread: {e}"
            ))));
        }

        let reactor = reactor::Reactor::start().map_err(|e| {
            Error::Engine(wasmtime::Error::msg(format!(
                "cannot start the guests' reactor thread: {e}"
            )))
        })?;

        sweep_compiled_dir(compiled_dir);
        Ok(Runtime {
            engine,
            core_linker,
            component_linker,
            compiled_dir: compiled_dir.to_path_buf(),
            reactor,
            priority: Priority::new(priority::DEFAULT_GUEST_NICE),
            shared: Mutex::new(HashMap::new()),
        })
    }

    /// The same runtime with guests at `priority`.
    pub fn with_priority(mut self, priority: Priority) -> Runtime {
        self.priority = priority;
        self
    }

    fn entry(&self, hex: &str, kind: Kind) -> PathBuf {
        self.compiled_dir.join(format!("{hex}{}", kind.suffix()))
    }

    /// The compiled-code cache entry of `hex` (a module digest without
    /// `sha256:`), if there is one.
    pub fn compiled_path(&self, hex: &str) -> Option<PathBuf> {
        Kind::ALL
            .into_iter()
            .map(|kind| self.entry(hex, kind))
            .find(|path| path.exists())
    }

    /// Loads the module `hex` stored at `wasm_path`: the program another pod
    /// already holds, else from the compiled cache, else by compiling it
    /// (and caching the result).
    ///
    /// This is CPU-heavy: call it from `spawn_blocking`.
    pub fn load(&self, hex: &str, wasm_path: &Path) -> Result<(Arc<Loaded>, Origin), Error> {
        if let Some(loaded) = lock(&self.shared).get(hex).and_then(Weak::upgrade) {
            return Ok((loaded, Origin::Shared));
        }
        let (program, origin) = self.load_unshared(hex, wasm_path)?;
        let loaded = Arc::new(Loaded { program });
        let mut shared = lock(&self.shared);
        shared.retain(|_, weak| weak.strong_count() > 0);
        shared.insert(hex.to_string(), Arc::downgrade(&loaded));
        Ok((loaded, origin))
    }

    fn load_unshared(&self, hex: &str, wasm_path: &Path) -> Result<(Program, Origin), Error> {
        for kind in Kind::ALL {
            let cached = self.entry(hex, kind);
            if !cached.exists() {
                continue;
            }
            match self.load_compiled(&cached, kind) {
                Ok(program) => return Ok((program, Origin::Cache)),
                Err(e) => {
                    // Written by another wasmtime version, or damaged: recompile.
                    tracing::warn!(path = %cached.display(), error = %format!("{e:#}"), "ignoring compiled-code cache entry");
                    let _ = fs::remove_file(&cached);
                }
            }
        }
        let bytes = fs::read(wasm_path).map_err(|source| Error::Io {
            path: wasm_path.to_path_buf(),
            source,
        })?;
        let started = std::time::Instant::now();
        let (program, serialized) = self.compile(&bytes)?;
        tracing::info!(
            module = hex,
            bytes = bytes.len(),
            ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1e3),
            "compiled module"
        );
        let kind = match program {
            Program::Core(_) => Kind::Module,
            Program::Component(_) => Kind::Component,
        };
        let cached = self.entry(hex, kind);
        if let Err(e) = self.write_compiled(&cached, &serialized) {
            tracing::warn!(path = %cached.display(), error = %e, "cannot cache compiled code");
        }
        Ok((program, Origin::Compiled))
    }

    fn load_compiled(&self, path: &Path, kind: Kind) -> wasmtime::Result<Program> {
        match kind {
            Kind::Module => {
                // SAFETY: `deserialize_file` trusts the file to be wasmtime's
                // own output. It is: only this agent writes `compiled/`, in its
                // own data dir, with `Module::serialize` of a module whose
                // digest it verified, and files are renamed into place only
                // once complete and synced to disk (a power cut cannot leave
                // a named file with missing code) and never rewritten in place
                // (the file is mapped: truncating it under a live module
                // would fault). wasmtime still checks the version, the kind
                // and the engine settings recorded in the file and refuses a
                // mismatch.
                let module = unsafe { Module::deserialize_file(&self.engine, path)? };
                Ok(Program::Core(self.core_linker.instantiate_pre(&module)?))
            }
            Kind::Component => {
                // SAFETY: as above, for `Component::serialize`.
                let component = unsafe { Component::deserialize_file(&self.engine, path)? };
                let pre = self.component_linker.instantiate_pre(&component)?;
                Ok(Program::Component(CommandPre::new(pre)?))
            }
        }
    }

    /// Compiles and links `bytes`; returns the program and its serialized code.
    fn compile(&self, bytes: &[u8]) -> Result<(Program, Vec<u8>), Error> {
        let invalid = |e: wasmtime::Error| Error::Invalid(format!("{e:#}"));
        if is_component(bytes) {
            let component = Component::new(&self.engine, bytes).map_err(invalid)?;
            let serialized = component.serialize().map_err(invalid)?;
            let pre = self
                .component_linker
                .instantiate_pre(&component)
                .map_err(invalid)?;
            let pre = CommandPre::new(pre).map_err(invalid)?;
            Ok((Program::Component(pre), serialized))
        } else {
            let module = Module::new(&self.engine, bytes).map_err(invalid)?;
            let serialized = module.serialize().map_err(invalid)?;
            let pre = self.core_linker.instantiate_pre(&module).map_err(invalid)?;
            Ok((Program::Core(pre), serialized))
        }
    }

    fn write_compiled(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        fs::create_dir_all(&self.compiled_dir)?;
        // A unique temporary name: two pods may compile the same digest at once.
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        // A write that fails midway (a full disk) leaves no fragment behind;
        // one cut short by a crash is swept at the next start.
        let write = || {
            let mut file = fs::File::create(&tmp)?;
            io::Write::write_all(&mut file, bytes)?;
            // Synced before it gets its name: this file is loaded as trusted
            // machine code (see `load_compiled`).
            file.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// A WASI context builder with the spec's argv, env and preopens.
    fn builder(spec: &RunSpec) -> Result<WasiCtxBuilder, String> {
        let mut builder = WasiCtxBuilder::new();
        builder.args(spec.argv.as_slice()).envs(spec.env.as_slice());
        spec.network
            .apply(&mut builder, spec.stderr.clone(), &spec.who);
        for m in &spec.mounts {
            let perms = if m.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            if let Err(e) = builder.preopened_dir(&m.host, &m.guest, perms) {
                return Err(format!(
                    "cannot mount {} at {}: {e:#}",
                    m.host.display(),
                    m.guest
                ));
            }
        }
        Ok(builder)
    }

    fn limits(spec: &RunSpec) -> Limits {
        Limits {
            memory: spec
                .memory_limit
                .map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
            refused: None,
        }
    }

    fn core_store(&self, builder: &mut WasiCtxBuilder, limits: Limits) -> Store<CoreState> {
        let state = CoreState {
            wasi: builder.build_p1(),
            limits,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s: &mut CoreState| -> &mut dyn ResourceLimiter { &mut s.limits });
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    fn component_store(
        &self,
        builder: &mut WasiCtxBuilder,
        limits: Limits,
    ) -> Store<ComponentState> {
        let state = ComponentState {
            ctx: builder.build(),
            table: ResourceTable::new(),
            limits,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s: &mut ComponentState| -> &mut dyn ResourceLimiter { &mut s.limits });
        store.epoch_deadline_async_yield_and_update(1);
        store
    }

    /// Runs one instance to its end. Dropping the future stops the instance at
    /// its next epoch yield.
    pub async fn run(&self, loaded: &Loaded, spec: RunSpec) -> Outcome {
        let mut builder = match Self::builder(&spec) {
            Ok(b) => b,
            Err(message) => {
                spec.stdout.finish();
                spec.stderr.finish();
                return Outcome::Trapped(message);
            }
        };
        builder
            .stdin(spec.stop.stdin())
            .stdout(spec.stdout.clone())
            .stderr(spec.stderr.clone());
        let limits = Self::limits(&spec);
        let (result, refused) = match &loaded.program {
            Program::Core(pre) => {
                let mut store = self.core_store(&mut builder, limits);
                let result = self
                    .guest(spec.cpu_limit_milli, async {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                        start.call_async(&mut store, ()).await
                    })
                    .await;
                (result, store.into_data().limits.refused)
            }
            Program::Component(pre) => {
                let mut store = self.component_store(&mut builder, limits);
                let result = self
                    .guest(spec.cpu_limit_milli, async {
                        let command = pre.instantiate_async(&mut store).await?;
                        match command.wasi_cli_run().call_run(&mut store).await? {
                            Ok(()) => Ok(()),
                            Err(()) => Err(wasmtime::Error::new(I32Exit(1))),
                        }
                    })
                    .await;
                (result, store.into_data().limits.refused)
            }
        };
        spec.stdout.finish();
        spec.stderr.finish();
        classify(result, refused)
    }

    /// Runs an `exec` probe: instantiates the program again, in a store of
    /// its own with the spec's argv, env, preopens and limits (stdin closed,
    /// output kept for the message), and calls the export `name`, which
    /// takes nothing and returns an `i32` (`s32`); 0 passes. `_start` is not
    /// run. `Err` says why the probe failed.
    ///
    /// A second instance rather than a call into the running one: a store
    /// runs one call at a time, and `_start` never returns while the
    /// program serves. The probe sees what the guest shares with it through
    /// its volumes, not its memory.
    ///
    /// Dropping the future (a timeout) stops the probe at its next epoch yield.
    pub async fn probe(&self, loaded: &Loaded, spec: &RunSpec, name: &str) -> Result<(), String> {
        let mut builder = Self::builder(spec)?;
        let output = MemoryOutputPipe::new(PROBE_OUTPUT_BYTES);
        builder.stdout(output.clone()).stderr(output.clone());
        let limits = Self::limits(spec);
        let (result, refused) = match &loaded.program {
            Program::Core(pre) => {
                let mut store = self.core_store(&mut builder, limits);
                let result = self
                    .guest(spec.cpu_limit_milli, async {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let Some(func) = instance.get_func(&mut store, name) else {
                            return Err(wasmtime::Error::msg(format!(
                                "the module exports no function \"{name}\""
                            )));
                        };
                        let func = func.typed::<(), i32>(&store).map_err(|_| {
                            wasmtime::Error::msg(format!(
                                "\"{name}\" must take no parameters and return an i32"
                            ))
                        })?;
                        func.call_async(&mut store, ()).await
                    })
                    .await;
                (result, store.into_data().limits.refused)
            }
            Program::Component(pre) => {
                let mut store = self.component_store(&mut builder, limits);
                let result = self
                    .guest(spec.cpu_limit_milli, async {
                        let instance = pre.instance_pre().instantiate_async(&mut store).await?;
                        let Some(func) = instance.get_func(&mut store, name) else {
                            return Err(wasmtime::Error::msg(format!(
                                "the component exports no function \"{name}\""
                            )));
                        };
                        let func = func.typed::<(), (i32,)>(&store).map_err(|_| {
                            wasmtime::Error::msg(format!(
                                "\"{name}\" must take no parameters and return an s32"
                            ))
                        })?;
                        let (code,) = func.call_async(&mut store, ()).await?;
                        Ok(code)
                    })
                    .await;
                (result, store.into_data().limits.refused)
            }
        };
        let code = match result {
            Ok(code) => code,
            // proc_exit(n) in a probe counts as returning n.
            Err(e) => match e.downcast_ref::<I32Exit>() {
                Some(exit) => exit.0,
                None => match classify(Err(e), refused) {
                    Outcome::Exited(code) => code,
                    Outcome::OomKilled(m) | Outcome::Trapped(m) => return Err(m),
                },
            },
        };
        if code == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&output.contents())
            .trim()
            .to_string();
        Err(if text.is_empty() {
            format!("{name} returned {code}")
        } else {
            format!("{name} returned {code}: {text}")
        })
    }
}

impl Runtime {
    /// Runs `guest` held to `milli` thousandths of a CPU, when limited, with
    /// its timers and sockets in the guests' reactor (see [`reactor`]), at
    /// the guests' [`Priority`].
    async fn guest<T>(&self, milli: Option<u64>, guest: impl Future<Output = T>) -> T {
        let guest = self.priority.apply(guest);
        match milli {
            Some(m) => {
                let quota = cpu::Quota::new(m, std::time::Instant::now());
                self.reactor.enter(cpu::throttle(quota, guest)).await
            }
            None => self.reactor.enter(guest).await,
        }
    }
}

/// Removes what is not a cache entry from the compiled-code directory: the
/// temporary file of a write cut short by a crash, and entries named by an
/// older agent (`<digest>.cwasm`). Called at start, before any write.
fn sweep_compiled_dir(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if Kind::ALL.iter().any(|kind| name.ends_with(kind.suffix())) {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => tracing::info!(file = %name, "removed a stale compiled-code file"),
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "cannot remove a stale compiled-code file")
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Maps the end of a guest to an [`Outcome`].
fn classify(result: wasmtime::Result<()>, refused: Option<String>) -> Outcome {
    let err = match result {
        Ok(()) => return Outcome::Exited(0),
        Err(e) => e,
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    if let Some(message) = refused {
        return Outcome::OomKilled(message);
    }
    // A trap's Display already reads `wasm trap: <what>`.
    let mut message = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    // Status messages travel to the hub: keep them short.
    if message.len() > 1024 {
        let mut cut = 1024;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    Outcome::Trapped(message)
}

/// True for the component binary format (its layer field differs from a core module's).
pub fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && &bytes[..4] == b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}
