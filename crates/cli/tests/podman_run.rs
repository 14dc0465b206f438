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

/// Whether podman tests can run here (root, and `tools` installed); reports the skip if not.
fn podman_usable(tools: &[&str]) -> bool {
    if !is_root() {
        // Rootless podman needs /etc/subuid ranges and a user session; CI runs as root.
        kiln_testkit::report_skip(
            "podman test runs as root only (rootless podman needs subuid ranges)",
        );
        return false;
    }
    for tool in tools {
        if kiln_testkit::which(tool).is_none() && !Path::new("/usr/sbin").join(tool).is_file() {
            kiln_testkit::report_skip(&format!(
                "{tool} not installed (./scripts/test.sh installs it)"
            ));
            return false;
        }
    }
    true
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
    if !podman_usable(&["podman", "runc"]) {
        return;
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

/// A directory holding `binary` at `/kaniko/executor` and the shared libraries `ldd` says it
/// loads, at their paths: enough for `podman run --rootfs` (no image, no shell).
fn executor_rootfs(dir: &Path, binary: &Path) {
    let exe = dir.join("kaniko/executor");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    std::fs::copy(binary, &exe).unwrap();
    let ldd = Command::new("ldd").arg(binary).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(Path::new);
        if let Some(p) = path {
            let to = dir.join(p.strip_prefix("/").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(p, &to).unwrap_or_else(|e| panic!("copying {}: {e}", p.display()));
        }
    }
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
}

/// Layer paths (all layers of the first manifest of an OCI layout) with their sizes.
fn layer_files(layout: &Path) -> Vec<(String, u64)> {
    let blob = |d: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(d.as_str().unwrap().trim_start_matches("sha256:"))
    };
    let read = |p: std::path::PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    };
    let index = read(layout.join("index.json"));
    let manifest = read(blob(&index["manifests"][0]["digest"]));
    let mut out = Vec::new();
    for l in manifest["layers"].as_array().unwrap() {
        let f = std::fs::File::open(blob(&l["digest"])).unwrap();
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            out.push((
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().size().unwrap_or(0),
            ));
        }
    }
    out
}

#[test]
fn kiln_builds_inside_podman_containers_as_pods_run_it() {
    // Root in an unprivileged container with the engine's default seccomp profile and
    // capabilities (podman's, like CRI-O's: sethostname denied, no CAP_MKNOD, no
    // CAP_SYS_ADMIN), kiln being /kaniko/executor. Found by an acceptance run: every RUN
    // failed there on sethostname; in chroot mode a non-root step could not write
    // /dev/null (nodes made 0644), and without CAP_MKNOD `> /dev/null` wrote a file that
    // landed in the layer.
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    if !podman_usable(&["podman", "runc", "ldd"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    executor_rootfs(&rootfs, Path::new(env!("CARGO_BIN_EXE_kiln")));
    let ctx = tmp.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox\n\
             RUN echo secret-token > /dev/null; echo x > /x\n\
             USER 65534\n\
             RUN echo y > /dev/null && echo ok > /tmp/ok\n",
            reg.addr()
        ),
    );
    let podman = Podman::new();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let vol = |host: &Path, inner: &str| format!("{}:{inner}", host.display());
    let (ctx_vol, out_vol) = (vol(&ctx, "/workspace:ro"), vol(&out_dir, "/out"));
    for (name, extra_opts, kiln_args) in [
        ("default isolation", vec![], vec![]),
        ("chroot, no CAP_MKNOD", vec![], vec!["--isolation=chroot"]),
        (
            "chroot with CAP_MKNOD",
            vec!["--cap-add", "MKNOD"],
            vec!["--isolation=chroot"],
        ),
    ] {
        let layout = format!("/out/{}", name.replace([' ', ','], "-"));
        let mut opts = vec!["-v", &ctx_vol, "-v", &out_vol];
        opts.extend(extra_opts);
        opts.push("--rootfs");
        let mut cmd = vec![
            "/kaniko/executor",
            "--context",
            "dir:///workspace",
            "--no-push",
            "--insecure-pull",
            "--kiln-dir",
            "/tmp/state",
            "--oci-layout-path",
            &layout,
        ];
        cmd.extend(kiln_args);
        podman.run_image(&opts, rootfs.to_str().unwrap(), &cmd);
        let files = layer_files(&out_dir.join(layout.trim_start_matches("/out/")));
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert!(names.contains(&"x"), "{name}: {names:?}");
        assert!(names.contains(&"tmp/ok"), "{name}: {names:?}");
        assert!(
            !names.iter().any(|p| p.starts_with("dev/") && *p != "dev/"),
            "{name}: nothing written to /dev reaches a layer: {names:?}"
        );
    }
}
