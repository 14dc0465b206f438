//! `RUN --mount=type=ssh` with `--ssh`, end to end against a real ssh-agent holding a fresh
//! ed25519 key: the host's own `ssh-add -l` (with its shared libraries, bound into the step
//! from the context) lists the key through the forwarded socket, as root and as `USER nobody`,
//! with kiln run as root and as an ordinary user; the socket, its mount stubs and the agent's
//! path are in no layer, config, history or log line; `required=true` without `--ssh` fails
//! by name, and an optional ssh mount without `--ssh` runs without the socket.

use kiln_testkit::{push_busybox, require, Registry};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// `cmd`, run as `uid` through setpriv when that is not us.
fn as_user(uid: Option<u32>, program: &Path) -> Command {
    match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", &u.to_string(), "--regid", &u.to_string()])
                .arg("--clear-groups")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// A running `ssh-agent -D` (stopped, by its pid, on drop) holding one new ed25519 key.
struct Agent {
    child: Child,
    socket: PathBuf,
    /// `ssh-keygen -l` of the key: `256 SHA256:… comment (ED25519)`; the SHA256 part is what
    /// `ssh-add -l` prints too.
    fingerprint: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an agent in `dir` (as `uid` when given); `None` (a counted skip) when openssh's
/// tools are not installed.
fn start_agent(dir: &Path, uid: Option<u32>) -> Option<Agent> {
    let tools = ["ssh-agent", "ssh-add", "ssh-keygen"].map(kiln_testkit::which);
    let [Some(agent), Some(add), Some(keygen)] = tools else {
        kiln_testkit::report_skip("openssh-client not installed (./scripts/test.sh installs it)");
        return None;
    };
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join("id_ed25519");
    let out = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-ssh-test", "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    let out = Command::new(kiln_testkit::which("ssh-keygen").unwrap())
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(fingerprint.starts_with("SHA256:"), "{out:?}");
    let socket = dir.join("agent.sock");
    if let Some(u) = uid {
        std::os::unix::fs::chown(dir, Some(u), Some(u)).unwrap();
    }
    let child = as_user(uid, &agent)
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent {
        child,
        socket,
        fingerprint,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.socket.exists() {
        assert!(
            Instant::now() < deadline,
            "ssh-agent did not create its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Root may talk to anyone's agent (ssh-agent lets uid 0 in); the key stays root's file.
    let out = Command::new(add)
        .arg(&key)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "ssh-add: {out:?}");
    Some(agent)
}

/// Copies the host's `ssh-add` and every library it loads (ldd(1)) into `dir`, the loader as
/// `ld.so`, so a busybox step can run `/h/ld.so --library-path /h /h/ssh-add -l`.
fn host_ssh_add(dir: &Path) -> bool {
    let Some(add) = kiln_testkit::which("ssh-add") else {
        return false;
    };
    let Ok(out) = Command::new("ldd").arg(&add).output() else {
        return false;
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(&add, dir.join("ssh-add")).unwrap();
    let mut loader = false;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let line = line.trim();
        let path = match line.split_once("=> ") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let name = Path::new(path).file_name().unwrap().to_string_lossy();
        let dest = if name.starts_with("ld-linux") {
            loader = true;
            dir.join("ld.so")
        } else {
            dir.join(&*name)
        };
        std::fs::copy(path, dest).unwrap();
    }
    loader
}

fn chown_tree(p: &Path, uid: u32) {
    for e in walk(p) {
        std::os::unix::fs::lchown(&e, Some(uid), Some(uid)).unwrap();
    }
}

struct Built {
    ok: bool,
    stderr: String,
    layout: PathBuf,
}

/// `kiln build` of `dockerfile` (with `{addr}` the registry) into an OCI layout under `tmp`,
/// as `uid` when given, with `SSH_AUTH_SOCK` set to `auth_sock` (or unset).
fn build(
    reg: &Registry,
    tmp: &Path,
    name: &str,
    dockerfile: &str,
    args: &[String],
    auth_sock: Option<&Path>,
    uid: Option<u32>,
) -> Built {
    let ctx = tmp.join(name);
    write(
        &ctx,
        "Dockerfile",
        &dockerfile.replace("{addr}", reg.addr()),
    );
    let layout = tmp.join(format!("{name}-oci"));
    let state = tmp.join(format!("{name}-state"));
    if let Some(u) = uid {
        chown_tree(tmp, u);
    }
    let mut cmd = match uid {
        Some(_) => as_user(uid, Path::new(env!("CARGO_BIN_EXE_kiln"))),
        None => kiln(),
    };
    cmd.env_remove("SSH_AUTH_SOCK").env_remove("KILN_USERNS");
    if let Some(s) = auth_sock {
        cmd.env("SSH_AUTH_SOCK", s);
    }
    let out = cmd
        .env("HOME", tmp)
        .arg("build")
        .arg("-c")
        .arg(&ctx)
        .args(["--no-push", "--insecure-pull", "--log-format=text"])
        .arg("--verbosity=trace")
        .args(args)
        .arg("--oci-layout-path")
        .arg(&layout)
        .arg("--kiln-dir")
        .arg(&state)
        .output()
        .unwrap();
    Built {
        ok: out.status.success(),
        stderr: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        layout,
    }
}

/// Every path the build's own layers (all but the base's) hold, with its content.
fn new_entries(layout: &Path) -> std::collections::BTreeMap<String, String> {
    let mut seen = std::collections::BTreeMap::new();
    for d in &kiln_testkit::layout::layer_digests(layout)[1..] {
        for e in kiln_testkit::layout::layer_entries(layout, d) {
            seen.insert(e.path, String::from_utf8_lossy(&e.content).into_owned());
        }
    }
    seen
}

/// Nothing of the agent in the image or the log: no socket or stub path in a layer, and
/// neither the agent's socket path nor its directory in any blob or in the output.
fn assert_no_trace(built: &Built, agent: &Agent) {
    let seen = new_entries(&built.layout);
    for path in seen.keys() {
        assert!(
            !path.starts_with("run/") && path != "run" && !path.contains("agent"),
            "mount stub or socket in a layer: {path}"
        );
    }
    let sock = agent.socket.to_string_lossy();
    let dir = agent
        .socket
        .parent()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    for blob in kiln_testkit::layout::all_blob_bytes(&built.layout) {
        let bytes = kiln_testkit::layout::decompress(&blob);
        for needle in [sock.as_bytes(), dir.as_bytes()] {
            assert!(
                !kiln_testkit::layout::contains(&bytes, needle),
                "the agent's path is in a blob"
            );
        }
    }
    assert!(
        !built.stderr.contains(&*sock) && !built.stderr.contains(&dir),
        "the agent's path is in the log:\n{}",
        built.stderr
    );
}

const MAIN: &str = r#"FROM {addr}/library/busybox
RUN mkdir -m 777 /out
RUN --mount=type=ssh --mount=type=bind,source=hostlibs,target=/h test -S "$SSH_AUTH_SOCK" && echo "$SSH_AUTH_SOCK" > /out/env && stat -c '%a %u %g' "$SSH_AUTH_SOCK" > /out/stat && /h/ld.so --library-path /h /h/ssh-add -l > /out/keys
USER nobody
RUN --mount=type=ssh,id=second,target=agent.sock,uid=65534,gid=65534,mode=0640 --mount=type=bind,source=hostlibs,target=/h echo "$SSH_AUTH_SOCK" > /out/env-nobody && stat -c '%a %u %g' /tmp/agent.sock > /out/stat-nobody && /h/ld.so --library-path /h /h/ssh-add -l > /out/keys-nobody
USER root
WORKDIR /
RUN --mount=type=ssh,id=absent echo "$SSH_AUTH_SOCK" > /out/env-absent && test ! -e /run/buildkit/ssh_agent.0 && echo ran > /out/absent
RUN test ! -e /run/buildkit && test ! -e /tmp/agent.sock && echo gone > /out/later
"#;

#[test]
fn ssh_agent_forwarded_as_root() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    let Some(agent) = start_agent(&tmp.path().join("agent"), None) else {
        return;
    };
    if !host_ssh_add(&tmp.path().join("ctx/hostlibs")) {
        kiln_testkit::report_skip("ldd could not list ssh-add's libraries");
        return;
    }
    // `default` from SSH_AUTH_SOCK, `second` by path; the RUN as nobody goes to /tmp (WORKDIR
    // is /tmp there: a relative target is relative to it, as BuildKit resolves it). Both
    // snapshot paths (overlay upper dir, tree walk), plus the layer cache (whose stored
    // entries are scanned too).
    let dockerfile = MAIN.replace("USER nobody\n", "USER nobody\nWORKDIR /tmp\n");
    let second = format!("second={}", agent.socket.display());
    let cache = tmp.path().join("cache-layout");
    let variants: [(&str, Vec<String>); 2] = [
        (
            "ctx",
            vec![
                "--cache=true".into(),
                format!("--cache-repo=oci:{}", cache.display()),
            ],
        ),
        ("walk", vec!["--overlay-snapshots=false".into()]),
    ];
    for (name, extra) in variants {
        if name != "ctx" {
            copy_tree(&tmp.path().join("ctx"), &tmp.path().join(name));
        }
        let mut args = vec![
            "--ssh".into(),
            "default".into(),
            "--ssh".into(),
            second.clone(),
        ];
        args.extend(extra);
        let built = build(
            &reg,
            tmp.path(),
            name,
            &dockerfile,
            &args,
            Some(&agent.socket),
            None,
        );
        assert!(built.ok, "{name}: {}", built.stderr);
        let out = new_entries(&built.layout);
        let file = |p: &str| {
            out.get(p)
                .cloned()
                .unwrap_or_else(|| panic!("{name}: {p} missing"))
        };
        assert_eq!(file("out/env"), "/run/buildkit/ssh_agent.0\n");
        assert_eq!(file("out/stat"), "600 0 0\n", "{name}: BuildKit's defaults");
        assert!(
            file("out/keys").contains(&agent.fingerprint),
            "{name}: ssh-add -l through the socket: {}",
            file("out/keys")
        );
        // USER nobody reaches the agent too: the agent sees kiln, not the step's uid.
        assert_eq!(file("out/env-nobody"), "/tmp/agent.sock\n");
        assert_eq!(file("out/stat-nobody"), "640 65534 65534\n");
        assert!(
            file("out/keys-nobody").contains(&agent.fingerprint),
            "{name}"
        );
        // Optional and not given: SSH_AUTH_SOCK still names the target (BuildKit), no socket.
        assert_eq!(file("out/env-absent"), "/run/buildkit/ssh_agent.0\n");
        assert_eq!(file("out/absent"), "ran\n");
        assert_eq!(file("out/later"), "gone\n");
        assert_no_trace(&built, &agent);
    }
    let sock = agent.socket.to_string_lossy();
    let mut scanned = 0;
    for e in walk(&cache) {
        if e.is_file() {
            let bytes = kiln_testkit::layout::decompress(&std::fs::read(&e).unwrap());
            assert!(
                !kiln_testkit::layout::contains(&bytes, sock.as_bytes()),
                "the agent's path is in the layer cache: {}",
                e.display()
            );
            scanned += 1;
        }
    }
    assert!(
        scanned > 3,
        "the layer cache stored nothing ({scanned} files)"
    );
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![p.to_path_buf()];
    while let Some(e) = todo.pop() {
        if e.is_dir() && !e.is_symlink() {
            for c in std::fs::read_dir(&e).unwrap() {
                todo.push(c.unwrap().path());
            }
        }
        out.push(e);
    }
    out
}

fn copy_tree(from: &Path, to: &Path) {
    for e in walk(from) {
        let dest = to.join(e.strip_prefix(from).unwrap());
        if e.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&e, &dest).unwrap();
        }
    }
}

#[test]
fn ssh_flag_errors_name_the_flag() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    let required = "FROM {addr}/library/busybox\nRUN --mount=type=ssh,required=true echo ran\n";
    // No --ssh at all: the required mount fails the step, by name, before it runs.
    let b = build(&reg, tmp.path(), "req", required, &[], None, None);
    assert!(!b.ok);
    assert!(
        b.stderr
            .contains("ssh agent \"default\" is required but was not given"),
        "{}",
        b.stderr
    );
    assert!(!b.stderr.contains("\nran\n"), "the step ran: {}", b.stderr);
    // --ssh default without an agent in the environment.
    let b = build(
        &reg,
        tmp.path(),
        "noenv",
        required,
        &["--ssh".into(), "default".into()],
        None,
        None,
    );
    assert!(!b.ok);
    assert!(
        b.stderr
            .contains("invalid --ssh default: SSH_AUTH_SOCK is not set"),
        "{}",
        b.stderr
    );
    // A file that is no private key: ssh-add's complaint, naming the file the caller gave
    // (key files are loaded into an agent of kiln's: tests/ssh_git.rs).
    let key = tmp.path().join("secret-key-file");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    let b = build(
        &reg,
        tmp.path(),
        "keyfile",
        required,
        &["--ssh".into(), format!("default={}", key.display())],
        None,
        None,
    );
    assert!(!b.ok);
    let loaded = kiln_testkit::which("ssh-agent").is_some()
        && b.stderr
            .contains("invalid --ssh default: ssh-add could not load")
        && b.stderr.contains("secret-key-file");
    let no_tools = b
        .stderr
        .contains("needs ssh-agent and ssh-add (openssh-client) on PATH");
    assert!(loaded || no_tools, "{}", b.stderr);
    // A socket nobody listens on: the step fails before running, without the path.
    let dead = tmp.path().join("dead-agent.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    let b = build(
        &reg,
        tmp.path(),
        "dead",
        required,
        &["--ssh".into(), format!("default={}", dead.display())],
        None,
        None,
    );
    assert!(!b.ok);
    assert!(
        b.stderr
            .contains("--ssh default: connecting to the ssh agent socket"),
        "{}",
        b.stderr
    );
    assert!(!b.stderr.contains("dead-agent"), "{}", b.stderr);
}

