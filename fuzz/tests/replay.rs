//! Every committed fuzz input, and the test corpus the fuzzers start from, through the
//! targets' own functions: a fixed crash stays fixed, and a change to the core that breaks
//! a target's build or property fails here, in the normal test run.

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn replay(target: &str, f: fn(&[u8]), seeds: &[&str]) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("regressions").join(target)];
    dirs.extend(seeds.iter().map(|s| root.join(s)));
    let mut n = 0;
    for dir in dirs {
        for file in files(&dir) {
            let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            f(&bytes);
            n += 1;
        }
    }
    n
}

#[test]
fn parse_options_replays() {
    assert!(replay("parse_options", imgedge_fuzz::parse_options, &[]) < usize::MAX);
    // every URL case of the parser's data-driven tests, as the fuzzer's seeds
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/urls");
    let mut lines = 0;
    for file in files(&root) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        // `[tag] PATH => EXPECTED`: the path is the input
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let case = line.split(" => ").next().unwrap_or(line);
            let path = case.rsplit("] ").next().unwrap_or(case).trim();
            imgedge_fuzz::parse_options(path.as_bytes());
            lines += 1;
        }
    }
    assert!(lines > 50, "the URL cases were found ({lines} lines)");
}

#[test]
fn verify_signature_replays() {
    replay("verify_signature", imgedge_fuzz::verify_signature, &[]);
    imgedge_fuzz::verify_signature(b"/sig/rs:fill:300:200/plain/a.jpg");
}

#[test]
fn transform_run_replays() {
    replay("transform_run", imgedge_fuzz::transform_run, &[]);
    // the seeds, each behind a first byte that picks an output format and 64 px
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let mut n = 0;
    for file in files(&root.join("images")).into_iter().chain(files(&root.join("hostile"))) {
        let mut input = vec![0x40 | (n as u8 & 3)];
        input.extend(std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
        imgedge_fuzz::transform_run(&input);
        n += 1;
    }
    assert!(n >= 20, "the image corpus was found ({n} files)");
}
