//! Start-up overhead of a sandboxed RUN: `/bin/true` in a busybox rootfs, run N times per
//! isolation mode, against a plain fork/exec of the same binary. Used by
//! `bench/run-startup.sh`; prints one line per mode.
//!
//! Usage: run-startup [ITERATIONS] (default 200). Needs /bin/busybox (busybox-static).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use kiln_sandbox::{run, Isolation, Network, Output, RunSpec};

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
    let p = |q: f64| ms(v[((v.len() - 1) as f64 * q) as usize]);
    format!(
        "mean {mean:7.2} ms  median {:7.2} ms  p95 {:7.2} ms  max {:7.2} ms",
        p(0.5),
        p(0.95),
        p(1.0)
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200);
    let rootfs = tempfile::Builder::new()
        .prefix("kiln-bench-rootfs-")
        .tempdir()?;
    let r = rootfs.path();
    std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755))?;
    for d in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(r.join(d))?;
    }
    std::fs::copy("/bin/busybox", r.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", r.join("bin/true"))?;
    // A typical image has these; without them every run would also create and remove stubs.
    for d in ["proc", "dev"] {
        std::fs::create_dir_all(r.join(d))?;
    }
    for f in ["etc/hosts", "etc/resolv.conf", "etc/hostname"] {
        std::fs::write(r.join(f), "")?;
    }
    let euid = nix::unistd::Uid::effective();
    println!(
        "iterations: {n}, uid {euid}, kernel {}",
        nix::sys::utsname::uname()?.release().to_string_lossy()
    );

    let mut plain = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let st = std::process::Command::new(r.join("bin/true")).status()?;
        plain.push(t.elapsed());
        assert!(st.success());
    }
    println!("{:<22} {}", "plain fork/exec", stats(plain));

    let mut modes = vec![
        ("userns", Isolation::Userns, Network::Host),
        ("userns+net-none", Isolation::Userns, Network::None),
    ];
    if euid.is_root() {
        modes.push(("chroot", Isolation::Chroot, Network::Host));
    }
    for (name, iso, net) in modes {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let mut spec = RunSpec::new(r, vec!["/bin/true".into()]);
            spec.isolation = iso;
            spec.network = net;
            let t = Instant::now();
            let o = run(&spec, Output::Null, Output::Null)?;
            times.push(t.elapsed());
            assert!(o.status.success(), "{name}: {:?}", o.status);
        }
        println!("{name:<22} {}", stats(times));
    }
    Ok(())
}
