//! An image built by kiln runs under a real container engine: kiln builds a small image on the
//! busybox base (ENV, WORKDIR, COPY, RUN, USER, ENTRYPOINT + CMD), pushes it to the real Debian
//! registry, and podman (runc, vfs storage, cgroupfs; the setup of ../shared/TESTING.md) pulls
//! and runs it. The container's output must be exactly what the Dockerfile says, which checks
//! the config (Env, WorkingDir, User, Entrypoint, Cmd) as an engine reads it, not as we do.

use kiln_testkit::{push_busybox, require, Registry};
use std::path::Path;
use std::process::{Command, Output};

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// The image under test. The ENTRYPOINT prints the ENV value, the COPYed file, the RUN-made
/// file, then the uid and working directory it runs with, then its arguments (the CMD by
/// default): `sh -c SCRIPT NAME ARGS...` gives ARGS as "$@" (POSIX sh, `-c`).
const DOCKERFILE: &str = r#"FROM {addr}/library/busybox
ENV GREETING="hello from ENV"
WORKDIR /srv/app
COPY msg.txt ./
RUN echo "made by RUN as $(id -u)" > run.txt && chown 65534:65534 run.txt
USER nobody
ENTRYPOINT ["/bin/sh", "-c", "echo \"$GREETING\"; cat msg.txt run.txt; echo \"uid=$(id -u) pwd=$(pwd) args=$*\"", "entry"]
CMD ["from", "CMD"]
"#;

/// `podman` with throw-away storage: vfs (no overlay mounts to leak), cgroupfs and runc
/// (crun fails on this host's hybrid cgroup layout, see TESTING.md), file events (no journald).
struct Podman {
    root: tempfile::TempDir,
    runroot: tempfile::TempDir,
    auth: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let auth = tempfile::tempdir().unwrap();
        // An empty auth file: podman insists that the file exists.
        std::fs::write(auth.path().join("auth.json"), "{}").unwrap();
        Podman {
            root: tempfile::tempdir().unwrap(),
            runroot: tempfile::tempdir().unwrap(),
            auth,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .arg("--root")
            .arg(self.root.path())
            .arg("--runroot")
            .arg(self.runroot.path())
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager=cgroupfs",
                "--events-backend=file",
                "--runtime",
                "runc",
            ])
            .args(args)
            // No credentials of the machine's user are used or needed.
            .env("REGISTRY_AUTH_FILE", self.auth.path().join("auth.json"))
            .output()
            .unwrap()
    }

    /// `podman run --rm` of `image` with extra `opts` before the image and `cmd` after it;
    /// the container's stdout, or a panic with podman's stderr.
    fn run_image(&self, opts: &[&str], image: &str, cmd: &[&str]) -> String {
        let mut args = vec![
            "run",
            "--rm",
            "--network",
            "host",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--tls-verify=false",
            "--pull=missing",
        ];
        args.extend_from_slice(opts);
        args.push(image);
        args.extend_from_slice(cmd);
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("container output is UTF-8")
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Removes the pulled image's vfs copies through podman (they may hold read-only
        // directories); the temp dirs go after. Best effort: a failure here is not the test's.
        let _ = self.run(&["rmi", "--all", "--force"]);
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the process's effective uid (proc(5)).
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn kiln_image_runs_under_podman() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    if !is_root() {
        // Rootless podman needs /etc/subuid ranges and a user session; CI runs as root.
        kiln_testkit::report_skip(
            "podman test runs as root only (rootless podman needs subuid ranges)",
        );
        return;
    }
    for tool in ["podman", "runc"] {
        if kiln_testkit::which(tool).is_none() && !Path::new("/usr/sbin").join(tool).is_file() {
            kiln_testkit::report_skip(&format!(
                "{tool} not installed (./scripts/test.sh installs it)"
            ));
            return;
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    write(&ctx, "msg.txt", "copied from the context\n");
    write(
        &ctx,
        "Dockerfile",
        &DOCKERFILE.replace("{addr}", reg.addr()),
    );
    let image = format!("{}/test/podman-run:v1", reg.addr());
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .arg("-c")
        .arg(&ctx)
        .arg("-d")
        .arg(&image)
        .args(["--insecure", "--insecure-pull", "--log-format=text"])
        .arg("--kiln-dir")
        .arg(tmp.path().join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kiln build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let podman = Podman::new();
    // ENTRYPOINT + CMD as the image says. The RUN ran as root (USER comes after it); the
    // container runs as nobody in the WORKDIR.
    assert_eq!(
        podman.run_image(&[], &image, &[]),
        "hello from ENV\n\
         copied from the context\n\
         made by RUN as 0\n\
         uid=65534 pwd=/srv/app args=from CMD\n"
    );
    // Arguments after the image replace CMD only; the ENTRYPOINT stays.
    assert_eq!(
        podman.run_image(&[], &image, &["given", "args"]),
        "hello from ENV\n\
         copied from the context\n\
         made by RUN as 0\n\
         uid=65534 pwd=/srv/app args=given args\n"
    );
    // With the entrypoint replaced, USER, WORKDIR and ENV still come from the config, and the
    // files have the owners the Dockerfile gave them (COPY: root; RUN's chown: nobody).
    assert_eq!(
        podman.run_image(
            &["--entrypoint", "/bin/sh"],
            &image,
            &[
                "-c",
                "id -u; id -g; pwd; echo \"$GREETING\"; stat -c '%n %u:%g %a' msg.txt run.txt",
            ],
        ),
        "65534\n65534\n/srv/app\nhello from ENV\nmsg.txt 0:0 644\nrun.txt 65534:65534 644\n"
    );
}
