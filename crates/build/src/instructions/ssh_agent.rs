//! `RUN --mount=type=ssh`: a forwarding socket in front of the caller's ssh-agent, served by
//! kiln for the length of one step.
//!
//! The agent's own socket is not bound into the step, as BuildKit does not either (it serves
//! a socket of its own and relays to the client's agent through the session):
//! - ssh-agent(1) refuses a peer whose uid is not its own (OpenSSH `ssh-agent.c` checks
//!   `getpeereid`), and a step running as `USER app` in the step's user namespace is another
//!   host uid; kiln's own connection is the caller's uid, as the agent expects;
//! - the mount's `mode=`, `uid=` and `gid=` apply to a socket file kiln owns: a chmod of the
//!   agent's socket would change the caller's file on the host;
//! - the forwarding stops when the step ends, so nothing the step leaves running (the
//!   sandbox kills its processes anyway) can reach the agent later.
//!
//! The relay copies bytes both ways and understands nothing of the agent protocol.

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Connections one step may hold open to the agent at a time; more are closed at once (each
/// costs two threads and two descriptors).
const MAX_CONNECTIONS: usize = 64;

/// `sun_path` of `sockaddr_un` is 108 bytes on Linux, NUL included (unix(7)).
const SUN_PATH_MAX: usize = 107;

/// A running relay from a socket file kiln created to an ssh-agent. Dropping it stops the
/// relay, closes every open connection and waits for its threads.
pub struct AgentForward {
    socket: PathBuf,
    /// The directory holding `socket`, open, so that a path too long for `sun_path` can be
    /// reached as `/proc/self/fd/N/<name>`.
    dir: std::fs::File,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, [UnixStream; 2]>>>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AgentForward {
    // Neither path: the socket file is kiln's, but the agent's is the caller's.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentForward").finish_non_exhaustive()
    }
}

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The agent's socket does not answer (agent gone, not a socket, no permission). The
    /// path is left out: it is the caller's, and logs may be public.
    #[error("connecting to the ssh agent socket: {0}")]
    Agent(#[source] io::Error),
    /// kiln's own socket (in the step's private scratch directory) could not be made.
    #[error("creating the forwarding socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The address to bind or connect to for `path`: itself when it fits in `sun_path`, else the
/// same file through the open directory `dir` (`/proc/self/fd/N` resolves to it).
fn addr(path: &Path, dir: &std::fs::File) -> PathBuf {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return path.to_path_buf();
    }
    let name = path.file_name().unwrap_or_default();
    Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name)
}

impl AgentForward {
    /// Starts relaying connections on a new socket file `socket` (its parent must exist and
    /// be private to kiln) to the agent at `agent`. The file gets `mode`, and `uid`/`gid`
    /// where kiln may chown (best effort, as for secret files). Fails when the agent does not
    /// answer now, so a step never starts with a dead socket.
    pub fn start(
        agent: &Path,
        socket: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<AgentForward, ForwardError> {
        drop(UnixStream::connect(agent).map_err(ForwardError::Agent)?);
        let err = |source| ForwardError::Socket {
            path: socket.to_path_buf(),
            source,
        };
        let parent = socket.parent().unwrap_or(Path::new("/"));
        let dir = std::fs::File::open(parent).map_err(err)?;
        let listener = UnixListener::bind(addr(socket, &dir)).map_err(err)?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode & 0o7777))
            .map_err(err)?;
        // Without CAP_CHOWN (no user namespace) the file stays the caller's, like a secret's.
        let _ = std::os::unix::fs::chown(socket, Some(uid), Some(gid));
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, [UnixStream; 2]>>> = Arc::default();
        let accept = {
            let (stop, conns, agent) = (stop.clone(), conns.clone(), agent.to_path_buf());
            std::thread::Builder::new()
                .name("ssh-forward".into())
                .spawn(move || accept_loop(&listener, &agent, &stop, &conns))
                .map_err(err)?
        };
        Ok(AgentForward {
            socket: socket.to_path_buf(),
            dir,
            stop,
            conns,
            accept: Some(accept),
        })
    }

    /// The socket file the step's mount binds.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for AgentForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept(2): it sees `stop` and returns.
        let woke = UnixStream::connect(addr(&self.socket, &self.dir)).is_ok();
        for [a, b] in self.lock_conns().values() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        if let Some(h) = self.accept.take() {
            if woke {
                let _ = h.join();
            }
            // Not woken (the file was removed under us): the thread stays blocked on a
            // socket nobody can reach; leaving it is better than hanging the build.
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl AgentForward {
    fn lock_conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, [UnixStream; 2]>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn accept_loop(
    listener: &UnixListener,
    agent: &Path,
    stop: &AtomicBool,
    conns: &Arc<Mutex<HashMap<u64, [UnixStream; 2]>>>,
) {
    let mut next: u64 = 0;
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::SeqCst) {
            break;
        }
        workers.retain(|w| !w.is_finished());
        let Ok((client, _)) = accepted else { continue };
        let open = conns.lock().unwrap_or_else(|p| p.into_inner()).len();
        if open >= MAX_CONNECTIONS {
            tracing::warn!(
                "ssh forwarding: more than {MAX_CONNECTIONS} connections at once; closing one"
            );
            continue;
        }
        let upstream = match UnixStream::connect(agent) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("ssh forwarding: connecting to the agent: {e}");
                continue;
            }
        };
        let id = next;
        next += 1;
        let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
            continue;
        };
        {
            let mut open = conns.lock().unwrap_or_else(|p| p.into_inner());
            // Drop sets `stop` before it shuts the open connections down under this lock:
            // a connection inserted after that is shut here instead.
            if stop.load(Ordering::SeqCst) {
                let _ = c2.shutdown(Shutdown::Both);
                let _ = u2.shutdown(Shutdown::Both);
            }
            open.insert(id, [c2, u2]);
        }
        let conns = conns.clone();
        let spawned = std::thread::Builder::new()
            .name("ssh-forward-conn".into())
            .spawn(move || {
                relay(client, upstream);
                conns.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            });
        if let Ok(h) = spawned {
            workers.push(h);
        }
    }
    // Drop shut every connection down, so these return.
    for w in workers {
        let _ = w.join();
    }
}

