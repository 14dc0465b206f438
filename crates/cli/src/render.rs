//! Renders build events for a person (text or colour) or a machine (JSON lines).
//!
//! With `--log-format=json` every line on stderr is one JSON object with an `event` field:
//! kiln's own events (`step`, `step_done`, `output`, `warning`, `info`, `summary`), the
//! libraries' log lines (`log`, with `level`), and the error that ends a failed run (`error`);
//! the text is in `text`, and `time` (Unix seconds) is there with `--log-timestamp`.
//! docs/ci.md ("Logs") describes it for pipelines.

use kiln_build::output::{Event, Output};
use std::collections::HashSet;
use std::io::Write;
use std::sync::Mutex;

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Color,
    Json,
}

impl Format {
    /// `--log-format`: `text`, `color` (colours wherever the output goes, as Kaniko's
    /// `color` does) or `json`; not given, colours only for a person at a terminal, so a CI
    /// log gets no escape codes.
    pub fn choose(flag: Option<&str>, terminal: bool) -> Result<Format, String> {
        match flag {
            Some("text") => Ok(Format::Text),
            Some("color") => Ok(Format::Color),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!(
                "invalid --log-format {other:?}: use text, color or json"
            )),
            None if terminal => Ok(Format::Color),
            None => Ok(Format::Text),
        }
    }
}

/// Now in RFC 3339, UTC, with milliseconds (`2026-11-23T06:53:35.123Z`).
fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now();
    let millis = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_millis();
    let secs = kiln_build::cache::format_rfc3339(now);
    format!("{}.{millis:03}Z", secs.trim_end_matches('Z'))
}

/// One JSON line in the shape of logrus' JSONFormatter, which Kaniko's `--log-format=json`
/// writes and log pipelines built for Kaniko parse: `level` (logrus' names: `warning`, not
/// `warn`), `msg` (the line the text format would show) and `time` (RFC 3339) on every line,
/// plus kiln's `event` (what the line is) and the event's own fields.
fn json_line(kind: &str, level: &str, msg: &str, fields: serde_json::Value) -> String {
    let mut v = fields;
    v["event"] = serde_json::Value::from(kind);
    v["level"] = serde_json::Value::from(level);
    v["msg"] = serde_json::Value::from(msg);
    v["time"] = serde_json::Value::from(now_rfc3339());
    v.to_string()
}

/// The line that reports the error ending a run: `error: …`, or a JSON `error` event.
pub fn error_line(format: Format, message: &str, exit_code: u8) -> String {
    match format {
        Format::Json => json_line(
            "error",
            "error",
            message,
            serde_json::json!({ "exit_code": exit_code }),
        ),
        _ => format!("error: {message}"),
    }
}

/// The libraries' `tracing` events as JSON lines of the renderer's shape
/// (`{"event":"log","level":"info","msg":"pushed blob … digest=sha256:…","time":…}`), instead
/// of tracing-subscriber's own JSON (`{"timestamp","level","fields":{…}}`): one shape per stream.
pub struct JsonLog;

/// Collects an event's message and its other fields as `key=value`, as the text format shows.
#[derive(Default)]
struct Fields(String, String);

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            self.1.push_str(&format!(" {}={value}", field.name()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.push_str(&format!("{value:?}"));
        } else {
            self.1.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut f = Fields::default();
        event.record(&mut f);
        // logrus' level names; tracing's WARN is logrus' "warning".
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        let line = json_line(
            "log",
            level,
            &format!("{}{}", f.0, f.1),
            serde_json::json!({}),
        );
        writeln!(writer, "{line}")
    }
}

/// Where the renderer writes: stderr, or a buffer in tests.
type Sink = Box<dyn Write + Send>;

/// What the renderer remembers across events: the warnings already shown, so one repeated
/// for every RUN step (the same text each time) is shown once, and how many repeats were
/// not shown (the summary says it).
struct State {
    out: Sink,
    warned: HashSet<String>,
    repeats: usize,
}

