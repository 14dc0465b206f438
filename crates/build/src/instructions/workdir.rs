//! WORKDIR: sets the working directory and creates it when it does not exist yet. Every
//! directory it creates, parents included, belongs to the current USER: BuildKit's
//! `llb.Mkdir(wd, 0755, WithParents(true), WithUser(user))` chowns each directory its
//! `MkdirAll` makes.

use kiln_oci::config::ImageConfig;
use kiln_rootfs::{Meta, Root, RootError};
use std::path::PathBuf;

/// The new absolute working directory: `dir` if absolute, else relative to the current one.
pub fn resolve(config: &ImageConfig, dir: &str) -> String {
    let current = config
        .config
        .as_ref()
        .and_then(|c| c.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    let joined = if dir.starts_with('/') {
        dir.to_string()
    } else {
        format!("{}/{}", current.trim_end_matches('/'), dir)
    };
    let clean = crate::context::clean_rel(&joined);
    format!("/{}", clean.display())
}

/// Applies WORKDIR; returns the history text and the directory path if it was created.
pub fn workdir(
    config: &mut ImageConfig,
    root: &Root,
    dir: &str,
    owner: (u32, u32),
) -> Result<(String, Option<PathBuf>), RootError> {
    let path = resolve(config, dir);
    config.config_mut().working_dir = Some(path.clone());
    let rel = PathBuf::from(path.trim_start_matches('/'));
    let created = if rel.as_os_str().is_empty() {
        None
    } else {
        match root.resolve(&rel) {
            Ok(host) if host.is_dir() => None,
            // An existing file (or a component of the path that is one) is an error, as in
            // BuildKit ("mkdir …: not a directory"), never replaced by a directory.
            Ok(host) if std::fs::symlink_metadata(&host).is_ok() => {
                return Err(RootError::NotADirectory {
                    path: path.clone(),
                    component: path,
                });
            }
            Err(e @ RootError::NotADirectory { .. }) => return Err(e),
            _ => {
                let meta = Meta {
                    mode: 0o755,
                    uid: owner.0,
                    gid: owner.1,
                    ..Meta::default()
                };
                if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
                    root.create_dir_all(parent, &meta)?;
                }
                let logical = root.mkdir(&rel, &meta)?;
                Some(PathBuf::from(
                    String::from_utf8_lossy(&logical).into_owned(),
                ))
            }
        }
    };
    Ok((format!("WORKDIR {path}"), created))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_file_is_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("app.conf"), b"data").unwrap();
        std::fs::create_dir(tmp.path().join("etc")).unwrap();
        std::fs::write(tmp.path().join("etc/passwd"), b"root").unwrap();
        let root = Root::open(tmp.path()).unwrap();
        for dir in ["/app.conf", "/app.conf/sub", "/etc/passwd/x/y"] {
            let mut c = ImageConfig::default();
            let err = workdir(&mut c, &root, dir, (0, 0)).unwrap_err();
            assert!(
                matches!(err, RootError::NotADirectory { .. }),
                "{dir}: {err}"
            );
        }
        assert_eq!(std::fs::read(tmp.path().join("app.conf")).unwrap(), b"data");
        assert_eq!(
            std::fs::read(tmp.path().join("etc/passwd")).unwrap(),
            b"root"
        );
        let mut c = ImageConfig::default();
        let (_, created) = workdir(&mut c, &root, "/etc/new/deeper", (0, 0)).unwrap();
        assert_eq!(created, Some(PathBuf::from("etc/new/deeper")));
        assert!(tmp.path().join("etc/new/deeper").is_dir());
    }

    #[test]
    fn relative_workdirs_stack() {
        let mut c = ImageConfig::default();
        assert_eq!(resolve(&c, "a"), "/a");
        c.config_mut().working_dir = Some("/srv".into());
        assert_eq!(resolve(&c, "app/../x"), "/srv/x");
        assert_eq!(resolve(&c, "/abs/"), "/abs");
    }
}
