//! The build's own output (step headers, RUN output, progress, summary). Libraries log with
//! `tracing`; what a person follows goes through this sink, which the CLI owns and renders as
//! text, colour or JSON. Secrets never reach it: RUN output is the only free text, and a RUN
//! sees a secret only as a mounted file.

use std::time::Duration;

/// One thing worth telling the person running the build.
#[derive(Debug, Clone)]
pub enum Event<'a> {
    /// `[stage 2/3 step 4/9] RUN make`
    Step {
        stage: usize,
        stages: usize,
        step: usize,
        steps: usize,
        text: &'a str,
    },
    /// A step finished.
    StepDone {
        elapsed: Duration,
        /// Size of the layer it made, if any.
        layer_size: Option<u64>,
    },
    /// Output of a RUN (stdout or stderr), as it comes.
    RunOutput { stderr: bool, bytes: &'a [u8] },
    /// Something the person should know that does not stop the build.
    Warning(&'a str),
    /// A plain information line (pulls, pushes, outputs written).
    Info(&'a str),
    /// The end of a successful build.
    Summary {
        digest: &'a str,
        size: u64,
        layers: usize,
        elapsed: Duration,
    },
}

/// `text` with the user info of every `scheme://user:password@host` URL in it replaced by
/// `***`: a Dockerfile line such as `ADD https://user:token@host/x /x` is shown as the step
/// header without its credentials.
pub fn redact_urls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#' or whitespace.
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// Receives build events.
pub trait Output: Send + Sync {
    fn event(&self, event: Event<'_>);
}

/// Discards everything (tests).
#[derive(Debug, Default)]
pub struct Quiet;

impl Output for Quiet {
    fn event(&self, _: Event<'_>) {}
}

#[cfg(test)]
mod tests {
    use super::redact_urls;

    #[test]
    fn user_info_is_redacted() {
        assert_eq!(
            redact_urls("ADD https://bob:s3cret@example.com/a.git#main /src"),
            "ADD https://***@example.com/a.git#main /src"
        );
        assert_eq!(
            redact_urls("ADD http://tok@h/x http://h2/y git@github.com:o/r.git /d"),
            "ADD http://***@h/x http://h2/y git@github.com:o/r.git /d"
        );
        assert_eq!(redact_urls("RUN echo a@b"), "RUN echo a@b");
        assert_eq!(
            redact_urls("RUN curl https://u:p@h"),
            "RUN curl https://***@h"
        );
    }
}
