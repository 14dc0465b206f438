//! `ADD ssh://…` through `--ssh`, end to end against a real `sshd` on 127.0.0.1 (a random
//! free port, a private config and host key in a temporary directory) serving a bare
//! repository, with a key pair made by ssh-keygen:
//! - `--ssh default` with an ssh-agent holding the key builds, `#ref` and `--keep-git-dir`
//!   as for https remotes;
//! - without `--ssh` the build fails naming the line and `--ssh default`;
//! - `--ssh default=KEYFILE` (kiln's own agent) builds too, and the next step's cache key is
//!   the same as with the caller's agent (the socket's path is no input of a key);
//! - a passphrase-protected key file fails by name;
//! - neither the agent's socket, its directory nor the key file's path is in the image
//!   (config, history, layers), the layer cache or the log.
//!
//! sshd needs root here (it switches to the logged-in user and wants /run/sshd); elsewhere the
//! tests print `skipped: <reason>`.

use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (by its own handle) on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ssh side: sshd serving `repo` (a bare repository with tag v1 and branch main) to the
/// key at `key`, and an agent holding that key.
struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    _sshd: Killed,
    _agent: Killed,
    port: u16,
    repo: PathBuf,
    key: PathBuf,
    locked_key: PathBuf,
    agent_socket: PathBuf,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn sshd_path() -> Option<PathBuf> {
    kiln_testkit::which("sshd").or_else(|| {
        ["/usr/sbin/sshd", "/usr/local/sbin/sshd"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `None` (after printing why) when sshd cannot run here.
fn fixture() -> Option<Fixture> {
    let skip = |why: &str| {
        kiln_testkit::report_skip(why);
        None
    };
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        return skip("not root: sshd cannot log a user in");
    }
    let Some(sshd) = sshd_path() else {
        return skip("openssh-server not installed (./scripts/test.sh installs it)");
    };
    let tools = ["ssh", "ssh-agent", "ssh-add", "ssh-keygen"].map(kiln_testkit::which);
    let [Some(_), Some(agent), Some(add), Some(keygen)] = tools else {
        return skip("openssh-client not installed (./scripts/test.sh installs it)");
    };
    if !kiln_testkit::git::available() {
        return skip("git not installed");
    }
    // Debian's sshd refuses to start without its privilege separation directory (normally
    // made by the service unit, which is not running here).
    if std::fs::create_dir_all("/run/sshd").is_err() {
        return skip("cannot create /run/sshd");
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let keygen_to = |name: &str, pass: &str| {
        let k = dir.join(name);
        run(Command::new(&keygen)
            .args([
                "-q",
                "-t",
                "ed25519",
                "-C",
                "kiln-ssh-git",
                "-N",
                pass,
                "-f",
            ])
            .arg(&k));
        k
    };
    let host_key = keygen_to("host_key", "");
    let key = keygen_to("client-key-file", "");
    let locked_key = keygen_to("locked-key-file", "kiln passphrase");
    // The locked key is authorized too: only the missing passphrase may stop it.
    let mut authorized = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    authorized.push_str(&std::fs::read_to_string(locked_key.with_extension("pub")).unwrap());
    std::fs::write(dir.join("authorized_keys"), authorized).unwrap();

    // The repository: tag v1 ("v1"), then main ("main").
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let g = kiln_testkit::git::run;
    g(&work, &["init", "-q", "-b", "main"]);
    std::fs::write(work.join("hello.txt"), "v1\n").unwrap();
    g(&work, &["add", "-A"]);
    g(&work, &["commit", "-q", "-m", "one"]);
    g(&work, &["tag", "v1"]);
    std::fs::write(work.join("hello.txt"), "main\n").unwrap();
    g(&work, &["commit", "-q", "-am", "two"]);
    let repo = dir.join("srv/repo.git");
    std::fs::create_dir_all(&repo).unwrap();
    g(&repo, &["init", "-q", "--bare"]);
    g(&work, &["push", "-q", repo.to_str().unwrap(), "main", "v1"]);

    let port = free_port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {}\nAuthorizedKeysFile {}\n\
             StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nPidFile none\nPermitRootLogin prohibit-password\n",
            host_key.display(),
            dir.join("authorized_keys").display()
        ),
    )
    .unwrap();
    let sshd = Killed(
        Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return skip("sshd did not start listening");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent_dir = dir.join("caller-agent-dir");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let agent_socket = agent_dir.join("agent.sock");
    let agent = Killed(
        Command::new(agent)
            .arg("-D")
            .arg("-a")
            .arg(&agent_socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    while !agent_socket.exists() {
        assert!(Instant::now() < deadline, "ssh-agent made no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    run(Command::new(add)
        .arg("-q")
        .arg(&key)
        .env("SSH_AUTH_SOCK", &agent_socket));
    Some(Fixture {
        _tmp: tmp,
        dir,
        _sshd: sshd,
        _agent: agent,
        port,
        repo,
        key,
        locked_key,
        agent_socket,
    })
}

struct Built {
    ok: bool,
    log: String,
    layout: PathBuf,
}

impl Fixture {
    fn url(&self, fragment: &str) -> String {
        format!(
            "ssh://root@127.0.0.1:{}{}{fragment}",
            self.port,
            self.repo.display()
        )
    }

    /// `kiln build` of `dockerfile` into an OCI layout, `SSH_AUTH_SOCK` set to `auth_sock`
    /// (or unset), at trace verbosity (every log line is checked for the paths).
    fn build(&self, name: &str, dockerfile: &str, args: &[String], auth_sock: bool) -> Built {
        let ctx = self.dir.join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        std::fs::write(ctx.join("ctxfile"), "from the context\n").unwrap();
        let layout = self.dir.join(format!("{name}-oci"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
        cmd.env_remove("SSH_AUTH_SOCK")
            .env_remove("KILN_USERNS")
            .env("HOME", &self.dir);
        if auth_sock {
            cmd.env("SSH_AUTH_SOCK", &self.agent_socket);
        }
        let out = cmd
            .arg("build")
            .arg("-c")
            .arg(&ctx)
            .args(["--no-push", "--log-format=text", "--verbosity=trace"])
            .args(args)
            .arg("--oci-layout-path")
            .arg(&layout)
            .arg("--kiln-dir")
            .arg(self.dir.join("state"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Built {
            ok: out.status.success(),
            log: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            layout,
        }
    }

    /// The paths that must never be in an image, a cache entry or a log.
    fn secrets(&self) -> Vec<String> {
        vec![
            self.agent_socket.display().to_string(),
            self.agent_socket.parent().unwrap().display().to_string(),
            self.key.display().to_string(),
            self.dir.join("state/tmp").display().to_string(),
            "client-key-file".into(),
        ]
    }

    fn assert_no_trace(&self, what: &str, log: &str, layouts: &[&Path]) {
        for s in self.secrets() {
            assert!(!log.contains(&s), "{what}: {s} is in the log:\n{log}");
        }
        for layout in layouts {
            let blobs = kiln_testkit::layout::all_blob_bytes(layout);
            assert!(!blobs.is_empty(), "{what}: {} is empty", layout.display());
            for blob in blobs {
                let bytes = kiln_testkit::layout::decompress(&blob);
                for s in self.secrets() {
                    assert!(
                        !kiln_testkit::layout::contains(&bytes, s.as_bytes()),
                        "{what}: {s} is in a blob of {}",
                        layout.display()
                    );
                }
            }
        }
    }
}

/// Path → content of every entry in the image's layers.
fn files(layout: &Path) -> std::collections::BTreeMap<String, String> {
    kiln_testkit::layout::flatten(layout)
        .into_iter()
        .map(|(p, e)| (p, String::from_utf8_lossy(&e.content).into_owned()))
        .collect()
}

/// The entries (keys) of an OCI-layout layer cache.
fn cache_entries(layout: &Path) -> Vec<String> {
    let index = kiln_testkit::layout::read_json(&layout.join("index.json"));
    let mut v: Vec<String> = index["manifests"]
        .as_array()
        .map(|m| m.iter().map(|e| e.to_string()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn add_ssh_git_through_the_build_agent() {
    let Some(f) = fixture() else { return };
    let cache = f.dir.join("cache-layout");
    let cache_args = |extra: &[String]| {
        let mut v: Vec<String> = vec![
            "--cache=true".into(),
            "--cache-copy-layers=true".into(),
            "--reproducible".into(),
            format!("--cache-repo=oci:{}", cache.display()),
        ];
        v.extend(extra.iter().cloned());
        v
    };
    let dockerfile = format!(
        "FROM scratch\nADD {} /src/\nCOPY ctxfile /ctxfile\n",
        f.url("#v1")
    );

    // Without --ssh: refused by name and line, before any connection.
    let b = f.build("none", &dockerfile, &cache_args(&[]), true);
    assert!(!b.ok, "{}", b.log);
    assert!(
        b.log.contains("Dockerfile:2: ADD:") && b.log.contains("pass --ssh default"),
        "{}",
        b.log
    );

    // The caller's agent (--ssh default from SSH_AUTH_SOCK): the tag's content.
    let b = f.build(
        "agent",
        &dockerfile,
        &cache_args(&["--ssh".into(), "default".into()]),
        true,
    );
    assert!(b.ok, "{}", b.log);
    let got = files(&b.layout);
    assert_eq!(
        got.get("src/hello.txt").map(String::as_str),
        Some("v1\n"),
        "{got:?}"
    );
    assert!(!got.keys().any(|p| p.contains(".git")), "{got:?}");
    let stored = cache_entries(&cache);
    assert!(!stored.is_empty(), "nothing cached");
    f.assert_no_trace("agent", &b.log, &[&b.layout, &cache]);

    // A key file (kiln's own agent, another socket path): the same image, and no new cache
    // entry: the COPY after the ADD has the same key (the socket is no input of a key).
    let key_arg = format!("default={}", f.key.display());
    let b2 = f.build(
        "keyfile",
        &dockerfile,
        &cache_args(&["--ssh".into(), key_arg]),
        false,
    );
    assert!(b2.ok, "{}", b2.log);
    assert_eq!(files(&b2.layout), got);
    assert_eq!(
        kiln_testkit::layout::manifest(&b2.layout),
        kiln_testkit::layout::manifest(&b.layout),
        "the same image whichever agent fetched it"
    );
    assert_eq!(
        cache_entries(&cache),
        stored,
        "the cache key depends on the agent"
    );
    f.assert_no_trace("keyfile", &b2.log, &[&b2.layout, &cache]);
    // kiln's agent is gone with the build: nothing left in the state's tmp directory.
    let left: Vec<_> = std::fs::read_dir(f.dir.join("state/tmp"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");

    // `--keep-git-dir` and a branch ref, through the caller's agent, in a busier image.
    let keep = format!(
        "FROM scratch\nADD --keep-git-dir=true {} /repo\n",
        f.url("#main")
    );
    let b3 = f.build("keep", &keep, &["--ssh".into(), "default".into()], true);
    assert!(b3.ok, "{}", b3.log);
    let got = files(&b3.layout);
    assert_eq!(
        got.get("repo/hello.txt").map(String::as_str),
        Some("main\n")
    );
    assert!(got.contains_key("repo/.git/HEAD"), "{:?}", got.keys());
    f.assert_no_trace("keep-git-dir", &b3.log, &[&b3.layout]);

    // A passphrase-protected key file: refused by name, no prompt (stdin is /dev/null).
    let locked = format!("default={}", f.locked_key.display());
    let b4 = f.build("locked", &dockerfile, &["--ssh".into(), locked], false);
    assert!(!b4.ok);
    assert!(
        b4.log.contains("is protected by a passphrase")
            && b4.log.contains(&*f.locked_key.to_string_lossy()),
        "{}",
        b4.log
    );
}

/// The pids of running processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // A zombie is gone already; it waits only for its parent to reap it.
        let zombie = state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn kiln_agent_goes_when_kiln_is_interrupted() {
    let tools = ["ssh", "ssh-agent", "ssh-add", "ssh-keygen"].map(kiln_testkit::which);
    let [Some(_), Some(_), Some(_), Some(keygen)] = tools else {
        kiln_testkit::report_skip("openssh-client not installed (./scripts/test.sh installs it)");
        return;
    };
    if !kiln_testkit::git::available() {
        kiln_testkit::report_skip("git not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("key");
    run(Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key));
    // A server that accepts and never speaks: ssh waits for its banner, so the build is held
    // in the ADD while kiln's agent runs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM scratch\nADD ssh://git@127.0.0.1:{port}/r.git /r\n"),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let mut kiln = Killed(
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("KILN_USERNS")
            .arg("build")
            .arg("-c")
            .arg(&ctx)
            .args(["--no-push", "--ssh"])
            .arg(format!("default={}", key.display()))
            .arg("--kiln-dir")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let needle = state.join("tmp").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let agents = loop {
        let found: Vec<i32> = pids_with(&needle)
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"ssh-agent"))
            })
            .collect();
        // The agent is up once ssh connects to the silent server.
        if !found.is_empty() && silent.set_nonblocking(true).is_ok() && silent.accept().is_ok() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "kiln's agent or git's ssh never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let pid = nix::unistd::Pid::from_raw(kiln.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = kiln.0.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?}");
    // The agent's directory went with the build's files at once; the agent itself within
    // ssh-agent's 10-second check of its parent.
    let left: Vec<_> = std::fs::read_dir(state.join("tmp"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while agents.iter().any(|a| pids_with(&needle).contains(a)) {
        assert!(Instant::now() < deadline, "kiln's ssh-agent outlived kiln");
        std::thread::sleep(Duration::from_millis(100));
    }
}
