//! `cargo run --example debug_plan -- Dockerfile [target] [KEY=VAL...]`: prints `debug_plan`.
use kiln_dockerfile::{debug_plan, PlanOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: debug_plan Dockerfile [--target=T] [KEY=VAL...]");
        std::process::exit(2);
    };
    let src = std::fs::read(&path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    });
    let mut opts = PlanOptions {
        target_platform: "linux/amd64".into(),
        build_platform: "linux/amd64".into(),
        ..Default::default()
    };
    for a in args {
        if let Some(t) = a.strip_prefix("--target=") {
            opts.target = Some(t.into());
        } else if let Some((k, v)) = a.split_once('=') {
            opts.build_args.push((k.into(), v.into()));
        }
    }
    match debug_plan(&src, &opts) {
        Ok(s) => print!("{s}"),
        Err(e) => {
            eprint!("{}", e.render(&path, &String::from_utf8_lossy(&src)));
            std::process::exit(1);
        }
    }
}
