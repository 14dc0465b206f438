//! What a FROM line's image can go wrong with, against the real registry: a tag that does not
//! exist is named with its line; a single-platform base asked for another platform builds
//! with a warning (BuildKit's InvalidBaseImagePlatform), since its programs may not run there.

use kiln_testkit::{push_busybox, require, Project, Registry};

fn kiln(args: &[String]) -> (bool, String) {
    kiln_testkit::status_and_stderr(env!("CARGO_BIN_EXE_kiln"), args)
}

#[test]
fn a_missing_tag_is_named_with_its_from_line() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM scratch AS other\n\nFROM {}/library/busybox:nosuchtag\nRUN true\n",
        reg.addr()
    ));
    let (ok, err) = kiln(&p.build_args("state", &[]));
    assert!(!ok, "{err}");
    let want = format!(
        "Dockerfile:3: FROM: pulling {}/library/busybox:nosuchtag: ",
        reg.addr()
    );
    assert!(err.contains(&want) && err.contains("404"), "{err}");
}

#[test]
fn a_base_for_another_platform_is_warned_about() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let host = kiln_oci::Platform::host();
    let other = kiln_testkit::image::other_platform();
    let p = Project::new(&format!("FROM {}/library/busybox\nLABEL x=y\n", reg.addr()));
    let (ok, err) = kiln(&p.build_args("state", &["--custom-platform", &other.to_string()]));
    assert!(ok, "{err}");
    let want = format!("is an image for {host}, not for {other} as this build asks");
    assert!(
        err.contains(&want) && err.contains("Dockerfile:1:"),
        "{err}"
    );
    // Asked for its own platform: no warning.
    let (ok, err) = kiln(&p.build_args("state", &["--custom-platform", &host.to_string()]));
    assert!(ok, "{err}");
    assert!(!err.contains("is an image for"), "{err}");
}

/// `COPY --from=biuld` (a misspelt stage) is pulled as an image, as BuildKit does; when that
/// fails the error lists the stages. (The mirror keeps the pull on the local registry.)
#[test]
fn a_misspelt_stage_in_copy_from_lists_the_stages() {
    let reg = require!(Registry::start());
    let p = Project::new(
        "FROM scratch AS build\nCOPY Dockerfile /d\nFROM scratch\nCOPY --from=biuld /d /d\n",
    );
    let mirror = format!("--registry-mirror={}", reg.addr());
    let (ok, err) = kiln(&p.build_args(
        "state",
        &[
            &mirror,
            "--skip-default-registry-fallback",
            "--insecure-registry",
            reg.addr(),
        ],
    ));
    assert!(!ok, "{err}");
    assert!(
        err.contains("Dockerfile:4: COPY: --from=biuld: no stage has that name")
            && err.contains("hint: stages are: build"),
        "{err}"
    );
}
