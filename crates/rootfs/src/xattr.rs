//! Extended attributes through rustix (nix has no xattr calls; `#![forbid(unsafe_code)]`).

use std::ffi::OsString;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

/// Largest xattr value Linux allows (`XATTR_SIZE_MAX`, xattr(7)).
const VALUE_MAX: usize = 64 * 1024;

fn names_of(buf: &[u8]) -> Vec<OsString> {
    buf.split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| OsString::from_vec(n.to_vec()))
        .collect()
}

/// All xattrs of `path` (not following a last symlink), sorted by name.
pub(crate) fn list(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut buf = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    if n == 0 {
        return Ok(out);
    }
    let mut val = vec![0u8; VALUE_MAX];
    for name in names_of(&buf[..n]) {
        match rustix::fs::lgetxattr(path, name.as_os_str(), &mut val[..]) {
            Ok(len) => out.push((name, val[..len].to_vec())),
            // Removed between list and get: skip.
            Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(e.into()),
        }
    }
    out.sort();
    Ok(out)
}

/// Sets an xattr through an open fd.
pub(crate) fn fset(fd: impl AsFd, name: &OsString, value: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(fd, name.as_os_str(), value, rustix::fs::XattrFlags::empty())
        .map_err(Into::into)
}

/// Sets an xattr on `path` without following a last symlink.
pub(crate) fn lset(path: &Path, name: &OsString, value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(
        path,
        name.as_os_str(),
        value,
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(Into::into)
}
