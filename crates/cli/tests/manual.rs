//! `tenax completions SHELL` and `tenax man` against the real binary: the
//! scripts name every subcommand and the options of one, bash accepts the
//! bash script and registers it, and the man pages are roff that groff
//! renders with the options in them (README "Install").

use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_tenax");

const SUBCOMMANDS: [&str; 6] = ["serve", "upload", "download", "sign", "completions", "man"];

fn tenax(args: &[&str]) -> Output {
    let output = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tenax");
    assert!(
        output.status.success(),
        "tenax {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn text(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn bash_completions_name_the_subcommands_and_register() {
    let script = text(&tenax(&["completions", "bash"]));
    for sub in SUBCOMMANDS {
        assert!(script.contains(sub), "bash completions lack {sub}");
    }
    for option in [
        "--listen",
        "--max-upload-size",
        "--protocol",
        "--chunk-size",
    ] {
        assert!(script.contains(option), "bash completions lack {option}");
    }
    if !have("bash") {
        eprintln!("skipped: no bash to load the script into");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tenax.bash");
    std::fs::write(&path, &script).expect("write script");
    // Loaded into a real bash, the script registers a completion for tenax,
    // and completing `tenax se` offers `serve` (and `sign` is not offered).
    let probe = format!(
        "source {path}; complete -p tenax; \
         COMP_WORDS=(tenax se); COMP_CWORD=1; COMP_LINE='tenax se'; COMP_POINT=8; \
         _tenax tenax se tenax; printf 'reply:%s\\n' \"${{COMPREPLY[@]}}\"",
        path = path.display()
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &probe])
        .output()
        .expect("bash");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bash rejected the script: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(out.contains("complete") && out.contains("tenax"), "{out}");
    assert!(out.contains("reply:serve"), "no serve offered: {out}");
    assert!(!out.contains("reply:sign"), "sign offered for `se`: {out}");
}

#[test]
fn other_shells_get_scripts() {
    for (shell, marker) in [
        ("zsh", "#compdef tenax"),
        ("fish", "complete -c tenax"),
        ("elvish", "tenax"),
        ("powershell", "tenax"),
    ] {
        let script = text(&tenax(&["completions", shell]));
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        assert!(script.contains("upload"), "{shell}: no upload subcommand");
    }
    let refused = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("run tenax");
    assert!(!refused.status.success(), "an unknown shell is refused");
}

/// Renders a roff page with groff; `None` when groff is not installed.
fn render(page: &Path) -> Option<String> {
    if !have("groff") {
        eprintln!("skipped rendering: no groff");
        return None;
    }
    let output = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww"])
        .arg(page)
        .env("GROFF_NO_SGR", "1")
        .output()
        .expect("groff");
    let warnings = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && warnings.trim().is_empty(),
        "groff on {}: {warnings}",
        page.display()
    );
    // `-k` runs preconv, as man(1) does: help texts hold UTF-8 (—, …).
    // Rendered text: strip the overstrike bold and underline of -Tutf8.
    let rendered = String::from_utf8_lossy(&output.stdout);
    let mut plain = String::new();
    let mut chars = rendered.chars().peekable();
    while let Some(c) = chars.next() {
        if chars.peek() == Some(&'\u{8}') {
            chars.next();
            continue;
        }
        plain.push(c);
    }
    Some(plain)
}

#[test]
fn man_pages_are_roff_with_the_options() {
    let top = text(&tenax(&["man"]));
    assert!(top.contains(".TH tenax 1"), "no title line: {top}");
    for sub in ["serve", "upload", "download", "sign"] {
        assert!(
            top.contains(&format!("tenax\\-{sub}(1)")),
            "no {sub} page named"
        );
    }
    let serve = text(&tenax(&["man", "serve"]));
    assert!(serve.contains(".TH tenax-serve 1"), "title: {serve}");
    assert!(serve.contains("\\-\\-listen"), "serve page lacks --listen");

    let dir = tempfile::tempdir().expect("tempdir");
    tenax(&["man", "--out-dir", &dir.path().display().to_string()]);
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "tenax-completions.1",
            "tenax-download.1",
            "tenax-man.1",
            "tenax-serve.1",
            "tenax-sign.1",
            "tenax-upload.1",
            "tenax.1"
        ]
    );
    let Some(rendered) = render(&dir.path().join("tenax-serve.1")) else {
        return;
    };
    for needle in [
        "tenax-serve",
        "SYNOPSIS",
        "OPTIONS",
        "--listen <ADDR>",
        "--max-upload-size",
        "--behind-proxy",
    ] {
        assert!(
            rendered.contains(needle),
            "rendered page lacks {needle:?}:\n{rendered}"
        );
    }
    let upload = render(&dir.path().join("tenax-upload.1")).expect("groff ran once");
    assert!(upload.contains("--protocol <PROTOCOL>"), "{upload}");
}

#[test]
fn man_of_an_unknown_subcommand_fails() {
    let output = Command::new(BIN)
        .args(["man", "nope"])
        .output()
        .expect("run tenax");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no subcommand"));
}
