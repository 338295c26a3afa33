//! `cargo xtask proto [--check]`: regenerate `buildkit-proto/src/generated` from the
//! `.proto` files with protox (no protoc) and tonic-prost-build.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use prost::Message;

/// The file (inside the generated directory) that holds the encoded descriptor set.
const DESCRIPTOR_FILE: &str = "descriptor.bin";

/// Regenerates the committed code, or with `check` only compares and fails on any
/// difference.
pub fn run(root: &Path, check: bool) -> Result<()> {
    let crate_dir = root.join("buildkit-proto");
    let proto_dir = crate_dir.join("proto");
    let generated_dir = crate_dir.join("src/generated");

    let fresh = generate(&proto_dir)?;
    let committed = read_dir_files(&generated_dir)?;

    if check {
        let problems = differences(&fresh, &committed);
        if !problems.is_empty() {
            bail!(
                "buildkit-proto/src/generated is out of date with buildkit-proto/proto:\n  {}\nrun `cargo xtask proto` and commit the result",
                problems.join("\n  ")
            );
        }
        println!(
            "proto: generated code is up to date ({} files)",
            fresh.len()
        );
        return Ok(());
    }

    fs::create_dir_all(&generated_dir)?;
    for name in committed.keys() {
        if !fresh.contains_key(name) {
            fs::remove_file(generated_dir.join(name))?;
        }
    }
    for (name, content) in &fresh {
        fs::write(generated_dir.join(name), content).with_context(|| format!("writing {name}"))?;
    }
    println!(
        "proto: wrote {} files to buildkit-proto/src/generated",
        fresh.len()
    );
    Ok(())
}

/// What differs between freshly generated files and the committed ones.
fn differences(
    fresh: &BTreeMap<String, Vec<u8>>,
    committed: &BTreeMap<String, Vec<u8>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, content) in fresh {
        match committed.get(name) {
            None => problems.push(format!("missing: {name}")),
            Some(old) if old != content => problems.push(format!("differs: {name}")),
            Some(_) => {}
        }
    }
    for name in committed.keys() {
        if !fresh.contains_key(name) {
            problems.push(format!("not generated (stale): {name}"));
        }
    }
    problems
}

/// Every `.proto` file under `dir`, as paths relative to it, sorted.
fn proto_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "proto") {
                out.push(path.strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Generates into a temporary directory and returns file name -> content.
fn generate(proto_dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let files = proto_files(proto_dir)?;
    let mut compiler = protox::Compiler::new([proto_dir])?;
    compiler.include_imports(true).include_source_info(true);
    for f in &files {
        compiler
            .open_file(f)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("parsing {}", f.display()))?;
    }
    let fds = compiler.file_descriptor_set();

    let out = tempfile::tempdir()?;
    tonic_prost_build::configure()
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .bytes(".")
        .btree_map(".")
        .include_file("mod.rs")
        .out_dir(out.path())
        .compile_fds(fds.clone())
        .context("generating Rust code")?;

    // The descriptor set without source info: what reflection and tests need, and
    // stable across edits to comments.
    let mut bare = fds;
    for file in &mut bare.file {
        file.source_code_info = None;
    }

    let mut result = read_dir_files(out.path())?;
    result.insert(DESCRIPTOR_FILE.to_string(), bare.encode_to_vec());
    Ok(result)
}

fn read_dir_files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut map = BTreeMap::new();
    if !dir.exists() {
        return Ok(map);
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            map.insert(name, fs::read(entry.path())?);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> (PathBuf, PathBuf) {
        let root = crate::workspace_root().join("buildkit-proto");
        (root.join("proto"), root.join("src/generated"))
    }

    #[test]
    fn committed_code_is_what_the_protos_generate() {
        let (protos, generated) = dirs();
        let fresh = generate(&protos).unwrap();
        let committed = read_dir_files(&generated).unwrap();
        assert_eq!(differences(&fresh, &committed), Vec::<String>::new());
    }

    #[test]
    fn an_edited_or_stale_generated_file_is_reported() {
        let (protos, generated) = dirs();
        let fresh = generate(&protos).unwrap();
        let mut committed = read_dir_files(&generated).unwrap();
        committed
            .get_mut("pb.rs")
            .unwrap()
            .extend_from_slice(b"// hand edit\n");
        committed.insert("old.rs".into(), Vec::new());
        committed.remove("fsutil.types.rs");
        let problems = differences(&fresh, &committed);
        assert_eq!(
            problems,
            vec![
                "missing: fsutil.types.rs".to_string(),
                "differs: pb.rs".to_string(),
                "not generated (stale): old.rs".to_string(),
            ]
        );
    }
}