#[test]
fn ssh_agent_forwarded_to_an_unprivileged_build() {
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    if me != 0 {
        kiln_testkit::report_skip("not root: cannot run the agent and kiln as uid 65534");
        return;
    }
    if kiln_testkit::which("setpriv").is_none() {
        kiln_testkit::report_skip("setpriv not installed: cannot drop to an ordinary user");
        return;
    }
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    // ssh-agent serves only its own uid (and root): it runs as the builder's uid, as a
    // developer's agent does.
    let Some(agent) = start_agent(&tmp.path().join("agent"), Some(NOBODY)) else {
        return;
    };
    if !host_ssh_add(&tmp.path().join("ctx/hostlibs")) {
        kiln_testkit::report_skip("ldd could not list ssh-add's libraries");
        return;
    }
    let dockerfile = "FROM {addr}/library/busybox\nRUN --mount=type=ssh --mount=type=bind,source=hostlibs,target=/h test -S \"$SSH_AUTH_SOCK\" && id -u > /uid && /h/ld.so --library-path /h /h/ssh-add -l > /keys\n";
    let built = build(
        &reg,
        tmp.path(),
        "ctx",
        dockerfile,
        &["--ssh".into(), "default".into()],
        Some(&agent.socket),
        Some(NOBODY),
    );
    if built.stderr.contains("no user namespace available") {
        kiln_testkit::report_skip("unprivileged user namespaces are not available here");
        return;
    }
    assert!(built.ok, "{}", built.stderr);
    let out = new_entries(&built.layout);
    assert_eq!(out["uid"], "0\n");
    assert!(
        out["keys"].contains(&agent.fingerprint),
        "ssh-add -l as an unprivileged build: {}",
        out["keys"]
    );
    assert_no_trace(&built, &agent);
}
