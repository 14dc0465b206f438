//! Instructions that change only the image configuration (no layer): ENV, LABEL, USER, EXPOSE,
//! VOLUME, CMD, ENTRYPOINT, SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER.
//! Each function applies one (already expanded) instruction to the config and returns the
//! history text `docker build` (BuildKit) writes for it.

use kiln_oci::config::{Empty, Healthcheck, ImageConfig};

/// Go's `%q` of a string (what BuildKit's history uses for JSON-ish lists).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `["a" "b"]`: Go's `%q` of a `[]string`, as BuildKit prints CMD/ENTRYPOINT in history.
pub fn go_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", inner.join(" "))
}

/// `[a b]`: Go's `%v` of a `[]string`, as BuildKit prints VOLUME and SHELL in history
/// (`fmt.Sprintf("VOLUME %v", c.Volumes)`, `fmt.Sprintf("SHELL %v", c.Shell)`).
pub fn go_plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// ENV k=v…
pub fn env(config: &mut ImageConfig, pairs: &[(String, String)]) -> String {
    for (k, v) in pairs {
        config.set_env(k, v);
    }
    let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("ENV {}", text.join(" "))
}

/// LABEL k=v…
pub fn label(config: &mut ImageConfig, pairs: &[(String, String)]) -> String {
    let labels = config
        .config_mut()
        .labels
        .get_or_insert_with(Default::default);
    for (k, v) in pairs {
        labels.insert(k.clone(), v.clone());
    }
    let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("LABEL {}", text.join(" "))
}

/// USER name[:group]
pub fn user(config: &mut ImageConfig, user: &str) -> String {
    config.config_mut().user = Some(user.to_string());
    format!("USER {user}")
}

/// EXPOSE port[/proto]… (ports are normalised to `N/tcp`, and a range `A-B` becomes one entry
/// per port, as Docker's `nat.ParsePortSpecs` does).
pub fn expose(config: &mut ImageConfig, ports: &[String]) -> Result<String, String> {
    let map = config
        .config_mut()
        .exposed_ports
        .get_or_insert_with(Default::default);
    let mut added = Vec::new();
    for p in ports {
        let (port, proto) = match p.split_once('/') {
            Some((port, proto)) => (port, proto.to_ascii_lowercase()),
            None => (p.as_str(), "tcp".to_string()),
        };
        let bad = || format!("invalid port {p:?}: expected PORT[-PORT][/tcp|udp|sctp]");
        let num = |s: &str| s.parse::<u16>().ok().filter(|_| !s.is_empty());
        let (first, last) = match port.split_once('-') {
            Some((a, b)) => (num(a).ok_or_else(bad)?, num(b).ok_or_else(bad)?),
            None => {
                let n = num(port).ok_or_else(bad)?;
                (n, n)
            }
        };
        if last < first || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            return Err(bad());
        }
        for n in first..=last {
            let key = format!("{n}/{proto}");
            map.insert(key.clone(), Empty {});
            added.push(key);
        }
    }
    added.sort();
    let inner: Vec<String> = added.iter().map(|k| format!("{k}:{{}}")).collect();
    Ok(format!("EXPOSE map[{}]", inner.join(" ")))
}

/// VOLUME path…
pub fn volume(config: &mut ImageConfig, paths: &[String]) -> Result<String, String> {
    let map = config
        .config_mut()
        .volumes
        .get_or_insert_with(Default::default);
    for p in paths {
        if p.trim().is_empty() {
            return Err("VOLUME specified can not be an empty string".into());
        }
        map.insert(p.clone(), Empty {});
    }
    Ok(format!("VOLUME {}", go_plain_list(paths)))
}

/// The argv of a CMD/ENTRYPOINT/HEALTHCHECK: exec form as is, shell form through SHELL.
pub fn command_argv(
    config: &ImageConfig,
    exec: Option<&[String]>,
    shell_text: &str,
) -> Vec<String> {
    match exec {
        Some(argv) => argv.to_vec(),
        None => {
            let mut v = shell_of(config);
            v.push(shell_text.to_string());
            v
        }
    }
}

