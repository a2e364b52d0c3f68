//! batch: a Job's worker that takes text files from a shared volume, counts
//! their lines and words, and writes one JSON result per file.
//!
//! Layout under the volume (default `/data`): `in/` holds the work, a worker
//! claims a file by renaming it into `claimed/` (a rename succeeds for one
//! worker only, so parallel pods never process a file twice), and writes
//! `out/<file>.json`. Each pod processes up to `BATCH_FILES` files (default 1)
//! and exits 0, also when nothing is left, so a Job's `completions` count
//! finished workers. Settings: `BATCH_DIR`, `BATCH_FILES`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Deserialize)]
struct Settings {
    #[serde(default = "default_dir")]
    dir: PathBuf,
    #[serde(default = "default_files")]
    files: u32,
}

fn default_dir() -> PathBuf {
    "/data".into()
}

fn default_files() -> u32 {
    1
}

/// Takes the first file of `in/` that no other worker took first.
fn claim(dir: &Path) -> std::io::Result<Option<(String, PathBuf)>> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("in"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    for name in names {
        let claimed = dir.join("claimed").join(&name);
        match std::fs::rename(dir.join("in").join(&name), &claimed) {
            Ok(()) => return Ok(Some((name, claimed))),
            // Another worker was faster: try the next one.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn process(dir: &Path, name: &str, path: &Path) -> std::io::Result<(usize, usize)> {
    let text = std::fs::read_to_string(path)?;
    let lines = text.lines().count();
    let words = text.split_whitespace().count();
    let result = format!("{{\"file\":{name:?},\"lines\":{lines},\"words\":{words}}}\n");
    let tmp = dir.join("out").join(format!(".{name}.json.tmp"));
    std::fs::write(&tmp, result)?;
    std::fs::rename(&tmp, dir.join("out").join(format!("{name}.json")))?;
    Ok((lines, words))
}

fn main() {
    let settings: Settings = spoke_guest::config::from_env("BATCH_").unwrap_or_else(|e| {
        spoke_guest::error!("bad settings"; error = e.to_string());
        std::process::exit(2)
    });
    let dir = &settings.dir;
    for sub in ["claimed", "out"] {
        if let Err(e) = std::fs::create_dir_all(dir.join(sub)) {
            spoke_guest::error!("cannot prepare the volume"; dir = dir.join(sub), error = e.to_string());
            std::process::exit(1);
        }
    }
    let mut done = 0;
    while done < settings.files {
        match claim(dir) {
            Ok(Some((name, path))) => match process(dir, &name, &path) {
                Ok((lines, words)) => {
                    spoke_guest::info!("processed"; file = name, lines = lines, words = words);
                    done += 1;
                }
                Err(e) => {
                    spoke_guest::error!("cannot process"; file = name, error = e.to_string());
                    std::process::exit(1);
                }
            },
            Ok(None) => break,
            Err(e) => {
                spoke_guest::error!("cannot list the work"; dir = dir.join("in"), error = e.to_string());
                std::process::exit(1);
            }
        }
    }
    spoke_guest::info!("finished"; files = done);
}
