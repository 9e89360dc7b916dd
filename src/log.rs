//! The daemon's log: the AWS daemon's line format and levels, JSON lines, a rotating log file, and
//! rate-limited summaries.
//!
//! Lines look like `2026-11-26T10:20:32Z [Info] message` (or, with `--log-format json`,
//! `{"time":"...","level":"info","message":"...","fields":{...}}`). Callers use the
//! [`info!`](crate::info) family of macros; a disabled level costs one atomic load.
//!
//! Once [`init`] ran, lines are handed to a writer thread through a bounded queue: a caller never
//! waits for the disk or a pipe. When the queue is full (the output cannot keep up) lines are
//! dropped and counted, and the writer reports how many. Write errors are counted, never raised.
//! [`flush`] waits (bounded) for queued lines to be written, for the end of the process.
//!
//! A message is one line whatever it holds: text lines spell control characters (newlines, ESC,
//! C1, DEL), line separators and bidirectional controls as `\n`, `\x1b`, `\u{202e}` (JSON lines
//! escape them as JSON does), so ids, paths and error texts from outside cannot forge a line or
//! drive a terminal. A message longer than 8 KiB is cut and marked `…(N bytes)`; [`excerpt`]
//! bounds a single outside value tighter.

use crate::json::json_string;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::{Mutex, PoisonError};

/// Log levels, most verbose first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    /// Nothing is logged.
    Silent = 5,
}

impl Level {
    /// Parses a `-l` value: dev, debug, info, warn, error, prod (= info), silent.
    pub fn parse(s: &str) -> Option<Level> {
        Some(match s.to_ascii_lowercase().as_str() {
            "dev" | "trace" => Level::Trace,
            "debug" => Level::Debug,
            "info" | "prod" => Level::Info,
            "warn" => Level::Warn,
            "error" => Level::Error,
            "silent" => Level::Silent,
            _ => return None,
        })
    }

    /// The `-l` value that selects this level.
    pub fn name(self) -> &'static str {
        match self {
            Level::Trace => "dev",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Silent => "silent",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Level::Trace => "Trace",
            Level::Debug => "Debug",
            Level::Info => "Info",
            Level::Warn => "Warn",
            Level::Error => "Error",
            Level::Silent => "",
        }
    }

    fn json_label(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Silent => "",
        }
    }
}

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `<RFC 3339 time> [Level] message key=value...`, as the AWS daemon writes.
    Text = 0,
    /// One JSON object per line: `time`, `level`, `message`, and `fields` when there are any.
    Json = 1,
}

impl Format {
    /// Parses a `--log-format` value.
    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Where lines go.
pub enum Output {
    Stdout,
    Stderr,
    /// A file, appended to; rotated when it would grow past `rotate_at` bytes (the old file becomes
    /// `<path>.1`, replacing an older one).
    File {
        path: String,
        rotate_at: Option<u64>,
    },
    /// Any writer (tests).
    Writer(Box<dyn Write + Send>),
}

/// A field value attached to a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    U(u64),
    I(i64),
    F(f64),
    B(bool),
    S(&'a str),
}

macro_rules! value_from {
    ($($t:ty => $v:ident as $c:ty),*) => {$(
        impl From<$t> for Value<'_> {
            fn from(v: $t) -> Self {
                Value::$v(v as $c)
            }
        }
    )*};
}
value_from!(u64 => U as u64, u32 => U as u64, usize => U as u64, i64 => I as i64, i32 => I as i64, f64 => F as f64);

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Value::B(v)
    }
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Value::S(v)
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Value::S(v)
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);
static SINK: OnceLock<Sink> = OnceLock::new();
/// The writer thread writes to a log file.
static TO_FILE: AtomicBool = AtomicBool::new(false);
static TZ: OnceLock<jiff::tz::TimeZone> = OnceLock::new();
/// Lines dropped because the queue was full, not yet reported.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines that could not be written (I/O errors), since start.
static WRITE_ERRORS: AtomicU64 = AtomicU64::new(0);

/// Lines the queue holds before new ones are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// The writer's pause after each write: lines appear at most this late.
const GATHER: Duration = Duration::from_millis(20);