/// The shell for shell-form instructions (`SHELL`, default `/bin/sh -c`).
pub fn shell_of(config: &ImageConfig) -> Vec<String> {
    config
        .config
        .as_ref()
        .and_then(|c| c.shell.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

/// CMD (BuildKit also sets the deprecated `ArgsEscaped`, kept for Docker compatibility).
pub fn cmd(config: &mut ImageConfig, argv: Vec<String>) -> String {
    let text = format!("CMD {}", go_list(&argv));
    let c = config.config_mut();
    c.cmd = Some(argv);
    c.args_escaped = Some(true);
    text
}

/// ENTRYPOINT: resets a CMD inherited from the base image, but not one set earlier in the
/// same stage (`cmd_set`), as BuildKit does.
pub fn entrypoint(config: &mut ImageConfig, argv: Vec<String>, cmd_set: bool) -> String {
    let text = format!("ENTRYPOINT {}", go_list(&argv));
    let c = config.config_mut();
    c.entrypoint = Some(argv);
    if !cmd_set {
        c.cmd = None;
    }
    text
}

/// SHELL ["exe", "arg"…]
pub fn shell(config: &mut ImageConfig, argv: Vec<String>) -> String {
    let text = format!("SHELL {}", go_plain_list(&argv));
    config.config_mut().shell = Some(argv);
    text
}

/// STOPSIGNAL
pub fn stopsignal(config: &mut ImageConfig, signal: &str) -> Result<String, String> {
    let valid = signal.parse::<u32>().is_ok_and(|n| (1..=64).contains(&n))
        || signal
            .strip_prefix("SIG")
            .unwrap_or(signal)
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-')
            && !signal.is_empty();
    if !valid {
        return Err(format!("invalid signal {signal:?}"));
    }
    config.config_mut().stop_signal = Some(signal.to_string());
    Ok(format!("STOPSIGNAL {signal}"))
}

/// HEALTHCHECK (None → `HEALTHCHECK NONE`).
pub fn healthcheck(config: &mut ImageConfig, check: Healthcheck) -> String {
    let test = check.test.clone().unwrap_or_default();
    let text = format!(
        "HEALTHCHECK &{{{} {}s {}s {}s {}s {}}}",
        go_list(&test),
        check.interval / 1_000_000_000,
        check.timeout / 1_000_000_000,
        check.start_period / 1_000_000_000,
        check.start_interval / 1_000_000_000,
        check.retries
    );
    config.config_mut().healthcheck = Some(check);
    text
}

/// ONBUILD <instruction text>
pub fn onbuild(config: &mut ImageConfig, trigger: &str) -> String {
    config
        .config_mut()
        .on_build
        .get_or_insert_with(Vec::new)
        .push(trigger.to_string());
    format!("ONBUILD {trigger}")
}

/// MAINTAINER (deprecated; sets `author`).
pub fn maintainer(config: &mut ImageConfig, who: &str) -> String {
    config.author = Some(who.to_string());
    format!("MAINTAINER {who}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_resets_cmd() {
        let mut c = ImageConfig::default();
        cmd(&mut c, vec!["a".into()]);
        entrypoint(&mut c, vec!["e".into()], false);
        assert_eq!(c.config.as_ref().unwrap().cmd, None);
        cmd(&mut c, vec!["b".into()]);
        entrypoint(&mut c, vec!["e".into()], true);
        assert_eq!(c.config.as_ref().unwrap().cmd, Some(vec!["b".into()]));
    }

    #[test]
    fn expose_normalises_and_validates() {
        let mut c = ImageConfig::default();
        let h = expose(&mut c, &["80".into(), "53/UDP".into()]).unwrap();
        assert_eq!(h, "EXPOSE map[53/udp:{} 80/tcp:{}]");
        assert!(expose(&mut c, &["http".into()]).is_err());
        expose(&mut c, &["8000-8002".into()]).unwrap();
        assert!(c
            .config
            .as_ref()
            .unwrap()
            .exposed_ports
            .as_ref()
            .unwrap()
            .contains_key("8001/tcp"));
        assert!(expose(&mut c, &["90-80".into()]).is_err());
        let h = expose(&mut c, &["8000-8002".into()]).unwrap();
        assert_eq!(h, "EXPOSE map[8000/tcp:{} 8001/tcp:{} 8002/tcp:{}]");
        assert!(c
            .config
            .as_ref()
            .unwrap()
            .exposed_ports
            .as_ref()
            .unwrap()
            .contains_key("8001/tcp"));
        assert!(expose(&mut c, &["80/xyz".into()]).is_err());
    }

    #[test]
    fn volume_and_shell_history_use_plain_lists() {
        let mut c = ImageConfig::default();
        assert_eq!(
            volume(&mut c, &["/a".into(), "/b c".into()]).unwrap(),
            "VOLUME [/a /b c]"
        );
        assert_eq!(
            shell(&mut c, vec!["/bin/sh".into(), "-ec".into()]),
            "SHELL [/bin/sh -ec]"
        );
    }

    #[test]
    fn history_lists_are_go_quoted() {
        assert_eq!(go_list(&["a b".into(), "c\"d".into()]), r#"["a b" "c\"d"]"#);
    }

    #[test]
    fn shell_form_uses_shell() {
        let mut c = ImageConfig::default();
        assert_eq!(
            command_argv(&c, None, "echo hi"),
            vec!["/bin/sh", "-c", "echo hi"]
        );
        shell(&mut c, vec!["/bin/bash".into(), "-xc".into()]);
        assert_eq!(command_argv(&c, None, "x"), vec!["/bin/bash", "-xc", "x"]);
    }
}
