//! Renders build events for a person (text or colour) or a machine (JSON lines).

use kiln_build::output::{Event, Output};
use std::io::Write;
use std::sync::Mutex;

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Color,
    Json,
}

/// Prints events to stderr (RUN output to stdout, as `docker build --progress=plain` users expect
/// it interleaved with the headers: both go to stderr here, so order is kept).
pub struct Renderer {
    format: Format,
    timestamps: bool,
    lock: Mutex<()>,
}

impl Renderer {
    pub fn new(format: Format, timestamps: bool) -> Renderer {
        Renderer {
            format,
            timestamps,
            lock: Mutex::new(()),
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

    fn json(&self, kind: &str, fields: serde_json::Value) {
        let mut v = fields;
        v["event"] = serde_json::Value::from(kind);
        let _ = writeln!(std::io::stderr(), "{v}");
    }
}

impl Output for Renderer {
    fn event(&self, event: Event<'_>) {
        let _guard = self.lock.lock();
        let mut err = std::io::stderr().lock();
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
                        "step",
                        serde_json::json!({"stage": stage, "stages": stages, "step": step, "steps": steps, "text": text}),
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
                if self.format == Format::Json {
                    return self.json(
                        "step_done",
                        serde_json::json!({"seconds": elapsed.as_secs_f64(), "layer_size": layer_size}),
                    );
                }
                let layer = layer_size
                    .map(|s| format!(", layer {}", human(s)))
                    .unwrap_or_default();
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
                        "output",
                        serde_json::json!({"stderr": stderr, "text": String::from_utf8_lossy(bytes)}),
                    );
                }
                let _ = err.write_all(bytes);
            }
            Event::Warning(text) => {
                if self.format == Format::Json {
                    return self.json("warning", serde_json::json!({ "text": text }));
                }
                let _ = writeln!(err, "{}{yellow}warning:{reset} {text}", self.prefix());
            }
            Event::Info(text) => {
                if self.format == Format::Json {
                    return self.json("info", serde_json::json!({ "text": text }));
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
                        "summary",
                        serde_json::json!({"digest": digest, "size": size, "layers": layers, "seconds": elapsed.as_secs_f64()}),
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