/// Prints events to stderr (RUN output too, so its order against the step headers is kept).
pub struct Renderer {
    format: Format,
    timestamps: bool,
    state: Mutex<State>,
}

impl Renderer {
    pub fn new(format: Format, timestamps: bool) -> Renderer {
        Renderer::with_sink(format, timestamps, Box::new(std::io::stderr()))
    }

    fn with_sink(format: Format, timestamps: bool, out: Sink) -> Renderer {
        Renderer {
            format,
            timestamps,
            state: Mutex::new(State {
                out,
                warned: HashSet::new(),
                repeats: 0,
            }),
        }
    }

    fn prefix(&self) -> String {
        if !self.timestamps {
            return String::new();
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("[{}.{:03}] ", now.as_secs(), now.subsec_millis())
    }

    fn json(&self, err: &mut dyn Write, kind: &str, level: &str, msg: &str, f: serde_json::Value) {
        let _ = writeln!(err, "{}", json_line(kind, level, msg, f));
    }
}

impl Output for Renderer {
    fn event(&self, event: Event<'_>) {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        // A warning with the text of one already shown is counted, not repeated.
        if let Event::Warning(text) = &event {
            if !state.warned.insert(text.to_string()) {
                state.repeats += 1;
                return;
            }
        }
        let repeats = state.repeats;
        let err: &mut dyn Write = &mut state.out;
        let (bold, dim, yellow, reset) = if self.format == Format::Color {
            ("\x1b[1m", "\x1b[2m", "\x1b[33m", "\x1b[0m")
        } else {
            ("", "", "", "")
        };
        match event {
            Event::Step {
                stage,
                stages,
                step,
                steps,
                text,
            } => {
                if self.format == Format::Json {
                    return self.json(
                        err,
                        "step",
                        "info",
                        &format!("[stage {stage}/{stages} step {step}/{steps}] {text}"),
                        serde_json::json!({"stage": stage, "stages": stages, "step": step, "steps": steps, "instruction": text}),
                    );
                }
                let _ = writeln!(
                    err,
                    "{}{bold}[stage {stage}/{stages} step {step}/{steps}] {text}{reset}",
                    self.prefix()
                );
            }
            Event::StepDone {
                elapsed,
                layer_size,
            } => {
                let layer = layer_size
                    .map(|s| format!(", layer {}", human(s)))
                    .unwrap_or_default();
                if self.format == Format::Json {
                    return self.json(
                        err,
                        "step_done",
                        "info",
                        &format!("done in {:.2}s{layer}", elapsed.as_secs_f64()),
                        serde_json::json!({"seconds": elapsed.as_secs_f64(), "layer_size": layer_size}),
                    );
                }
                let _ = writeln!(
                    err,
                    "{}{dim}  done in {:.2}s{layer}{reset}",
                    self.prefix(),
                    elapsed.as_secs_f64()
                );
            }
            Event::RunOutput { stderr, bytes } => {
                if self.format == Format::Json {
                    return self.json(
                        err,
                        "output",
                        "info",
                        &String::from_utf8_lossy(bytes),
                        serde_json::json!({ "stderr": stderr }),
                    );
                }
                let _ = err.write_all(bytes);
            }
            Event::Warning(text) => {
                if self.format == Format::Json {
                    return self.json(err, "warning", "warning", text, serde_json::json!({}));
                }
                let _ = writeln!(err, "{}{yellow}warning:{reset} {text}", self.prefix());
            }
            Event::Info(text) => {
                if self.format == Format::Json {
                    return self.json(err, "info", "info", text, serde_json::json!({}));
                }
                let _ = writeln!(err, "{}{text}", self.prefix());
            }
            Event::Summary {
                digest,
                size,
                layers,
                elapsed,
            } => {
                if self.format == Format::Json {
                    return self.json(
                        err,
                        "summary",
                        "info",
                        &format!(
                            "built {digest} ({}, {layers} layers) in {:.2}s",
                            human(size),
                            elapsed.as_secs_f64()
                        ),
                        serde_json::json!({"digest": digest, "size": size, "layers": layers, "seconds": elapsed.as_secs_f64(), "repeated_warnings": repeats}),
                    );
                }
                if repeats > 0 {
                    let _ = writeln!(
                        err,
                        "{}{repeats} repeated warning{} not shown again",
                        self.prefix(),
                        if repeats == 1 { "" } else { "s" }
                    );
                }
                let _ = writeln!(
                    err,
                    "{}{bold}built {digest}{reset} ({}, {layers} layers) in {:.2}s",
                    self.prefix(),
                    human(size),
                    elapsed.as_secs_f64()
                );
            }
        }
    }
}

/// `1.2 MB`-style sizes.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A sink the test reads back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn render(format: Format, events: &[Event<'_>]) -> String {
        let buf = Buf::default();
        let r = Renderer::with_sink(format, false, Box::new(buf.clone()));
        for e in events {
            r.event(e.clone());
        }
        let out = buf.0.lock().unwrap().clone();
        String::from_utf8(out).unwrap()
    }

    const SUMMARY: Event<'static> = Event::Summary {
        digest: "sha256:00",
        size: 1,
        layers: 1,
        elapsed: std::time::Duration::from_millis(10),
    };

    #[test]
    fn a_repeated_warning_is_shown_once_and_counted() {
        let proc = Event::Warning("chroot isolation without CAP_SYS_ADMIN: no /proc in the step");
        let other = Event::Warning("something else");
        let events = [proc.clone(), proc.clone(), other, proc, SUMMARY];
        let text = render(Format::Text, &events);
        assert_eq!(text.matches("no /proc in the step").count(), 1, "{text}");
        assert_eq!(text.matches("something else").count(), 1, "{text}");
        assert!(
            text.contains("2 repeated warnings not shown again"),
            "{text}"
        );
        let json = render(Format::Json, &events);
        let last: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
        assert_eq!(last["event"], "summary");
        assert_eq!(last["repeated_warnings"], 2);
        assert_eq!(json.lines().count(), 3, "{json}");
        // logrus' JSONFormatter shape on every line (Kaniko's --log-format=json).
        for line in json.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["msg"].is_string() && v["level"].is_string(), "{line}");
            let time = v["time"].as_str().unwrap_or_default();
            assert!(kiln_build::cache::parse_rfc3339(time).is_some(), "{line}");
        }
        let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
        assert_eq!(first["level"], "warning", "{json}");
        assert!(
            last["msg"].as_str().unwrap().starts_with("built sha256:"),
            "{last}"
        );
    }

    #[test]
    fn colours_only_when_asked_or_at_a_terminal() {
        assert_eq!(Format::choose(None, false), Ok(Format::Text));
        assert_eq!(Format::choose(None, true), Ok(Format::Color));
        assert_eq!(Format::choose(Some("color"), false), Ok(Format::Color));
        assert_eq!(Format::choose(Some("text"), true), Ok(Format::Text));
        assert!(Format::choose(Some("yaml"), true).is_err());
        let step = Event::Step {
            stage: 1,
            stages: 1,
            step: 1,
            steps: 1,
            text: "RUN x",
        };
        assert!(render(Format::Color, std::slice::from_ref(&step)).contains("\x1b["));
        assert!(!render(Format::Text, &[step, SUMMARY]).contains('\x1b'));
    }

    #[test]
    fn the_error_is_a_json_event_in_json_mode() {
        let line = error_line(Format::Json, "./Dockerfile:3: COPY: \"x\"\nmore", 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "error");
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "./Dockerfile:3: COPY: \"x\"\nmore");
        assert_eq!(v["exit_code"], 1);
        assert!(!line.contains('\n'));
        assert_eq!(error_line(Format::Text, "boom", 1), "error: boom");
    }
}
