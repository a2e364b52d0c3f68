//! Per-pod log files: what guests write to stdout/stderr, bounded and kept across agent restarts.
//!
//! Each line is stored as `<RFC 3339 time> <stream> <text>` in
//! `DATA/logs/<namespace>_<name>.log`. At [`ROTATE_BYTES`] the file becomes
//! `.log.1` (replacing the older one), so a pod never holds more than about
//! twice that on disk.
//!
//! Each instance of a container starts with a marker line
//! `<time> instance <container>` (see [`PodLog::instance_started`]), which
//! is how `logs --previous` finds the previous instance's lines after agent
//! restarts and rotation; the markers are never shown to readers. A pod's
//! containers share one file, so in a pod with several containers the
//! previous instance of one also shows what the others printed meanwhile.
//!
//! Writes go through an 8 KiB buffer that is flushed at most once a second
//! (by the supervisor's flusher), when a pod stops, and before a read: SD
//! cards wear out, and a chatty guest printing one line at a time must not
//! turn into one flash write per line. A crash of the agent can lose up to a
//! second of log lines; that is the trade.
//!
//! A full disk (or any write error) drops lines, never the guest: the error
//! is logged once, the buffer is discarded, and while the episode lasts the
//! log tries again at most once per [`RETRY_INTERVAL`], counting what it
//! drops. A line torn by the error (or by a crash midway through a write)
//! is cut off when the file is opened again, so every line read back is
//! whole.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

/// Size at which a log file is rotated.
pub const ROTATE_BYTES: u64 = 1024 * 1024;

/// While writes fail, how often the log tries again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A partial line longer than this is written out as a line of its own, so
/// that a guest printing without newlines cannot grow memory without end.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// The log of one pod. Cheap to share; all methods take `&self`.
#[derive(Debug)]
pub struct PodLog {
    path: PathBuf,
    inner: Mutex<Writer>,
}

#[derive(Debug)]
struct Writer {
    file: Option<BufWriter<File>>,
    size: u64,
    dirty: bool,
    /// Set while writes fail: when the episode's last attempt was, and how
    /// many lines were dropped since it began.
    failing: Option<(Instant, u64)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves the log usable: it is only bytes.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl PodLog {
    /// Opens (appending) the log of pod `namespace/name` under `dir`; a
    /// line left torn at its end is cut off.
    pub fn open(dir: &Path, namespace: &str, name: &str) -> io::Result<Arc<PodLog>> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{namespace}_{name}.log"));
        let (file, size) = open_whole(&path)?;
        Ok(Arc::new(PodLog {
            path,
            inner: Mutex::new(Writer {
                file: Some(BufWriter::new(file)),
                size,
                dirty: false,
                failing: None,
            }),
        }))
    }