enum Msg {
    Line(String),
    Flush(Sender<()>),
    /// Close and reopen the log file (after logrotate moved it away).
    Reopen,
}

enum Sink {
    /// Before [`init`] (unit tests, early start-up): written by the caller.
    Direct(Mutex<Box<dyn Write + Send>>),
    /// After [`init`]: queued for the writer thread.
    Queue(Sender<Msg>),
}

/// Sets the level and format, opens the output and starts the writer thread. Fails only when a
/// log file cannot be opened. Only the first call has effect on the output.
pub fn init(level: Level, format: Format, output: Output) -> io::Result<()> {
    set_level(level);
    set_format(format);
    let mut dest = Destination::open(output)?;
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_LINES);
    let to_file = matches!(dest.out, Target::File(_));
    if SINK.set(Sink::Queue(tx)).is_err() {
        return Ok(());
    }
    TO_FILE.store(to_file, Relaxed);
    std::thread::Builder::new()
        .name("xrayd-log".into())
        .spawn(move || dest.run(rx))?;
    Ok(())
}

/// Changes the level.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Relaxed);
}

/// Changes the format.
pub fn set_format(format: Format) {
    FORMAT.store(format as u8, Relaxed);
}

/// Would a line at `level` be written?
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 >= LEVEL.load(Relaxed) && level != Level::Silent
}

/// Writes one line (use the macros).
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    write_fields(level, &[], args)
}

