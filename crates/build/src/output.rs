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