    /// Where the current file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".1");
        PathBuf::from(p)
    }

    /// Appends one complete line (without its newline) from `stream`.
    pub fn line(&self, stream: &str, text: &[u8]) {
        let stamp = humantime::format_rfc3339_millis(SystemTime::now());
        let text = String::from_utf8_lossy(text);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let record = format!("{stamp} {stream} {text}\n");
        let mut w = lock(&self.inner);
        let Some((last_try, dropped)) = w.failing else {
            if let Err(e) = self.append(&mut w, record.as_bytes()) {
                // The guest must not fail because the card is full: drop the line.
                self.failed(&mut w, &e);
            }
            return;
        };
        if last_try.elapsed() < RETRY_INTERVAL {
            w.failing = Some((last_try, dropped + 1));
            return;
        }
        // Written through at once: the episode ends only when bytes are
        // known to be on the file.
        let result = self.append(&mut w, record.as_bytes()).and_then(|()| {
            w.dirty = false;
            w.file.as_mut().expect("append leaves a file").flush()
        });
        match result {
            Ok(()) => {
                tracing::info!(path = %self.path.display(), dropped, "pod log is written again");
                w.failing = None;
            }
            Err(_) => {
                self.discard(&mut w);
                w.failing = Some((Instant::now(), dropped + 1));
            }
        }
    }

    /// Starts a failure episode: logged once, the buffer dropped (it may
    /// hold part of a line; the next open cuts off whatever part of it
    /// reached the file).
    fn failed(&self, w: &mut Writer, e: &io::Error) {
        tracing::warn!(
            path = %self.path.display(),
            error = %e,
            "cannot write pod log: dropping its lines until writing works again"
        );
        self.discard(w);
        w.failing = Some((Instant::now(), 1));
    }

    fn discard(&self, w: &mut Writer) {
        if let Some(f) = w.file.take() {
            // Without flushing: the bytes it holds are what failed.
            let _ = f.into_parts();
        }
        w.dirty = false;
    }

    fn append(&self, w: &mut Writer, record: &[u8]) -> io::Result<()> {
        if w.size + record.len() as u64 > ROTATE_BYTES && w.size > 0 {
            if let Some(mut f) = w.file.take() {
                f.flush()?;
            }
            fs::rename(&self.path, self.rotated_path())?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            w.file = Some(BufWriter::new(file));
            w.size = 0;
        }
        let file = match &mut w.file {
            Some(f) => f,
            None => {
                let (file, size) = open_whole(&self.path)?;
                w.size = size;
                w.file.insert(BufWriter::new(file))
            }
        };
        file.write_all(record)?;
        w.size += record.len() as u64;
        w.dirty = true;
        Ok(())
    }

    /// Records that a new instance of `container` starts: the lines after
    /// this marker (up to the next one for the same container) are that
    /// instance's.
    pub fn instance_started(&self, container: &str) {
        self.line(MARKER, container.as_bytes());
    }

    /// Writes buffered lines to the file.
    pub fn flush(&self) {
        let mut w = lock(&self.inner);
        if !w.dirty {
            return;
        }
        if let Some(f) = &mut w.file
            && let Err(e) = f.flush()
        {
            self.failed(&mut w, &e);
        }
        w.dirty = false;
    }

    /// The last `n` lines as stored (`<time> <stream> <text>`), oldest first,
    /// across the rotated file and the current one.
    pub fn tail(&self, n: usize) -> io::Result<Vec<String>> {
        self.flush();
        let mut text = String::new();
        for path in [self.rotated_path(), self.path.clone()] {
            match File::open(&path) {
                Ok(mut f) => {
                    let mut bytes = Vec::new();
                    f.read_to_end(&mut bytes)?;
                    text.push_str(&String::from_utf8_lossy(&bytes));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        Ok(lines[from..].iter().map(|l| l.to_string()).collect())
    }

    /// The stored lines `query` selects, markers dropped, oldest first,
    /// across the rotated file and the current one.
    pub fn read(&self, query: &Query) -> Result<Vec<String>, ReadError> {
        let stored = self.tail(usize::MAX).map_err(ReadError::Io)?;
        Ok(select(&stored, query)?
            .into_iter()
            .map(str::to_string)
            .collect())
    }

    /// Deletes the files (the pod is gone).
    pub fn remove(&self) {
        let mut w = lock(&self.inner);
        w.file = None;
        w.dirty = false;
        for p in [self.path.clone(), self.rotated_path()] {
            let _ = fs::remove_file(p);
        }
    }

    /// A writer for one stream (`stdout` or `stderr`) of one instance.
    pub fn stream(self: &Arc<Self>, stream: &'static str) -> LogStream {
        LogStream {
            log: self.clone(),
            stream,
            partial: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// Opens `path` for appending and cuts off a torn last line (one without
/// its newline: a write that failed midway, or a crash), so that readers
/// never take a fragment for a line. Returns the file and its size.
fn open_whole(path: &Path) -> io::Result<(File, u64)> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 64 * 1024;
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    let len = file.metadata()?.len();
    let mut last = [0u8];
    if len == 0 || (file.read_at(&mut last, len - 1)? == 1 && last[0] == b'\n') {
        return Ok((file, len));
    }
    // Back to just after the last newline (or to the start).
    let mut end = len;
    let whole = loop {
        let start = end.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut chunk, start)?;
        if let Some(nl) = chunk.iter().rposition(|b| *b == b'\n') {
            break start + nl as u64 + 1;
        }
        if start == 0 {
            break 0;
        }
        end = start;
    };
    tracing::warn!(path = %path.display(), bytes = len - whole, "cut off a torn line at the end of a pod log");
    file.set_len(whole)?;
    Ok((file, whole))
}

/// The stream field of the marker line that starts an instance.
const MARKER: &str = "instance";

/// Which lines of a pod's log a reader wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// Only the lines of the instance of this container before its latest
    /// one (`kubectl logs --previous`).
    pub previous: Option<String>,
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// `previous` was asked for a container that has had one instance (or
    /// whose earlier instances' lines were rotated away).
    #[error("no previous instance of container {0}")]
    NoPrevious(String),
    #[error(transparent)]
    Io(io::Error),
}

fn stamp_of(line: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(line.split(' ').next()?).ok()
}

fn is_marker_of(line: &str, container: Option<&str>) -> bool {
    let mut parts = line.splitn(3, ' ').skip(1);
    parts.next() == Some(MARKER) && container.is_none_or(|c| parts.next() == Some(c))
}

/// The lines of `stored` (as [`PodLog::tail`] returns them) that `query`
/// selects, without the instance markers.
///
/// `previous`: the lines between the container's last two markers; when
/// only one marker is left, the lines before it (they belong to an earlier
/// instance whose marker was rotated away, or to a log written before
/// markers existed). With no marker at all, the whole log is the current
/// instance's. `since` then keeps lines stamped at or after it (a line
/// whose stamp cannot be read is dropped: it cannot be shown to be recent).
pub fn select<'a>(stored: &'a [String], query: &Query) -> Result<Vec<&'a str>, ReadError> {
    let mut range = 0..stored.len();
    if let Some(container) = &query.previous {
        let mut starts = stored
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, l)| is_marker_of(l, Some(container)))
            .map(|(i, _)| i);
        let none = || ReadError::NoPrevious(container.clone());
        let last = starts.next().ok_or_else(none)?;
        range = match starts.next() {
            Some(before) => before + 1..last,
            None if stored[..last].iter().any(|l| !is_marker_of(l, None)) => 0..last,
            None => return Err(none()),
        };
    }
    Ok(stored[range]
        .iter()
        .filter(|l| !is_marker_of(l, None))
        .filter(|l| {
            query
                .since
                .is_none_or(|since| stamp_of(l).is_some_and(|t| t >= since))
        })
        .map(String::as_str)
        .collect())
}