/// Copies both ways until both directions are done; a half-close is passed on, so a client
/// that shuts its write side still gets the agent's answer.
fn relay(client: UnixStream, upstream: UnixStream) {
    let (Ok(mut c_read), Ok(mut u_read)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut u_write = &upstream;
            let _ = io::copy(&mut c_read, &mut u_write);
            let _ = upstream.shutdown(Shutdown::Write);
        });
        let mut c_write = &client;
        let _ = io::copy(&mut u_read, &mut c_write);
        let _ = client.shutdown(Shutdown::Write);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    /// An echo server standing in for the agent: answers each read with its bytes
    /// upper-cased, and closes when the client does.
    fn echo_agent(path: &Path) -> JoinHandle<()> {
        let l = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        if s.write_all(&buf[..n].to_ascii_uppercase()).is_err() {
                            return;
                        }
                    }
                });
            }
        })
    }

    fn ask(path: &Path, msg: &[u8]) -> Vec<u8> {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(msg).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn relays_both_ways_with_the_asked_mode_and_stops_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("agent.sock");
        let _a = echo_agent(&agent);
        let sock = tmp.path().join("fwd");
        let f = AgentForward::start(&agent, &sock, 0o640, 0, 0).unwrap();
        assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o7777, 0o640);
        // Several at once: each connection is its own relay.
        let answers: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let sock = &sock;
                    s.spawn(move || ask(sock, format!("hello {i}").as_bytes()))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, a) in answers.iter().enumerate() {
            assert_eq!(a, format!("HELLO {i}").as_bytes());
        }
        // A connection still open when the step ends is closed, and drop returns.
        let mut held = UnixStream::connect(&sock).unwrap();
        held.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        held.write_all(b"partial").unwrap();
        let mut got = [0u8; 7];
        held.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"PARTIAL");
        drop(f);
        let mut rest = Vec::new();
        assert_eq!(held.read_to_end(&mut rest).unwrap(), 0, "still connected");
        assert!(!sock.exists(), "the forwarding socket outlived its step");
    }

    #[test]
    fn a_dead_agent_fails_at_start_without_naming_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("no-agent-here.sock");
        let e = AgentForward::start(&agent, &tmp.path().join("fwd"), 0o600, 0, 0).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("connecting to the ssh agent socket"), "{msg}");
        assert!(!msg.contains("no-agent-here"), "{msg}");
    }

    #[test]
    fn socket_paths_longer_than_sun_path_work() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("agent.sock");
        let _a = echo_agent(&agent);
        let deep = tmp.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let sock = deep.join("ssh-0");
        assert!(sock.as_os_str().len() > SUN_PATH_MAX);
        let f = AgentForward::start(&agent, &sock, 0o600, 0, 0).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_socket(
            &std::fs::metadata(&sock).unwrap().file_type()
        ));
        assert_eq!(ask(&addr(&sock, &f.dir), b"x"), b"X");
        drop(f);
        assert!(!sock.exists());
    }
}
