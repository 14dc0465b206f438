//! Git build contexts and `ADD <git url>`, against repositories served on 127.0.0.1 only:
//! smart HTTP (`git http-backend` behind the testkit server, which also checks Basic auth) for
//! Kaniko's `git://` contexts (fetched over http with `GIT_PULL_METHOD=http`) and docker's
//! `http://…/repo.git#ref:subdir`, and `git daemon` for `ADD git://…`.
//!
//! Covered: branch, tag, commit, `#ref:subdir`, `--context-sub-path`, `--git branch=…`,
//! `.dockerignore` in a git context, `.git` kept for Kaniko's form only, ADD content/owner,
//! `--keep-git-dir`, `--checksum`, bad refs named with their URL, hostile refs and sub-paths,
//! a repository symlink to /etc, credentials that never reach output or the image, and the
//! message when git is missing.

use kiln_testkit::http::{Action, Request, Response, Server};
use kiln_testkit::layout::{all_blob_bytes, contains};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use kiln_testkit::git::{available as have_git, run as g};

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Commit ids of the fixture repository.
struct Repo {
    /// Tagged v1; main's first commit.
    first: String,
    /// main's tip.
    second: String,
}

/// `base/repo.git` (bare, served) made from a work tree with: a Dockerfile copying the
/// context, `version.txt` (v1 / dev / v2), `.dockerignore` hiding `secret.txt`, `app/` with its
/// own Dockerfile, and `escape -> /etc`.
fn make_repo(base: &Path) -> Repo {
    let work = base.join("work");
    std::fs::create_dir_all(&work).unwrap();
    g(&work, &["init", "-q"]);
    write(&work, "Dockerfile", "FROM scratch\nCOPY . /ctx/\n");
    write(&work, "version.txt", "v1\n");
    write(&work, "secret.txt", "ignored by .dockerignore\n");
    write(&work, ".dockerignore", "secret.txt\n");
    write(&work, "app/Dockerfile", "FROM scratch\nCOPY . /app/\n");
    write(&work, "app/main.txt", "app v1\n");
    std::os::unix::fs::symlink("/etc", work.join("escape")).unwrap();
    g(&work, &["add", "-A"]);
    g(&work, &["commit", "-q", "-m", "v1"]);
    g(&work, &["tag", "v1"]);
    let first = g(&work, &["rev-parse", "HEAD"]);
    g(&work, &["checkout", "-q", "-b", "dev"]);
    write(&work, "version.txt", "dev\n");
    g(&work, &["commit", "-q", "-am", "dev"]);
    g(&work, &["checkout", "-q", "main"]);
    write(&work, "version.txt", "v2\n");
    write(&work, "app/main.txt", "app v2\n");
    g(&work, &["commit", "-q", "-am", "v2"]);
    let second = g(&work, &["rev-parse", "HEAD"]);
    g(
        base,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            base.join("repo.git").to_str().unwrap(),
        ],
    );
    Repo { first, second }
}

/// Smart HTTP: each request runs `git http-backend` (CGI) on the project root. With
/// `auth = Some(header)`, requests without exactly that Authorization get 401. Every
/// Authorization header seen is recorded.
struct GitHttp {
    server: Server,
    seen_auth: Arc<Mutex<Vec<String>>>,
}

fn git_http(root: &Path, auth: Option<String>) -> GitHttp {
    let root = root.to_path_buf();
    let seen_auth = Arc::new(Mutex::new(Vec::new()));
    let seen = seen_auth.clone();
    let server = Server::start(Arc::new(move |req: Request, _s: &mut TcpStream| {
        let given = req.header("authorization").map(str::to_string);
        if let Some(a) = &given {
            seen.lock().unwrap().push(a.clone());
        }
        if let Some(want) = &auth {
            if given.as_deref() != Some(want.as_str()) {
                return Action::Respond(
                    Response::new(401, "auth").with_header("WWW-Authenticate", "Basic realm=\"t\""),
                );
            }
        }
        Action::Respond(cgi(&root, &req))
    }))
    .unwrap();
    GitHttp { server, seen_auth }
}

