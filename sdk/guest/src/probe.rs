//! Probe hooks: functions the agent's `exec` probes call.
//!
//! A probe `exec: {command: [healthz]}` calls the program's export
//! `healthz`, which takes nothing and returns a 32-bit integer: 0 passes
//! (docs/runtime.md, "Probes"). [`export_probes!`](crate::export_probes)
//! exports Rust functions under the names `healthz` (for a liveness or
//! startup probe) and `ready` (for a readiness probe), in a core module and
//! in a component alike:
//!
//! ```no_run
//! fn alive() -> bool { true }
//! fn ready() -> Result<(), String> {
//!     std::fs::metadata("/cache/warm").map(drop).map_err(|e| format!("not warm yet: {e}"))
//! }
//! spoke_guest::export_probes!(healthz: alive, ready: ready);
//! ```
//!
//! ```yaml
//! livenessProbe:  {exec: {command: [healthz]}}
//! readinessProbe: {exec: {command: [ready]}}
//! ```
//!
//! A hook may return `bool`, `i32` or `Result<(), E: Display>`; an error's
//! text is printed to stderr, which the agent puts in the probe's failure
//! message. The hook runs in a **second instance** of the program, without
//! `main`: it sees the pod's env, volumes and network (it may, say, connect
//! to the pod's own port on loopback), not the serving instance's memory.
//!
//! In a component the exports are declared through `wit-bindgen` (a world
//! with `export healthz: func() -> s32;`); the macro needs the crate to
//! depend on `spoke-guest` under that name. Other export names: write the
//! world yourself with `wit-bindgen`.

/// What a probe hook may return.
pub trait ProbeResult {
    /// The code the agent reads: 0 passes.
    fn code(self) -> i32;
}

impl ProbeResult for bool {
    fn code(self) -> i32 {
        if self { 0 } else { 1 }
    }
}

impl ProbeResult for i32 {
    fn code(self) -> i32 {
        self
    }
}

impl<E: std::fmt::Display> ProbeResult for Result<(), E> {
    fn code(self) -> i32 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("{e}");
                1
            }
        }
    }
}

/// Exports probe hooks: `healthz: path`, `ready: path`, or both (in that
/// order). See [the module](crate::probe).
#[macro_export]
macro_rules! export_probes {
    (healthz: $healthz:path, ready: $ready:path $(,)?) => {
        $crate::__probe_world!(
            "package spoke:probes; world probes { export healthz: func() -> s32; export ready: func() -> s32; }",
            healthz => $healthz,
            ready => $ready
        );
    };
    (healthz: $healthz:path $(,)?) => {
        $crate::__probe_world!(
            "package spoke:probes; world probes { export healthz: func() -> s32; }",
            healthz => $healthz
        );
    };
    (ready: $ready:path $(,)?) => {
        $crate::__probe_world!(
            "package spoke:probes; world probes { export ready: func() -> s32; }",
            ready => $ready
        );
    };
}

#[doc(hidden)]
#[cfg(target_os = "wasi")]
#[macro_export]
macro_rules! __probe_world {
    ($wit:literal, $($name:ident => $f:path),+) => {
        #[doc(hidden)]
        mod __spoke_probes {
            ::spoke_guest::__wit_bindgen::generate!({
                inline: $wit,
                runtime_path: "::spoke_guest::__wit_bindgen::rt",
            });
        }
        #[doc(hidden)]
        struct __SpokeProbes;
        impl __spoke_probes::Guest for __SpokeProbes {
            $(
                fn $name() -> i32 {
                    $crate::probe::ProbeResult::code($f())
                }
            )+
        }
        __spoke_probes::export!(__SpokeProbes with_types_in __spoke_probes);
    };
}

/// Off WASI (host builds, for tests) nothing is exported; the hooks are
/// still type-checked.
#[doc(hidden)]
#[cfg(not(target_os = "wasi"))]
#[macro_export]
macro_rules! __probe_world {
    ($wit:literal, $($name:ident => $f:path),+) => {
        const _: () = {
            $(
                #[allow(dead_code)]
                fn $name() -> i32 {
                    $crate::probe::ProbeResult::code($f())
                }
            )+
        };
    };
}

#[cfg(test)]
mod tests {
    use super::ProbeResult;

    #[test]
    fn results_map_to_codes() {
        assert_eq!(true.code(), 0);
        assert_eq!(false.code(), 1);
        assert_eq!(7.code(), 7);
        assert_eq!(Ok::<(), String>(()).code(), 0);
        assert_eq!(Err::<(), _>("down").code(), 1);
    }

    fn up() -> bool {
        true
    }
    crate::export_probes!(healthz: up);
}