/// The text of a stored line without its time and stream prefix.
pub fn message_of(line: &str) -> &str {
    line.splitn(3, ' ').nth(2).unwrap_or("")
}

/// One output stream of a guest, cut into lines for the [`PodLog`].
///
/// Clones share the partial line, as WASI asks of every handle to the same
/// stream.
#[derive(Debug, Clone)]
pub struct LogStream {
    log: Arc<PodLog>,
    stream: &'static str,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl LogStream {
    fn write_bytes(&self, mut buf: &[u8]) {
        let mut partial = lock(&self.partial);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            partial.extend_from_slice(&buf[..nl]);
            self.log.line(self.stream, &partial);
            partial.clear();
            buf = &buf[nl + 1..];
        }
        partial.extend_from_slice(buf);
        if partial.len() > MAX_LINE_BYTES {
            self.log.line(self.stream, &partial);
            partial.clear();
        }
    }

    /// Writes `text` as a line of its own on this stream, from the agent
    /// (e.g. a refused socket address), without joining the guest's
    /// partial line.
    pub fn note(&self, text: &str) {
        self.log.line(self.stream, text.as_bytes());
    }

    /// Writes out a last line that had no newline (the instance ended).
    pub fn finish(&self) {
        let mut partial = lock(&self.partial);
        if !partial.is_empty() {
            self.log.line(self.stream, &partial);
            partial.clear();
        }
    }
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Writing to the buffered log never waits on the card for long; doing
        // it inline keeps the guest's output ordered.
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl wasmtime_wasi::cli::IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for LogStream {
    /// What preview 1 and preview 2 guests write through. Without it,
    /// wasmtime-wasi wraps [`Self::async_stream`] in a stream whose writes
    /// go through a task of their own: a spawned task per stream and a
    /// cross-thread wake-up per write (tens of microseconds each), to append
    /// to a buffer in memory.
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

/// Written inline, like [`tokio::io::AsyncWrite`] above: the log's buffer
/// takes any amount at once.
impl wasmtime_wasi::p2::OutputStream for LogStream {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        // What a guest may hand over in one write (as wasmtime-wasi's file
        // stream offers).
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for LogStream {
    /// Always ready: writes never wait.
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_stamped_with_time_and_stream() {
        let dir = tempfile::tempdir().unwrap();
        let log = PodLog::open(dir.path(), "default", "p").unwrap();
        let out = log.stream("stdout");
        out.write_bytes(b"hel");
        out.write_bytes(b"lo\nwor");
        out.finish();
        let lines = log.tail(10).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].ends_with(" stdout hello"), "{}", lines[0]);
        assert_eq!(message_of(&lines[1]), "wor");
        let stamp = lines[0].split(' ').next().unwrap();
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
    }

    #[test]
    fn tail_returns_the_last_lines_after_rotation_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let log = PodLog::open(dir.path(), "default", "p").unwrap();
        let filler = "x".repeat(1000);
        let total = 3000; // ~3 MiB: rotates at least twice
        for i in 0..total {
            log.line("stdout", format!("{i} {filler}").as_bytes());
        }
        log.flush();
        let current = fs::metadata(log.path()).unwrap().len();
        assert!(current <= ROTATE_BYTES, "current file is {current} bytes");
        assert!(log.rotated_path().exists());
        drop(log);

        // A new agent process reopens the same file.
        let log = PodLog::open(dir.path(), "default", "p").unwrap();
        let lines = log.tail(5).unwrap();
        let numbers: Vec<&str> = lines
            .iter()
            .map(|l| message_of(l).split(' ').next().unwrap())
            .collect();
        assert_eq!(numbers, ["2995", "2996", "2997", "2998", "2999"]);
        // More lines than kept: everything in both files, in order.
        let all = log.tail(usize::MAX).unwrap();
        assert!(all.len() < total && all.len() > 1000, "{}", all.len());
        assert_eq!(
            message_of(all.last().unwrap()).split(' ').next(),
            Some("2999")
        );
    }

    fn stored(lines: &[(&str, &str, &str)]) -> Vec<String> {
        lines
            .iter()
            .map(|(t, stream, text)| format!("{t} {stream} {text}"))
            .collect()
    }

    fn texts(lines: Vec<&str>) -> Vec<&str> {
        lines.into_iter().map(message_of).collect()
    }

    fn previous(container: &str) -> Query {
        Query {
            previous: Some(container.into()),
            ..Query::default()
        }
    }

    #[test]
    fn previous_is_the_instance_before_the_latest_marker() {
        let log = stored(&[
            ("2026-01-01T00:00:00.000Z", "instance", "main"),
            ("2026-01-01T00:00:01.000Z", "stdout", "first run"),
            ("2026-01-01T00:00:02.000Z", "instance", "main"),
            ("2026-01-01T00:00:03.000Z", "stderr", "second run"),
            ("2026-01-01T00:00:04.000Z", "instance", "main"),
            ("2026-01-01T00:00:05.000Z", "stdout", "third run"),
        ]);
        let all = select(&log, &Query::default()).unwrap();
        assert_eq!(texts(all), ["first run", "second run", "third run"]);
        let prev = select(&log, &previous("main")).unwrap();
        assert_eq!(texts(prev), ["second run"]);
        // Another container's markers do not cut this one's instances.
        assert!(matches!(
            select(&log, &previous("side")),
            Err(ReadError::NoPrevious(c)) if c == "side"
        ));
    }

    #[test]
    fn previous_fails_for_a_first_instance_and_falls_back_after_rotation() {
        let first = stored(&[
            ("2026-01-01T00:00:00.000Z", "instance", "main"),
            ("2026-01-01T00:00:01.000Z", "stdout", "only run"),
        ]);
        assert!(matches!(
            select(&first, &previous("main")),
            Err(ReadError::NoPrevious(_))
        ));
        // The older instance's marker was rotated away (or the log predates
        // markers): what comes before the one marker left is the previous.
        let rotated = stored(&[
            ("2026-01-01T00:00:01.000Z", "stdout", "tail of an old run"),
            ("2026-01-01T00:00:02.000Z", "instance", "main"),
            ("2026-01-01T00:00:03.000Z", "stdout", "new run"),
        ]);
        let prev = select(&rotated, &previous("main")).unwrap();
        assert_eq!(texts(prev), ["tail of an old run"]);
        // A previous instance that printed nothing is an empty log, not an error.
        let quiet = stored(&[
            ("2026-01-01T00:00:00.000Z", "instance", "main"),
            ("2026-01-01T00:00:01.000Z", "instance", "main"),
            ("2026-01-01T00:00:02.000Z", "stdout", "talkative"),
        ]);
        assert!(select(&quiet, &previous("main")).unwrap().is_empty());
        assert!(matches!(
            select(&[], &previous("main")),
            Err(ReadError::NoPrevious(_))
        ));
    }

    #[test]
    fn since_keeps_lines_stamped_at_or_after_it() {
        let log = stored(&[
            ("2026-01-01T00:00:00.000Z", "instance", "main"),
            ("2026-01-01T00:00:01.000Z", "stdout", "old"),
            ("2026-01-01T00:00:02.000Z", "stdout", "edge"),
            ("garbled", "stdout", "unknown age"),
            ("2026-01-01T00:00:02.500Z", "instance", "main"),
            ("2026-01-01T00:00:03.000Z", "stdout", "new"),
        ]);
        let since = |t: &str| Query {
            since: Some(humantime::parse_rfc3339(t).unwrap()),
            ..Query::default()
        };
        let recent = select(&log, &since("2026-01-01T00:00:02Z")).unwrap();
        assert_eq!(texts(recent), ["edge", "new"]);
        assert!(
            select(&log, &since("2027-01-01T00:00:00Z"))
                .unwrap()
                .is_empty()
        );
        // Both: the previous instance, then only its recent lines.
        let both = Query {
            previous: Some("main".into()),
            ..since("2026-01-01T00:00:01.500Z")
        };
        assert_eq!(texts(select(&log, &both).unwrap()), ["edge"]);
    }

    #[test]
    fn markers_survive_rotation_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let log = PodLog::open(dir.path(), "default", "p").unwrap();
        log.instance_started("main");
        log.line("stdout", b"from the first instance");
        log.instance_started("main");
        // Enough to rotate the first instance's marker into `.log.1`.
        let filler = "y".repeat(1000);
        for _ in 0..1100 {
            log.line("stdout", filler.as_bytes());
        }
        log.flush();
        assert!(log.rotated_path().exists());
        drop(log);
        let log = PodLog::open(dir.path(), "default", "p").unwrap();
        log.instance_started("main");
        log.line("stdout", b"from the third instance");
        let prev = log.read(&previous("main")).unwrap();
        assert!(!prev.is_empty() && prev.len() <= 1100, "{}", prev.len());
        assert!(prev.iter().all(|l| message_of(l) == filler));
        let all = log.read(&Query::default()).unwrap();
        assert_eq!(message_of(all.last().unwrap()), "from the third instance");
        assert!(all.iter().all(|l| !l.contains(" instance ")));
    }

    #[test]
    fn removing_a_log_deletes_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = PodLog::open(dir.path(), "default", "p").unwrap();
        log.line("stderr", b"bye");
        log.flush();
        log.remove();
        assert!(!log.path().exists());
    }

    #[test]
    fn a_torn_last_line_is_cut_off_when_the_log_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("default_p.log");
        let whole = "2026-01-01T00:00:00.000Z stdout one\n2026-01-01T00:00:01.000Z stdout two\n";
        fs::write(&path, format!("{whole}2026-01-01T00:00:02.0")).unwrap();
        let log = PodLog::open(dir.path(), "default", "p").unwrap();
        log.line("stdout", b"three");
        let lines = log.tail(10).unwrap();
        let texts: Vec<&str> = lines.iter().map(|l| message_of(l)).collect();
        assert_eq!(texts, ["one", "two", "three"]);
        assert!(fs::read_to_string(&path).unwrap().starts_with(whole));
        // A fragment with no newline at all goes whole; a log that ends
        // with its newline is left as it is.
        fs::write(&path, "2026-01-01T00:00:02.0").unwrap();
        drop(PodLog::open(dir.path(), "default", "p").unwrap());
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
        fs::write(&path, whole).unwrap();
        drop(PodLog::open(dir.path(), "default", "p").unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), whole);
    }

    #[test]
    fn a_full_disk_drops_lines_in_one_episode_and_writing_resumes_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("default_p.log");
        // /dev/full answers every write with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let log = PodLog::open(dir.path(), "default", "p").unwrap();
        let line = "z".repeat(100);
        for _ in 0..500 {
            log.line("stdout", line.as_bytes());
            log.flush();
        }
        let (_, dropped) = lock(&log.inner).failing.expect("a failure episode");
        // Everything after the buffer first filled up, in one episode.
        assert!(dropped > 400, "{dropped}");
        assert!(lock(&log.inner).file.is_none());

        // Space returns (here: a real file again); the next line after the
        // retry interval ends the episode and is on disk at once.
        fs::remove_file(&path).unwrap();
        std::thread::sleep(RETRY_INTERVAL + Duration::from_millis(50));
        log.line("stdout", b"back");
        assert!(lock(&log.inner).failing.is_none());
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .ends_with(" stdout back\n")
        );
        log.line("stdout", b"and on");
        let lines = log.tail(10).unwrap();
        let texts: Vec<&str> = lines.iter().map(|l| message_of(l)).collect();
        assert_eq!(texts, ["back", "and on"]);
    }
}