/// Writes one line with fields (use the macros' `fields: [...]` form).
pub fn write_fields(level: Level, fields: &[(&str, Value<'_>)], args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    emit(line(level, fields, args));
}

/// The line [`write_fields`] would write, newline included, in the current format (whatever the
/// level): what the writer thread receives.
pub fn line(level: Level, fields: &[(&str, Value<'_>)], args: std::fmt::Arguments<'_>) -> String {
    if FORMAT.load(Relaxed) == Format::Json as u8 {
        json_line(level, fields, args)
    } else {
        text_line(level, fields, args)
    }
}

/// Where lines go before the daemon sets up its log: stdout. In unit tests, the test harness's
/// captured output instead, so that a passing test's log lines are not printed.
fn default_output() -> Box<dyn Write + Send> {
    #[cfg(not(test))]
    return Box::new(io::stdout());
    #[cfg(test)]
    return Box::new(Captured);
}

/// Unit tests only: writes through `print!`, which the test harness captures.
#[cfg(test)]
struct Captured;

#[cfg(test)]
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        print!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn emit(line: String) {
    match SINK.get_or_init(|| Sink::Direct(Mutex::new(default_output()))) {
        Sink::Queue(tx) => match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                WRITE_ERRORS.fetch_add(1, Relaxed);
            }
        },
        Sink::Direct(out) => {
            let mut w = out.lock().unwrap_or_else(PoisonError::into_inner);
            if w.write_all(line.as_bytes())
                .and_then(|_| w.flush())
                .is_err()
            {
                WRITE_ERRORS.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Waits until every line queued so far is written, at most `timeout`. Call before exiting.
pub fn flush(timeout: Duration) {
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let deadline = Instant::now() + timeout;
    if send_control(Msg::Flush(done_tx), deadline) {
        let _ = done_rx.recv_deadline(deadline);
    }
}

/// Has the writer close the log file and open it again by its path, after the lines queued so
/// far: what `kill -HUP` after logrotate moved the file away asks for. Lines queued after this
/// call go to the new file. False (and nothing done) when the log is not a file.
pub fn reopen() -> bool {
    TO_FILE.load(Relaxed) && send_control(Msg::Reopen, Instant::now() + Duration::from_secs(1))
}

/// Queues a control message behind the lines queued so far; the queue may be full, so this keeps
/// trying until `deadline`. False when it could not be queued (or there is no writer thread).
fn send_control(mut msg: Msg, deadline: Instant) -> bool {
    let Some(Sink::Queue(tx)) = SINK.get() else {
        return false;
    };
    loop {
        match tx.try_send(msg) {
            Ok(()) => return true,
            Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                msg = back;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => return false,
        }
    }
}

/// Lines that could not be written since start (I/O errors).
pub fn write_errors() -> u64 {
    WRITE_ERRORS.load(Relaxed)
}

fn text_line(level: Level, fields: &[(&str, Value<'_>)], args: std::fmt::Arguments<'_>) -> String {
    let mut line = String::with_capacity(128);
    push_timestamp(&mut line);
    line.push_str(" [");
    line.push_str(level.label());
    line.push_str("] ");
    // The message is formatted in place; only one that is too long or holds something to escape
    // is taken out again and written the careful way.
    let start = line.len();
    match args.as_str() {
        Some(s) => line.push_str(s),
        None => {
            let _ = line.write_fmt(args);
        }
    }
    if line.len() - start > MAX_MESSAGE_BYTES || needs_escape(&line[start..]) {
        let message = line.split_off(start);
        push_escaped(&mut line, &excerpt(&message, MAX_MESSAGE_BYTES));
    }
    for (k, v) in fields {
        let _ = match v {
            Value::U(n) => write!(line, " {k}={n}"),
            Value::I(n) => write!(line, " {k}={n}"),
            Value::F(n) => write!(line, " {k}={n}"),
            Value::B(b) => write!(line, " {k}={b}"),
            Value::S(s) if s.is_empty() || s.contains([' ', '"', '=']) || needs_escape(s) => {
                write!(line, " {k}={}", json_text(s))
            }
            Value::S(s) => write!(line, " {k}={s}"),
        };
    }
    line.push('\n');
    line
}

/// Longest message written whole; a longer one is cut there and marked `…(N bytes)`.
const MAX_MESSAGE_BYTES: usize = 8 * 1024;

fn message_of(args: std::fmt::Arguments<'_>) -> std::borrow::Cow<'_, str> {
    match args.as_str() {
        Some(s) => s.into(),
        None => args.to_string().into(),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// A bounded excerpt of a value that came from outside (an answer body, a file's value) for a
/// message: at most `max` bytes, then `…(N bytes)` naming the whole length. Control characters
/// need no care here: the text log escapes them in every line (see [`escape`]).
pub fn excerpt(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        s.into()
    } else {
        format!("{}…({} bytes)", bounded(s, max), s.len()).into()
    }
}

/// Characters a text line never holds as they are: they could end the line early (and forge the
/// next one), drive the terminal (ESC sequences) or reorder what is shown (bidirectional
/// overrides). Tab is kept.
fn must_escape(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

fn needs_escape(s: &str) -> bool {
    // Each such character has a byte outside printable ASCII, so plain text needs one byte scan.
    s.bytes().any(|b| !(b' '..=b'~').contains(&b) && b != b'\t') && s.chars().any(must_escape)
}

/// Appends `s` with every [`must_escape`] character spelled out: `\n`, `\r`, `\x1b`, `\u{202e}`.
fn push_escaped(out: &mut String, s: &str) {
    if !needs_escape(s) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if must_escape(c) && c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if must_escape(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `s` as a JSON string whose text is plain to a terminal too: what JSON leaves as it is (DEL, C1
/// controls, line separators, bidirectional controls) is written as `\uXXXX`.
fn json_text(s: &str) -> String {
    let quoted = json_string(s);
    if !needs_escape(&quoted) {
        return quoted;
    }
    let mut out = String::with_capacity(quoted.len() + 8);
    for c in quoted.chars() {
        if must_escape(c) {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// `s` as the text log writes it: control characters, line and paragraph separators and
/// bidirectional controls escaped, so a value from outside can never start a line of its own.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if needs_escape(s) {
        let mut out = String::with_capacity(s.len() + 8);
        push_escaped(&mut out, s);
        out.into()
    } else {
        s.into()
    }
}

fn json_line(level: Level, fields: &[(&str, Value<'_>)], args: std::fmt::Arguments<'_>) -> String {
    let message = message_of(args);
    let message = json_text(&excerpt(&message, MAX_MESSAGE_BYTES));
    let mut line = format!(
        "{{\"time\":{},\"level\":\"{}\",\"message\":{}",
        json_string(&timestamp_millis()),
        level.json_label(),
        message
    );
    if !fields.is_empty() {
        line.push_str(",\"fields\":{");
        for (i, (k, v)) in fields.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&json_string(k));
            line.push(':');
            let _ = match v {
                Value::U(n) => write!(line, "{n}"),
                Value::I(n) => write!(line, "{n}"),
                Value::F(n) if n.is_finite() => write!(line, "{n}"),
                Value::F(_) => write!(line, "null"),
                Value::B(b) => write!(line, "{b}"),
                Value::S(s) => write!(line, "{}", json_text(s)),
            };
        }
        line.push('}');
    }
    line.push_str("}\n");
    line
}

fn local(t: jiff::Timestamp) -> jiff::Zoned {
    let tz = TZ.get_or_init(jiff::tz::TimeZone::system);
    t.to_zoned(tz.clone())
}

fn utc_as_z(s: String) -> String {
    match s.strip_suffix("+00:00") {
        Some(base) => format!("{base}Z"),
        None => s,
    }
}

/// Local time, RFC 3339 to the second (`Z` for UTC), as the AWS daemon prints it.
pub fn timestamp() -> String {
    let mut s = String::with_capacity(25);
    push_timestamp(&mut s);
    s
}

/// `t` in local time, RFC 3339 to the second (`Z` for UTC).
fn format_second(t: jiff::Timestamp) -> String {
    utc_as_z(local(t).strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
}

thread_local! {
    /// The second this thread last wrote a timestamp for, and that timestamp: converting to local
    /// time and formatting is done once a second, not once a line.
    static SECOND: std::cell::RefCell<(i64, String)> =
        const { std::cell::RefCell::new((i64::MIN, String::new())) };
}

/// Appends [`timestamp`] for now.
fn push_timestamp(out: &mut String) {
    push_timestamp_at(out, jiff::Timestamp::now());
}

/// Appends the [`timestamp`] of `now` (through this thread's cached second).
fn push_timestamp_at(out: &mut String, now: jiff::Timestamp) {
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != now.as_second() {
            *text = format_second(now);
            *second = now.as_second();
        }
        out.push_str(text);
    });
}

/// Local time, RFC 3339 with milliseconds (JSON lines).
pub fn timestamp_millis() -> String {
    utc_as_z(
        local(jiff::Timestamp::now())
            .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
    )
}

/// The writer thread's side: the output, and the log file's rotation state.
struct Destination {
    out: Target,
    /// Last time an I/O problem was reported on stderr.
    last_complaint: Option<Instant>,
}

enum Target {
    Stream(Box<dyn Write + Send>),
    File(LogFile),
}

struct LogFile {
    path: String,
    file: Option<io::BufWriter<File>>,
    size: u64,
    rotate_at: Option<u64>,
    /// After a failed rotation or open, the next attempt waits until then.
    retry_at: Option<Instant>,
}

fn open_append(path: &str) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Destination {
    fn open(output: Output) -> io::Result<Destination> {
        let out = match output {
            // Buffered: the lines gathered in one wake-up go out in one write, not one each.
            Output::Stdout => Target::Stream(Box::new(io::BufWriter::with_capacity(
                64 * 1024,
                io::stdout(),
            ))),
            Output::Stderr => Target::Stream(Box::new(io::BufWriter::with_capacity(
                64 * 1024,
                io::stderr(),
            ))),
            Output::Writer(w) => Target::Stream(w),
            Output::File { path, rotate_at } => {
                let file = open_append(&path)?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                Target::File(LogFile {
                    path,
                    file: Some(io::BufWriter::with_capacity(64 * 1024, file)),
                    size,
                    rotate_at,
                    retry_at: None,
                })
            }
        };
        Ok(Destination {
            out,
            last_complaint: None,
        })
    }

    fn run(&mut self, rx: Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut acks = Vec::new();
            let mut next = Some(first);
            // Write everything already queued, then flush once.
            while let Some(msg) = next {
                match msg {
                    Msg::Line(line) => self.write_line(&line),
                    Msg::Flush(ack) => acks.push(ack),
                    Msg::Reopen => self.reopen(),
                }
                next = rx.try_recv().ok();
            }
            let dropped = DROPPED.swap(0, Relaxed);
            if dropped > 0 {
                let line = if FORMAT.load(Relaxed) == Format::Json as u8 {
                    json_line(
                        Level::Warn,
                        &[("dropped_lines", Value::U(dropped))],
                        format_args!("Log output could not keep up: log lines were dropped"),
                    )
                } else {
                    text_line(
                        Level::Warn,
                        &[],
                        format_args!(
                            "Log output could not keep up: {dropped} log lines were dropped"
                        ),
                    )
                };
                self.write_line(&line);
            }
            self.flush();
            for ack in acks {
                let _ = ack.send(());
            }
            // Let lines gather: under steady logging (a line per batch) the writer then wakes a
            // few dozen times a second instead of once per line.
            std::thread::sleep(GATHER);
        }
        self.flush();
    }

    fn write_line(&mut self, line: &str) {
        let result = match &mut self.out {
            Target::Stream(w) => w.write_all(line.as_bytes()),
            Target::File(f) => f.write_line(line.as_bytes()),
        };
        if let Err(e) = result {
            self.complain(&e);
        }
    }

    fn flush(&mut self) {
        let result = match &mut self.out {
            Target::Stream(w) => w.flush(),
            Target::File(f) => f.file.as_mut().map_or(Ok(()), |w| w.flush()),
        };
        if let Err(e) = result {
            self.complain(&e);
        }
    }

    /// Closes the log file (flushing it) and opens the file at its path again.
    fn reopen(&mut self) {
        if let Target::File(f) = &mut self.out {
            let flushed = f.file.take().map_or(Ok(()), |mut w| w.flush());
            let reopened = f.reopen();
            if let Err(e) = flushed.and(reopened) {
                self.complain(&e);
            }
        }
    }

    /// Counts a failed write and says so on stderr at most once a minute.
    fn complain(&mut self, e: &io::Error) {
        WRITE_ERRORS.fetch_add(1, Relaxed);
        let now = Instant::now();
        if self
            .last_complaint
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.last_complaint = Some(now);
            let line = format!(
                "{} [Error] Cannot write the log: {} ({} lines lost so far)",
                timestamp(),
                escape(&e.to_string()),
                WRITE_ERRORS.load(Relaxed)
            );
            // In unit tests through the harness's captured output (a passing test prints nothing).
            #[cfg(test)]
            eprintln!("{line}");
            #[cfg(not(test))]
            let _ = writeln!(io::stderr(), "{line}");
        }
    }
}

impl LogFile {
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let len = line.len() as u64;
        if let Some(limit) = self.rotate_at
            && self.size > 0
            && self.size + len > limit
            && self.may_try()
        {
            self.rotate()?;
        }
        if self.file.is_none() && self.may_try() {
            self.reopen()?;
        }
        match &mut self.file {
            Some(w) => {
                w.write_all(line)?;
                self.size += len;
                Ok(())
            }
            None => Err(io::Error::other(format!(
                "log file {} is not open",
                self.path
            ))),
        }
    }

    fn may_try(&self) -> bool {
        self.retry_at.is_none_or(|t| Instant::now() >= t)
    }

    /// Renames the file to `<path>.1` (replacing an older one) and starts a new one.
    fn rotate(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.file.take() {
            w.flush()?;
        }
        let rolled = format!("{}.1", self.path);
        if let Err(e) = std::fs::rename(&self.path, &rolled) {
            // Keep writing to the current file; try again in a while.
            self.retry_at = Some(Instant::now() + Duration::from_secs(10));
            self.file = open_append(&self.path)
                .ok()
                .map(|f| io::BufWriter::with_capacity(64 * 1024, f));
            return Err(io::Error::other(format!(
                "cannot rotate {} to {rolled}: {e}",
                self.path
            )));
        }
        self.reopen()
    }

    fn reopen(&mut self) -> io::Result<()> {
        match open_append(&self.path) {
            Ok(f) => {
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.file = Some(io::BufWriter::with_capacity(64 * 1024, f));
                self.retry_at = None;
                Ok(())
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                Err(io::Error::other(format!(
                    "cannot open log file {}: {e}",
                    self.path
                )))
            }
        }
    }
}

/// Logs at Error. `error!(fields: [("k", v), ...], "message {}", x)` attaches fields.
#[macro_export]
macro_rules! error {
    (fields: [$(($k:expr, $v:expr)),* $(,)?], $($t:tt)*) => { $crate::log::write_fields($crate::log::Level::Error, &[$(($k, $crate::log::Value::from($v))),*], format_args!($($t)*)) };
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) };
}
/// Logs at Warn.
#[macro_export]
macro_rules! warn {
    (fields: [$(($k:expr, $v:expr)),* $(,)?], $($t:tt)*) => { $crate::log::write_fields($crate::log::Level::Warn, &[$(($k, $crate::log::Value::from($v))),*], format_args!($($t)*)) };
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($t)*)) };
}
/// Logs at Info.
#[macro_export]
macro_rules! info {
    (fields: [$(($k:expr, $v:expr)),* $(,)?], $($t:tt)*) => { $crate::log::write_fields($crate::log::Level::Info, &[$(($k, $crate::log::Value::from($v))),*], format_args!($($t)*)) };
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) };
}
/// Logs at Debug.
#[macro_export]
macro_rules! debug {
    (fields: [$(($k:expr, $v:expr)),* $(,)?], $($t:tt)*) => { $crate::log::write_fields($crate::log::Level::Debug, &[$(($k, $crate::log::Value::from($v))),*], format_args!($($t)*)) };
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($t)*)) };
}
/// Logs at Trace.
#[macro_export]
macro_rules! trace {
    (fields: [$(($k:expr, $v:expr)),* $(,)?], $($t:tt)*) => { $crate::log::write_fields($crate::log::Level::Trace, &[$(($k, $crate::log::Value::from($v))),*], format_args!($($t)*)) };
    ($($t:tt)*) => { $crate::log::write($crate::log::Level::Trace, format_args!($($t)*)) };
}

/// Lets one message through per interval and counts the ones it held back, so a flood of
/// per-datagram problems becomes one summary line.
pub struct Throttle {
    interval: Duration,
    start: Instant,
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttle {
    /// A throttle allowing one message per `interval`.
    pub fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            start: Instant::now(),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a message may be written now (`n` were held back since the last one).
    pub fn allow(&self, now: Instant) -> Option<u64> {
        if self.claim(now) {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }

    /// Takes this interval's message if it is still free at `now`.
    fn claim(&self, now: Instant) -> bool {
        let now_ms = now.saturating_duration_since(self.start).as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        now_ms >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now_ms + self.interval.as_millis() as u64,
                    Relaxed,
                    Relaxed,
                )
                .is_ok()
    }

    /// When messages were held back: the instant from which [`flush`](Self::flush) reports them.
    pub fn pending(&self) -> Option<Instant> {
        if self.suppressed.load(Relaxed) == 0 {
            return None;
        }
        Some(self.start + Duration::from_millis(self.next_ms.load(Relaxed)))
    }

    /// `Some(n)` when `n` messages were held back and a summary of them may be written now (it
    /// counts as this interval's message).
    pub fn flush(&self, now: Instant) -> Option<u64> {
        if self.suppressed.load(Relaxed) == 0 {
            return None;
        }
        if !self.claim(now) {
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed)).filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_like_the_aws_daemon() {
        assert_eq!(Level::parse("prod"), Some(Level::Info));
        assert_eq!(Level::parse("dev"), Some(Level::Trace));
        assert_eq!(Level::parse("Debug"), Some(Level::Debug));
        assert_eq!(Level::parse("silent"), Some(Level::Silent));
        assert_eq!(Level::parse("verbose"), None);
    }

    #[test]
    fn timestamp_is_rfc3339_seconds() {
        let t = timestamp();
        assert_eq!(&t[4..5], "-");
        assert_eq!(&t[10..11], "T");
        assert!(t.ends_with('Z') || t.len() == 25, "{t}");
    }

    #[test]
    fn the_cached_timestamp_is_the_one_of_its_second() {
        let at = |s: i64, ns: i32| jiff::Timestamp::new(1_795_689_254 + s, ns).unwrap();
        let stamp = |t| {
            let mut s = String::new();
            push_timestamp_at(&mut s, t);
            s
        };
        let first = stamp(at(0, 1));
        assert_eq!(first, format_second(at(0, 0)));
        assert_eq!(stamp(at(0, 999_999_999)), first);
        let next = stamp(at(1, 5));
        assert_eq!(next, format_second(at(1, 0)));
        assert_ne!(next, first);
        assert_eq!(stamp(at(-3600, 0)), format_second(at(-3600, 0)));
        // Now, as written on a line: the same text a fresh conversion gives.
        loop {
            let before = format_second(jiff::Timestamp::now());
            let line = timestamp();
            if before == format_second(jiff::Timestamp::now()) {
                assert_eq!(line, before);
                break;
            }
        }
    }

    #[test]
    fn json_lines_are_json_with_fields() {
        let line = json_line(
            Level::Warn,
            &[
                ("n", Value::from(3u64)),
                ("who", Value::from("a \"b\"\n")),
                ("ok", Value::from(true)),
                ("neg", Value::from(-2i64)),
            ],
            format_args!("tab\there {}", "é\u{1}"),
        );
        assert!(line.ends_with("}\n") && !line[..line.len() - 1].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["message"], "tab\there é\u{1}");
        assert_eq!(v["fields"]["n"], 3);
        assert_eq!(v["fields"]["who"], "a \"b\"\n");
        assert_eq!(v["fields"]["ok"], true);
        assert_eq!(v["fields"]["neg"], -2);
        let t = v["time"].as_str().unwrap();
        assert_eq!(&t[19..20], ".", "{t}");
        let odd = json_line(
            Level::Info,
            &[("f", Value::S("\u{85}"))],
            format_args!("a\u{7f}\u{9b}\u{2028}\u{202e}\u{1b}"),
        );
        assert!(!needs_escape(&odd[..odd.len() - 1]), "{odd:?}");
        let v: serde_json::Value = serde_json::from_str(&odd).unwrap();
        assert_eq!(v["message"], "a\u{7f}\u{9b}\u{2028}\u{202e}\u{1b}");
        assert_eq!(v["fields"]["f"], "\u{85}");
        let plain: serde_json::Value =
            serde_json::from_str(&json_line(Level::Info, &[], format_args!("x"))).unwrap();
        assert!(plain.get("fields").is_none());
    }

    #[test]
    fn text_lines_escape_what_could_forge_a_line_or_drive_a_terminal() {
        let line = text_line(
            Level::Error,
            &[("id", Value::S("a\nb"))],
            format_args!(
                "id {}",
                "x\n2026-01-01T00:00:00Z [Error] forged\r\x1b[31m\u{7f}\u{85}\u{2028}\u{202e}\té"
            ),
        );
        let (_, rest) = line.split_once(' ').unwrap();
        assert_eq!(
            rest,
            "[Error] id x\\n2026-01-01T00:00:00Z [Error] forged\\r\\x1b[31m\\x7f\\u{0085}\\u{2028}\\u{202e}\té id=\"a\\nb\"\n"
        );
        assert_eq!(escape("plain"), "plain");
        assert_eq!(escape("a\u{1}"), "a\\x01");
    }

    #[test]
    fn long_messages_and_excerpts_are_bounded() {
        let big = "é".repeat(10_000);
        let line = text_line(Level::Info, &[], format_args!("v {big}"));
        assert!(line.len() < MAX_MESSAGE_BYTES + 100, "{}", line.len());
        assert!(
            line.ends_with("…(20002 bytes)\n"),
            "{}",
            &line[line.len() - 40..]
        );
        let json = json_line(Level::Info, &[], format_args!("v {big}"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v["message"].as_str().unwrap().ends_with("…(20002 bytes)"));
        assert_eq!(excerpt("short", 512), "short");
        assert_eq!(excerpt("aéb", 2), "a…(4 bytes)");
    }

    #[test]
    fn text_lines_follow_the_aws_daemon_format() {
        let line = text_line(
            Level::Info,
            &[("segments", Value::U(3)), ("host", Value::S("a b"))],
            format_args!("Sent {}", 1),
        );
        let (time, rest) = line.split_once(' ').unwrap();
        assert_eq!(&time[10..11], "T");
        assert_eq!(rest, "[Info] Sent 1 segments=3 host=\"a b\"\n");
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("xrayd-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_log_file_rotates_keeping_one_rolled_file() {
        let dir = temp_dir("rotate");
        let path = dir.join("x.log").to_string_lossy().into_owned();
        let mut d = Destination::open(Output::File {
            path: path.clone(),
            rotate_at: Some(100),
        })
        .unwrap();
        for i in 0..25 {
            d.write_line(&format!("line {i:02} .........................\n"));
        }
        d.flush();
        let cur = std::fs::read_to_string(&path).unwrap();
        let rolled = std::fs::read_to_string(format!("{path}.1")).unwrap();
        assert!(
            cur.len() <= 100 && rolled.len() <= 100,
            "{cur:?} {rolled:?}"
        );
        assert!(
            cur.ends_with("line 24 .........................\n"),
            "{cur}"
        );
        assert_eq!(
            rolled,
            "line 22 .........................\nline 23 .........................\n"
        );
        assert!(!dir.join("x.log.2").exists());
        // Without rotation the file just grows.
        let path2 = dir.join("y.log").to_string_lossy().into_owned();
        let mut d = Destination::open(Output::File {
            path: path2.clone(),
            rotate_at: None,
        })
        .unwrap();
        for _ in 0..25 {
            d.write_line("0123456789\n");
        }
        d.flush();
        assert_eq!(std::fs::metadata(&path2).unwrap().len(), 275);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopen_starts_a_fresh_file_after_the_old_one_was_moved() {
        let dir = temp_dir("reopen");
        let path = dir.join("x.log").to_string_lossy().into_owned();
        let mut d = Destination::open(Output::File {
            path: path.clone(),
            rotate_at: None,
        })
        .unwrap();
        d.write_line("before\n");
        std::fs::rename(&path, format!("{path}.1")).unwrap();
        d.write_line("still old\n");
        d.reopen();
        d.write_line("after\n");
        d.flush();
        assert_eq!(
            std::fs::read_to_string(format!("{path}.1")).unwrap(),
            "before\nstill old\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "after\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_rotated_away_directory_does_not_stop_the_writer() {
        let dir = temp_dir("gone");
        let path = dir.join("x.log").to_string_lossy().into_owned();
        let mut d = Destination::open(Output::File {
            path: path.clone(),
            rotate_at: Some(10),
        })
        .unwrap();
        d.write_line("first line\n");
        std::fs::remove_dir_all(&dir).unwrap();
        let before = write_errors();
        for _ in 0..5 {
            d.write_line("more lines\n");
        }
        d.flush();
        assert!(write_errors() > before, "failures are counted, not raised");
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"))
        }
    }

    #[test]
    fn write_errors_are_counted_not_raised() {
        let mut d = Destination::open(Output::Writer(Box::new(Broken))).unwrap();
        let before = write_errors();
        d.write_line("x\n");
        d.flush();
        assert!(write_errors() >= before + 2);
    }

    #[test]
    fn throttle_lets_one_through_per_interval_and_counts_the_rest() {
        let th = Throttle::new(Duration::from_secs(10));
        let t0 = th.start;
        assert_eq!(th.allow(t0), Some(0));
        assert_eq!(th.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(th.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(th.allow(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(th.allow(t0 + Duration::from_secs(11)), None);
    }

    #[test]
    fn held_back_messages_are_due_after_the_interval_without_another_message() {
        let th = Throttle::new(Duration::from_secs(10));
        let t0 = th.start;
        assert_eq!(th.pending(), None);
        assert_eq!(th.allow(t0), Some(0));
        assert_eq!(
            (th.pending(), th.flush(t0)),
            (None, None),
            "nothing held back"
        );
        assert_eq!(th.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(th.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(th.pending(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(th.flush(t0 + Duration::from_secs(9)), None, "not yet due");
        assert_eq!(th.flush(t0 + Duration::from_secs(10)), Some(2));
        assert_eq!(th.pending(), None);
        // The summary took that interval's message.
        assert_eq!(th.allow(t0 + Duration::from_secs(11)), None);
        assert_eq!(th.pending(), Some(t0 + Duration::from_secs(20)));
        assert_eq!(th.allow(t0 + Duration::from_secs(20)), Some(1));
        assert_eq!(th.flush(t0 + Duration::from_secs(40)), None);
    }
}
