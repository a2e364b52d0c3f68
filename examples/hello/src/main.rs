//! The first pod: prints a numbered greeting every second.
//!
//! `GREETING` (from the Pod manifest's `env`) is part of each line, so the
//! manifest visibly reaches the guest. `HELLO_LINES`, when set, makes the
//! program exit with code 0 after that many lines (a pod that completes);
//! `HELLO_EXIT_CODE` changes that exit code (a pod that fails). When the
//! agent asks the pod to stop (its stdin closes), it exits at once.

use std::io::Write;
use std::time::Duration;

fn main() {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "hello".to_string());
    let lines: Option<u64> = std::env::var("HELLO_LINES").ok().and_then(|v| v.parse().ok());
    let exit_code: i32 = std::env::var("HELLO_EXIT_CODE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);

    let mut count: u64 = 0;
    loop {
        count += 1;
        println!("{greeting} from a Wasm pod on spoke: count={count}");
        let _ = std::io::stdout().flush();
        if lines.is_some_and(|n| count >= n) {
            break;
        }
        if spoke_guest::shutdown::sleep(Duration::from_secs(1)) {
            eprintln!("hello: asked to stop");
            break;
        }
    }
    eprintln!("hello: done after {count} lines");
    std::process::exit(exit_code);
}
