//! The plain printer on a real build: every line is checked.

use buildkit_driver::progress::Plain;
use buildkit_driver::{Build, Driver, Remote};
use regex::Regex;
use tests::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn plain_output_of_a_small_build_line_by_line() {
    let env = TestEnv::get();
    let driver = Remote::new(&env.buildkit_host).unwrap();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM {}/busybox:local\nRUN echo hello-plain && echo second-line\nRUN exit 0\n",
            env.registry
        ),
    )
    .unwrap();
    let mut handle = driver
        .solve(Build::dockerfile(ctx.path()).no_cache())
        .await
        .unwrap();
    let printer = tokio::spawn(Plain::new(Vec::new()).print(handle.progress()));
    handle.await.unwrap();
    let out = String::from_utf8(printer.await.unwrap().unwrap()).unwrap();

    let header = Regex::new(r"^#(\d+) (\[.+\] .+|.+)$").unwrap();
    let done = Regex::new(r"^#(\d+) (DONE \d+\.\ds|CACHED)$").unwrap();
    let log = Regex::new(r"^#(\d+) \d+\.\d{1,3} .*$").unwrap();
    let status = Regex::new(
        r"^#(\d+) .+( \d+(\.\d+)?[kMG]?B( / \d+(\.\d+)?[kMG]?B)?)?( \d+\.\ds)?( done)?$",
    )
    .unwrap();

    // Blocks are separated by one blank line; each starts with `#N name` and a finished
    // step ends with DONE or CACHED.
    let blocks: Vec<&str> = out.trim_end().split("\n\n").collect();
    assert!(blocks.len() >= 4, "{out}");
    let mut seen_numbers = Vec::new();
    for block in &blocks {
        let lines: Vec<&str> = block.lines().collect();
        let n = header
            .captures(lines[0])
            .unwrap_or_else(|| panic!("bad header {:?} in\n{out}", lines[0]))[1]
            .to_string();
        for l in &lines[1..] {
            assert!(
                l.starts_with(&format!("#{n} ")),
                "line {l:?} does not belong to #{n}\n{out}"
            );
            assert!(
                done.is_match(l)
                    || log.is_match(l)
                    || status.is_match(l)
                    || *l == format!("#{n} ..."),
                "unexpected line {l:?}\n{out}"
            );
        }
        let last = lines.last().unwrap();
        assert!(
            done.is_match(last) || last.ends_with(" ..."),
            "block of #{n} ends with {last:?}\n{out}"
        );
        seen_numbers.push(n.parse::<usize>().unwrap());
    }
    // Steps are numbered in order of first appearance.
    let mut firsts = seen_numbers.clone();
    firsts.dedup();
    let mut expected: Vec<usize> = Vec::new();
    for n in &firsts {
        if !expected.contains(n) {
            expected.push(*n);
        }
    }
    assert!(
        expected.windows(2).all(|w| w[0] < w[1]),
        "numbering {expected:?}\n{out}"
    );

    // The RUN step, exactly (timings normalized).
    let run = blocks
        .iter()
        .find(|b| b.contains("RUN echo hello-plain"))
        .unwrap_or_else(|| panic!("no RUN block\n{out}"));
    let normalized = Regex::new(r"\d+\.\d+").unwrap().replace_all(run, "T");
    let n = header.captures(run.lines().next().unwrap()).unwrap()[1].to_string();
    assert_eq!(
        normalized,
        format!(
            "#{n} [2/3] RUN echo hello-plain && echo second-line\n#{n} T hello-plain\n#{n} T second-line\n#{n} DONE Ts"
        ),
        "\n{out}"
    );
    assert!(
        out.contains("[internal] load build definition from Dockerfile"),
        "{out}"
    );
    assert!(out.lines().any(|l| l.ends_with("] RUN exit 0")), "{out}");
}
