//! What a person at a terminal meets: help, completions, man page, progress, colour.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn run(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("SHMXFER_KEY");
    run_bounded(c, Duration::from_secs(20))
}

/// Runs a shell command under a pseudo-terminal (`script`), returning everything it drew.
fn under_tty(cmd: &str, env: &[(&str, &str)]) -> Vec<u8> {
    let mut c = Command::new("script");
    c.args(["-qec", cmd, "/dev/null"]);
    for (k, v) in env {
        c.env(k, v);
    }
    run_bounded(c, Duration::from_secs(60)).stdout
}

#[test]
fn help_lists_the_four_subcommands_and_the_helpers() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let text = stdout(&o);
    for sub in ["recv", "send", "clean", "status", "completions", "man"] {
        assert!(
            text.contains(&format!("  {sub}")),
            "--help lacks {sub}:\n{text}"
        );
    }
}

#[test]
fn subcommand_help_carries_md5_verbose_and_the_originals_examples() {
    for (sub, example) in [
        ("recv", "recv -m"),
        ("send", "send -m photo.jpg"),
        ("clean", "shmxfer clean"),
        ("status", "shmxfer status"),
    ] {
        let long = stdout(&run(&[sub, "--help"]));
        assert!(
            long.contains("Examples:") && long.contains(example),
            "{sub} --help:\n{long}"
        );
        if sub == "recv" || sub == "send" {
            assert!(
                long.contains("-m, --md5-check") && long.contains("-v, --verbose"),
                "{sub} --help:\n{long}"
            );
        }
        let short = stdout(&run(&[sub, "-h"]));
        assert!(
            !short.contains("Examples:") && short.len() < long.len(),
            "{sub} -h should stay short"
        );
    }
    // status uses ipcs's letters: -m is shared memory there, not MD5.
    assert!(stdout(&run(&["status", "--help"])).contains("-m, --shm"));
}

#[test]
fn completions_are_produced_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = run(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        assert!(
            stdout(&o).contains("shmxfer") && stdout(&o).contains("recv"),
            "{shell}"
        );
    }
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(64));
}