fn cgi(root: &Path, req: &Request) -> Response {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", &req.method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", req.body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (h, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
    ] {
        if let Some(v) = req.header(h) {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let body = req.body.clone();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        });
    let Some((i, sep)) = split else {
        return Response::new(500, "bad cgi output");
    };
    let head = String::from_utf8_lossy(&out.stdout[..i]).to_string();
    let mut resp = Response::new(200, out.stdout[i + sep..].to_vec());
    for line in head.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            resp.status = v
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(500);
        } else if !k.eq_ignore_ascii_case("content-length") {
            resp = resp.with_header(k, v);
        }
    }
    resp
}

/// `git daemon` on a free port; killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git_daemon(base: &Path) -> Option<Daemon> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("git")
        .args([
            "daemon",
            "--export-all",
            "--reuseaddr",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let d = Daemon { child, port };
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(d);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("skipped: git daemon did not start");
    None
}

fn kiln(args: &[&str], env: &[(&str, &str)], tmp: &Path, layout: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("build")
        .args(args)
        .args(["--no-push", "--log-format=text", "--verbosity=debug"])
        .arg("--oci-layout-path")
        .arg(layout)
        .arg("--kiln-dir")
        .arg(tmp.join("state"));
    for k in [
        "GIT_USERNAME",
        "GIT_PASSWORD",
        "GIT_TOKEN",
        "GIT_PULL_METHOD",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "kiln failed:\n{err}");
    err
}

/// Path → (uid, gid, content) of the built image.
fn files(layout: &Path) -> BTreeMap<String, (u64, u64, Vec<u8>)> {
    kiln_testkit::layout::flatten(layout)
        .into_iter()
        .map(|(k, e)| (k, (e.uid, e.gid, e.content)))
        .collect()
}

fn content(f: &BTreeMap<String, (u64, u64, Vec<u8>)>, path: &str) -> String {
    let e = f
        .get(path)
        .unwrap_or_else(|| panic!("{path} not in the image: {:?}", f.keys()));
    String::from_utf8_lossy(&e.2).to_string()
}

#[test]
fn kaniko_git_context_branch_tag_commit_subpath_and_git_flag() {
    if !have_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = make_repo(tmp.path());
    let http = git_http(tmp.path(), None);
    let base = format!("git://{}/repo.git", http.server.addr());
    let http_env = [("GIT_PULL_METHOD", "http")];
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![format!("--context={base}")], "v2\n"),
        (vec![format!("--context={base}#refs/heads/dev")], "dev\n"),
        (vec![format!("--context={base}#refs/tags/v1")], "v1\n"),
        (
            vec![format!("--context={base}#refs/heads/main#{}", repo.first)],
            "v1\n",
        ),
        (
            vec![
                format!("--context={base}"),
                "--git=branch=dev,single-branch=true".into(),
            ],
            "dev\n",
        ),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let layout = tmp.path().join(format!("oci{i}"));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(&kiln(&args, &http_env, tmp.path(), &layout));
        let f = files(&layout);
        assert_eq!(content(&f, "ctx/version.txt"), *want, "{args:?}");
        // .dockerignore of the repository applies to the git context.
        assert!(!f.contains_key("ctx/secret.txt"), "{args:?}");
        // Kaniko's git:// context is a clone: .git is part of it (go-git keeps it).
        assert!(f.contains_key("ctx/.git/HEAD"), "{args:?}");
    }
    // --context-sub-path: the subdirectory is the context (and holds the Dockerfile).
    let layout = tmp.path().join("oci-sub");
    ok(&kiln(
        &[
            &format!("--context={base}#refs/tags/v1"),
            "--context-sub-path=app",
        ],
        &http_env,
        tmp.path(),
        &layout,
    ));
    let f = files(&layout);
    assert_eq!(content(&f, "app/main.txt"), "app v1\n");
    assert!(!f.contains_key("app/version.txt"));
    // Docker's URL form: ref and subdirectory in the fragment; no .git.
    let layout = tmp.path().join("oci-docker");
    ok(&kiln(
        &[&format!(
            "--context=http://{}/repo.git#main:app",
            http.server.addr()
        )],
        &[],
        tmp.path(),
        &layout,
    ));
    let f = files(&layout);
    assert_eq!(content(&f, "app/main.txt"), "app v2\n");
    assert!(!f.keys().any(|k| k.contains(".git")), "{:?}", f.keys());
    let _ = repo.second;
}