#[test]
fn each_subcommand_has_a_man_page_with_every_option_and_the_usual_sections() {
    for (sub, options) in [
        (
            "recv",
            &["--keep-path", "--exec", "--json", "--direct", "--once"][..],
        ),
        ("send", &["--owner", "--recursive", "--wait", "--name"]),
        ("clean", &["--stale", "--dry-run"]),
        ("status", &["--summary", "--creator", "--human", "--json"]),
    ] {
        let o = run(&["man", sub]);
        assert!(o.status.success());
        let page = String::from_utf8_lossy(&o.stdout);
        assert!(page.contains(&format!(".TH shmxfer-{sub} 1")), "{sub}");
        for section in [
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "SEE ALSO",
        ] {
            assert!(page.contains(section), "{sub}: no {section}");
        }
        for opt in options {
            let roffed = opt.replace('-', "\\-");
            assert!(page.contains(&roffed), "{sub}: no {opt}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["man", "--dir", dir.path().to_str().unwrap()]);
    assert!(o.status.success());
    let mut pages: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    assert_eq!(
        pages,
        [
            "shmxfer-clean.1",
            "shmxfer-recv.1",
            "shmxfer-send.1",
            "shmxfer-status.1",
            "shmxfer.1"
        ]
    );
    assert_eq!(run(&["man", "bogus"]).status.code(), Some(64));
}

#[test]
fn man_page_is_roff_on_stdout() {
    let o = run(&["man"]);
    assert!(o.status.success());
    let text = stdout(&o);
    assert!(
        text.starts_with(".ie") || text.contains(".TH shmxfer"),
        "{}",
        &text[..text.len().min(200)]
    );
    assert!(text.contains("recv"));
}

#[test]
fn progress_is_drawn_on_a_terminal_and_never_into_a_pipe() {
    let env = Env::new();
    let _r = env.recv(&["-q"]);
    let cmd = format!(
        "(head -c 20000000 /dev/zero; sleep 0.6; head -c 20000000 /dev/zero) | {BIN} send --key {} --name slow -",
        env.key_arg()
    );
    let drawn = under_tty(&cmd, &[]);
    let text = String::from_utf8_lossy(&drawn);
    assert!(
        text.contains("B/s") && text.contains('\r'),
        "no progress on a terminal: {text:?}"
    );
    // Labelled with --name, not `-`, and no absurd first rate (the bar starts 200 ms in, with
    // bytes already done).
    assert!(text.contains("slow "), "{text:?}");
    for (i, _) in text.match_indices("GiB/s") {
        let rate: f64 = text[..i]
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0.0);
        assert!(rate < 100.0, "a rate of {rate} GiB/s: {text:?}");
    }

    // The same through pipes: not one escape code or carriage return.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!("{cmd} 2>&1 | cat"))
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(
        !o.stdout.contains(&b'\r') && !o.stdout.contains(&0x1b),
        "{:?}",
        stdout(&o)
    );
    // And nothing with -q even on a terminal.
    let quiet = under_tty(&cmd.replace(" send ", " send -q "), &[]);
    assert!(!String::from_utf8_lossy(&quiet).contains("B/s"));
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let env = Env::new();
    let cmd = format!("{BIN} send --key {} -v /etc/hostname", env.key_arg());
    let coloured = under_tty(&cmd, &[]);
    assert!(
        String::from_utf8_lossy(&coloured).contains("\x1b["),
        "no colour on a terminal"
    );
    let plain = under_tty(&cmd, &[("NO_COLOR", "1")]);
    assert!(
        !plain.contains(&0x1b),
        "colour despite NO_COLOR: {:?}",
        String::from_utf8_lossy(&plain)
    );
    let o = shmxfer(&["send", "-v", "--key", &env.key_arg(), "/etc/hostname"]);
    assert!(
        !o.stderr.contains(&0x1b),
        "colour into a pipe: {:?}",
        stderr(&o)
    );
    says(&o, "shmxfer: error: no receiver");
}

#[test]
fn every_value_the_bash_completion_offers_parses_as_typed() {
    let script = stdout(&run(&["completions", "bash"]));
    let (mut sub, mut opt) = (String::new(), String::new());
    let mut checked = 0;
    for line in script.lines().map(str::trim) {
        if let Some(s) = line
            .strip_prefix("shmxfer__subcmd__")
            .and_then(|s| s.strip_suffix(')'))
        {
            sub = s.to_string();
        } else if line.starts_with('-') && line.ends_with(')') && !line.contains(' ') {
            opt = line.trim_end_matches(')').to_string();
        } else if let Some(rest) = line
            .split("compgen -W \"")
            .nth(1)
            .filter(|_| !opt.is_empty())
        {
            let values = rest.split('"').next().unwrap();
            if values.starts_with('$') || sub.contains("help") {
                continue;
            }
            for v in values.split_whitespace() {
                // The space form, as habit and completion both type it.
                let o = run(&[&sub, &opt, v, "--help"]);
                assert!(o.status.success(), "{sub} {opt} {v}: {}", stderr(&o));
                checked += 1;
            }
        } else if line.contains("compgen -f") {
            // Files are offered only where a path (or a program) is what parses, and where
            // clap's bash script has nothing better for users and groups.
            assert!(
                [
                    "--dir",
                    "--exec",
                    "-x",
                    "--owner",
                    "--state",
                    "--allow-user",
                    "--allow-group"
                ]
                .contains(&opt.as_str()),
                "{sub} {opt} completes file names"
            );
        }
    }
    assert!(checked >= 3, "found {checked} value lists");
}

#[test]
fn man_pages_name_only_pages_that_exist_and_each_lists_its_own_exit_codes() {
    let pages = ["", "recv", "send", "clean", "status"];
    let text = |p: &str| {
        let args: Vec<&str> = if p.is_empty() {
            vec!["man"]
        } else {
            vec!["man", p]
        };
        let o = shmxfer(&args);
        exits(&o, 0);
        stdout(&o)
    };
    let exists = |name: &str| {
        name == "shmxfer"
            || pages
                .iter()
                .any(|p| !p.is_empty() && name == format!("shmxfer\\-{p}"))
    };
    for p in pages {
        let t = text(p);
        // Every `\fBshmxfer…\fR(1)` reference is a page `shmxfer man` prints.
        for (i, _) in t.match_indices("\\fR(1)") {
            let start = t[..i].rfind("\\fB").unwrap() + 3;
            let name = &t[start..i];
            if name.starts_with("shmxfer") {
                assert!(
                    exists(name),
                    "page {p:?} names {name}(1), which does not exist"
                );
            }
        }
        assert!(
            !t.contains("shmxfer\\-help") && !t.contains("shmxfer\\-completions(1)"),
            "{p}"
        );
        let exit = &t[t.find("EXIT STATUS").unwrap()..t.find(".SH ENVIRONMENT").unwrap()];
        match p {
            "clean" => {
                assert!(
                    !exit.contains("owner") && !exit.contains("several files"),
                    "{exit}"
                );
                assert!(!exit.contains("130"), "{exit}");
            }
            "status" => assert!(
                !exit.contains("\\fB65\\fR") && !exit.contains("\\fB69\\fR"),
                "{exit}"
            ),
            "recv" => assert!(!exit.contains("\\fB66\\fR"), "{exit}"),
            "send" => assert!(
                !exit.contains("ipcrm") && exit.contains("sent list"),
                "{exit}"
            ),
            _ => assert!(
                exit.contains("\\fB66\\fR") && exit.contains("\\fB73\\fR"),
                "{exit}"
            ),
        }
    }
    // SYNOPSIS shows values and the files.
    let send = text("send");
    let syn = &send[send.find(".SH SYNOPSIS").unwrap()..send.find(".SH DESCRIPTION").unwrap()];
    assert!(syn.contains("\\fB\\-\\-wait\\fR \\fISECS\\fR"), "{syn}");
    assert!(syn.contains("\\fIFILE\\fR..."), "{syn}");
}