#[test]
fn bad_refs_and_hostile_inputs_fail_clearly() {
    if !have_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    make_repo(tmp.path());
    let http = git_http(tmp.path(), None);
    let base = format!("git://{}/repo.git", http.server.addr());
    let env = [("GIT_PULL_METHOD", "http")];
    let layout = tmp.path().join("oci");
    let run = |args: &[&str]| {
        let out = kiln(args, &env, tmp.path(), &layout);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    // A missing ref: the message names the ref and the URL.
    let err = run(&[&format!("--context={base}#refs/heads/nope")]);
    assert!(
        err.contains("refs/heads/nope")
            && err.contains(&format!("{}/repo.git", http.server.addr())),
        "{err}"
    );
    // Option injection through the ref.
    let err = run(&[&format!(
        "--context={base}#--upload-pack=touch /tmp/kiln-pwned"
    )]);
    assert!(err.contains("cannot start with '-'"), "{err}");
    assert!(!Path::new("/tmp/kiln-pwned").exists());
    // Climbing out of the checkout with --context-sub-path or the fragment.
    let err = run(&[&format!("--context={base}"), "--context-sub-path=../../.."]);
    assert!(err.contains("'..' is not allowed"), "{err}");
    let err = run(&[&format!(
        "--context=http://{}/repo.git#main:../x",
        http.server.addr()
    )]);
    assert!(err.contains("'..' is not allowed"), "{err}");
    // A sub-path that is the repository's symlink to /etc is refused, not followed.
    let err = run(&[&format!("--context={base}"), "--context-sub-path=escape"]);
    assert!(err.contains("symlink"), "{err}");
    // An unknown --git key.
    let err = run(&[&format!("--context={base}"), "--git=depth=1"]);
    assert!(err.contains("depth=1"), "{err}");
}

#[test]
fn repository_symlink_to_etc_stays_a_symlink() {
    if !have_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    make_repo(tmp.path());
    let http = git_http(tmp.path(), None);
    let layout = tmp.path().join("oci");
    // COPY . copies `escape` as the symlink it is; COPY through it resolves inside the context.
    let out = kiln(
        &[&format!("--context=git://{}/repo.git", http.server.addr())],
        &[("GIT_PULL_METHOD", "http")],
        tmp.path(),
        &layout,
    );
    ok(&out);
    let passwd = std::fs::read("/etc/passwd").unwrap_or_default();
    let leaked = all_blob_bytes(&layout)
        .iter()
        .any(|b| passwd.len() > 16 && contains(b, &passwd));
    assert!(!leaked, "host /etc/passwd reached the image");
}

#[test]
fn credentials_are_sent_but_never_shown_or_stored() {
    if !have_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    make_repo(tmp.path());
    let password = "pw-3f9a1c-never-print-me";
    let token = "tok-77ab12-never-print-me";
    // Basic base64("ci:pw-3f9a1c-never-print-me").
    let want = |user: &str, pass: &str| {
        let raw = format!("{user}:{pass}");
        let out = Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(raw.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        format!("Basic {}", String::from_utf8_lossy(&out.stdout).trim())
    };
    let http = git_http(tmp.path(), Some(want("ci", password)));
    let ctx = format!("--context=git://{}/repo.git", http.server.addr());
    let layout = tmp.path().join("oci");
    let out = kiln(
        &[&ctx],
        &[
            ("GIT_PULL_METHOD", "http"),
            ("GIT_USERNAME", "ci"),
            ("GIT_PASSWORD", password),
        ],
        tmp.path(),
        &layout,
    );
    let err = ok(&out);
    assert!(!http.seen_auth.lock().unwrap().is_empty());
    let encoded = want("ci", password);
    for text in [err.as_str(), &String::from_utf8_lossy(&out.stdout)] {
        assert!(
            !text.contains(password) && !text.contains(&encoded),
            "{text}"
        );
    }
    // The kept .git (Kaniko form) holds no credential either.
    for b in all_blob_bytes(&layout) {
        assert!(!contains(&b, password.as_bytes()));
        assert!(!contains(&b, encoded.as_bytes()));
    }
    // A wrong password: a failure that does not echo what was sent.
    let out = kiln(
        &[&ctx],
        &[
            ("GIT_PULL_METHOD", "http"),
            ("GIT_USERNAME", "ci"),
            ("GIT_PASSWORD", "wrong-Zq81-never-print"),
        ],
        tmp.path(),
        &tmp.path().join("oci2"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("wrong-Zq81-never-print"), "{err}");
    // GIT_TOKEN is the user name with an empty password (Kaniko's go-git BasicAuth).
    let http = git_http(tmp.path(), Some(want(token, "")));
    let out = kiln(
        &[&format!("--context=git://{}/repo.git", http.server.addr())],
        &[("GIT_PULL_METHOD", "http"), ("GIT_TOKEN", token)],
        tmp.path(),
        &tmp.path().join("oci3"),
    );
    let err = ok(&out);
    assert!(!err.contains(token), "{err}");
    // Credentials written into a URL are sent the same way and redacted from messages.
    let http = git_http(tmp.path(), Some(want("u", password)));
    let out = kiln(
        &[&format!(
            "--context=http://u:{password}@{}/repo.git#nope",
            http.server.addr()
        )],
        &[],
        tmp.path(),
        &tmp.path().join("oci4"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nope") && !err.contains(password), "{err}");
    // ADD with credentials in the URL: fetched, and the history records the URL without them.
    let ctx = tmp.path().join("ctx");
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM scratch\nADD http://u:{password}@{}/repo.git#v1 /src\n",
            http.server.addr()
        ),
    );
    let layout = tmp.path().join("oci5");
    let out = kiln(
        &["--context", ctx.to_str().unwrap()],
        &[],
        tmp.path(),
        &layout,
    );
    let err = ok(&out);
    // The step header shows the line without the URL's user info.
    let text = format!("{}{err}", String::from_utf8_lossy(&out.stdout));
    assert!(!text.contains(password), "{text}");
    assert!(text.contains("ADD http://***@"), "{text}");
    assert_eq!(content(&files(&layout), "src/version.txt"), "v1\n");
    let config = kiln_testkit::layout::config(&layout);
    let history = config["history"].to_string();
    assert!(history.contains("http://***@"), "{history}");
    for b in all_blob_bytes(&layout) {
        assert!(!contains(&b, password.as_bytes()));
    }
}

/// `server/NAME.git` with `vendor/sub` a submodule at `../sub.git` (resolved against the
/// superproject's remote), and, when `hostile`, `.gitmodules` pointing at a file:// URL.
fn make_repo_with_submodule(base: &Path, name: &str, hostile: bool) {
    let srv = base.join("server");
    std::fs::create_dir_all(&srv).unwrap();
    let sub_work = base.join(format!("{name}-sub-work"));
    std::fs::create_dir_all(&sub_work).unwrap();
    g(&sub_work, &["init", "-q"]);
    write(&sub_work, "lib.txt", "from the submodule\n");
    g(&sub_work, &["add", "-A"]);
    g(&sub_work, &["commit", "-q", "-m", "sub"]);
    let sub_bare = srv.join("sub.git");
    if !sub_bare.exists() {
        g(
            base,
            &[
                "clone",
                "-q",
                "--bare",
                sub_work.to_str().unwrap(),
                sub_bare.to_str().unwrap(),
            ],
        );
    }
    // The work tree sits next to sub.git so that `../sub.git` resolves locally too.
    let work = srv.join(format!("{name}-work"));
    std::fs::create_dir_all(&work).unwrap();
    g(&work, &["init", "-q"]);
    write(&work, "Dockerfile", "FROM scratch\nCOPY . /ctx/\n");
    g(&work, &["add", "-A"]);
    g(
        &work,
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            "../sub.git",
            "vendor/sub",
        ],
    );
    if hostile {
        let gm = std::fs::read_to_string(work.join(".gitmodules")).unwrap();
        let gm = gm.replace("../sub.git", &format!("file://{}", sub_bare.display()));
        std::fs::write(work.join(".gitmodules"), gm).unwrap();
        g(&work, &["add", ".gitmodules"]);
    }
    g(&work, &["commit", "-q", "-m", "with submodule"]);
    g(
        base,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            srv.join(format!("{name}.git")).to_str().unwrap(),
        ],
    );
}

#[test]
fn submodules_only_when_asked_and_only_over_allowed_transports() {
    if !have_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    make_repo_with_submodule(tmp.path(), "super", false);
    make_repo_with_submodule(tmp.path(), "evil", true);
    let http = git_http(&tmp.path().join("server"), None);
    let env = [("GIT_PULL_METHOD", "http")];
    let ctx = |name: &str| format!("--context=git://{}/{name}.git", http.server.addr());
    let layout = tmp.path().join("oci-plain");
    ok(&kiln(&[&ctx("super")], &env, tmp.path(), &layout));
    assert!(!files(&layout).contains_key("ctx/vendor/sub/lib.txt"));
    let layout = tmp.path().join("oci-sub");
    ok(&kiln(
        &[&ctx("super"), "--git=recurse-submodules=true"],
        &env,
        tmp.path(),
        &layout,
    ));
    assert_eq!(
        content(&files(&layout), "ctx/vendor/sub/lib.txt"),
        "from the submodule\n"
    );
    // docker's URL form drops .git, the submodule's `.git` file included.
    let layout = tmp.path().join("oci-sub-docker");
    ok(&kiln(
        &[
            &format!("--context=http://{}/super.git", http.server.addr()),
            "--git=recurse-submodules=true",
        ],
        &[],
        tmp.path(),
        &layout,
    ));
    let f = files(&layout);
    assert!(f.contains_key("ctx/vendor/sub/lib.txt"));
    assert!(
        !f.keys().any(|k| k.contains(".git/") || k.ends_with(".git")),
        "{:?}",
        f.keys()
    );
    // A submodule URL on a transport kiln does not allow (file://: the builder's own disk).
    let out = kiln(
        &[&ctx("evil"), "--git=recurse-submodules=true"],
        &env,
        tmp.path(),
        &tmp.path().join("oci-evil"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("submodule") && err.contains("not allowed"),
        "{err}"
    );
}

#[test]
fn add_git_sources_into_a_stage() {
    if !have_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = make_repo(tmp.path());
    let Some(daemon) = git_daemon(tmp.path()) else {
        return;
    };
    let http = git_http(tmp.path(), None);
    let ctx = tmp.path().join("ctx");
    let git_url = format!("git://127.0.0.1:{}/repo.git", daemon.port);
    write(
        &ctx,
        "Dockerfile",
        &format!(
            "FROM scratch\n\
             ADD {git_url}#v1 /src\n\
             ADD --keep-git-dir=true {git_url}#dev /kept/\n\
             ADD --chown=7:8 http://{http}/repo.git#main:app /app\n\
             ADD --checksum={first} {git_url}#{first} /pinned\n",
            http = http.server.addr(),
            first = repo.first,
        ),
    );
    let layout = tmp.path().join("oci");
    let err = ok(&kiln(
        &["--context", ctx.to_str().unwrap()],
        &[],
        tmp.path(),
        &layout,
    ));
    assert!(err.contains(&repo.first), "the commit is reported: {err}");
    let f = files(&layout);
    assert_eq!(content(&f, "src/version.txt"), "v1\n");
    // The repository's own .dockerignore does not apply to ADD: secret.txt is there.
    assert!(f.contains_key("src/secret.txt"));
    assert!(
        !f.keys().any(|k| k.starts_with("src/.git")),
        "{:?}",
        f.keys()
    );
    assert_eq!(f["src/version.txt"].0, 0);
    assert_eq!(f["src/version.txt"].1, 0);
    assert_eq!(content(&f, "kept/version.txt"), "dev\n");
    assert!(f.contains_key("kept/.git/HEAD"));
    assert_eq!(content(&f, "app/main.txt"), "app v2\n");
    assert_eq!((f["app/main.txt"].0, f["app/main.txt"].1), (7, 8));
    assert_eq!(content(&f, "pinned/version.txt"), "v1\n");

    // A wrong --checksum and a missing ref fail, naming the line, ref and URL.
    for (line, want) in [
        (
            format!("ADD --checksum={} {git_url}#v1 /x", repo.second),
            repo.second.clone(),
        ),
        (
            format!("ADD {git_url}#no-such-tag /x"),
            "no-such-tag".into(),
        ),
    ] {
        write(&ctx, "Dockerfile", &format!("FROM scratch\n{line}\n"));
        let out = kiln(
            &["--context", ctx.to_str().unwrap()],
            &[],
            tmp.path(),
            &tmp.path().join("oci-bad"),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{line}");
        assert!(
            err.contains(":2:") && err.contains(&want) && err.contains("/repo.git"),
            "{line}: {err}"
        );
    }
}

#[test]
fn missing_git_binary_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = kiln(
        &["--context=git://127.0.0.1:9/repo.git"],
        &[("PATH", empty.to_str().unwrap())],
        tmp.path(),
        &tmp.path().join("oci"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("git contexts need the git binary in PATH"),
        "{err}"
    );
}
