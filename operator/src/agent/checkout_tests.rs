//! The checkout's unpacking against archives built here: a repository as GitHub serves it, and
//! hostile ones (paths out, links out, links written through, bombs, odd entry types).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use super::checkout::{
    ArchiveError, Difference, Limits, Tree, TreeEntry, blob_id_of, check_links, compare,
    lfs_pointer, lfs_pointers, remove_files, replace, restore, unpack,
};

/// One entry of a test archive: its raw name bytes (not checked: hostile names included).
struct Entry<'a> {
    name: &'a str,
    kind: tar::EntryType,
    data: &'a [u8],
    link: Option<&'a str>,
    mode: u32,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        name,
        kind: tar::EntryType::Regular,
        data,
        link: None,
        mode: 0o644,
    }
}

fn dir(name: &str) -> Entry<'_> {
    Entry {
        name,
        kind: tar::EntryType::Directory,
        data: b"",
        link: None,
        mode: 0o755,
    }
}

fn symlink<'a>(name: &'a str, to: &'a str) -> Entry<'a> {
    Entry {
        name,
        kind: tar::EntryType::Symlink,
        data: b"",
        link: Some(to),
        mode: 0o777,
    }
}

/// A gzip-compressed tar of `entries`, names written as given (GNU headers, names < 100 bytes).
fn archive(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    // GitHub's archives start with a pax global header carrying the commit id.
    let mut global = tar::Header::new_ustar();
    global.set_entry_type(tar::EntryType::XGlobalHeader);
    let comment = b"52 comment=ec26c3e57ca3a959ca5aad62de7213c562f8c821\n";
    global.set_size(comment.len() as u64);
    global.as_old_mut().name[..17].copy_from_slice(b"pax_global_header");
    global.set_cksum();
    builder.append(&global, comment.as_slice()).unwrap();
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let name = entry.name.as_bytes();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(entry.kind);
        header.set_mode(entry.mode);
        header.set_size(entry.data.len() as u64);
        if let Some(link) = entry.link {
            let link = link.as_bytes();
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        }
        header.set_cksum();
        builder.append(&header, entry.data).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

const TOP: &str = "Codertocat-Hello-World-ec26c3e/";

fn unpacked(
    entries: &[Entry<'_>],
    limits: &Limits,
) -> (
    tempfile::TempDir,
    Result<super::checkout::Unpacked, ArchiveError>,
) {
    let dir = tempfile::tempdir().unwrap();
    let bytes = archive(entries);
    let result = unpack(bytes.as_slice(), dir.path(), limits);
    (dir, result)
}

fn name(rest: &str) -> String {
    format!("{TOP}{rest}")
}

#[test]
fn a_repository_archive_is_unpacked_without_its_top_directory() {
    let (top, src, main, script, link) = (
        TOP.to_owned(),
        name("src/"),
        name("src/main.tf"),
        name("run.sh"),
        name("current"),
    );
    let (dir, result) = unpacked(
        &[
            dir(&top),
            dir(&src),
            file(&main, b"resource \"aws_s3_bucket\" \"b\" {}\n"),
            Entry {
                mode: 0o4755,
                ..file(&script, b"#!/bin/sh\n")
            },
            symlink(&link, "src/main.tf"),
        ],
        &Limits::default(),
    );
    let unpacked = result.unwrap();
    assert_eq!((unpacked.files, unpacked.links), (2, 1));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("src/main.tf")).unwrap(),
        "resource \"aws_s3_bucket\" \"b\" {}\n"
    );
    let mode = std::fs::metadata(dir.path().join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755, "executable, never setuid");
    assert_eq!(
        std::fs::read_link(dir.path().join("current")).unwrap(),
        Path::new("src/main.tf")
    );
    assert!(!dir.path().join(TOP).exists());
}

#[test]
fn paths_that_leave_the_workspace_are_refused() {
    for (entry, expected) in [
        ("/etc/passwd", "absolute path"),
        ("Codertocat-Hello-World-ec26c3e/../../outside", "climbs out"),
        ("Codertocat-Hello-World-ec26c3e/a/../../../x", "climbs out"),
    ] {
        let (dir, result) = unpacked(&[file(entry, b"x")], &Limits::default());
        let error = result.unwrap_err().to_string();
        assert!(error.contains(expected), "{entry}: {error}");
        assert!(!dir.path().parent().unwrap().join("outside").exists());
    }
}

#[test]
fn links_that_point_outside_are_refused() {
    for target in ["/etc/passwd", "../../../etc", "a/../../.."] {
        let link = name("evil");
        let (_dir, result) = unpacked(&[symlink(&link, target)], &Limits::default());
        assert!(
            matches!(result, Err(ArchiveError::LinkEscapes { .. })),
            "{target}: {result:?}"
        );
    }
    // Each link harmless on its own text, together they climb out: `sub/up` is the root, and
    // `y` is `sub/up/..`, the root's parent.
    let (up, y) = (name("sub/up"), name("y"));
    let (_dir, result) = unpacked(
        &[symlink(&up, ".."), symlink(&y, "sub/up/..")],
        &Limits::default(),
    );
    assert!(
        matches!(result, Err(ArchiveError::LinkEscapes { ref entry, .. }) if entry.ends_with("/y")),
        "{result:?}"
    );
    // The same through a part that does not exist while unpacking (it may in the scan pod).
    let (up, x) = (name("sub/up"), name("x"));
    let (_dir, result) = unpacked(
        &[
            symlink(&up, ".."),
            symlink(&x, "sub/up/../../etc/gatehouse/kics/kics.config"),
        ],
        &Limits::default(),
    );
    assert!(
        matches!(result, Err(ArchiveError::LinkEscapes { ref entry, .. }) if entry.ends_with("/x")),
        "{result:?}"
    );
    // Links that stay inside, through other links, are fine.
    let (docs, readme, via) = (name("docs/README.md"), name("README.md"), name("via"));
    let (_dir, result) = unpacked(
        &[
            file(&readme, b"hello"),
            symlink(&docs, "../README.md"),
            symlink(&via, "docs/README.md"),
        ],
        &Limits::default(),
    );
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn nothing_is_written_through_a_link() {
    let (link, through) = (name("d"), name("d/file"));
    let (dir, result) = unpacked(
        &[symlink(&link, "."), file(&through, b"x")],
        &Limits::default(),
    );
    assert!(
        matches!(result, Err(ArchiveError::ThroughLink(_))),
        "{result:?}"
    );
    assert!(!dir.path().join("file").exists());
    // A file entry where a link already is: the link is not followed.
    let (link, same) = (name("f"), name("f"));
    let (_dir, result) = unpacked(
        &[symlink(&link, "elsewhere"), file(&same, b"x")],
        &Limits::default(),
    );
    assert!(
        matches!(result, Err(ArchiveError::Duplicate(_))),
        "{result:?}"
    );
}

#[test]
fn entries_git_never_makes_are_refused() {
    for (kind, what) in [
        (tar::EntryType::Link, "hard link"),
        (tar::EntryType::Fifo, "FIFO"),
        (tar::EntryType::Char, "character device"),
        (tar::EntryType::Block, "block device"),
    ] {
        let entry = name("odd");
        let (_dir, result) = unpacked(
            &[Entry {
                kind,
                link: Some("src/main.tf"),
                ..file(&entry, b"")
            }],
            &Limits::default(),
        );
        let error = result.unwrap_err().to_string();
        assert!(error.contains(what), "{error}");
    }
}

#[test]
fn bombs_and_floods_stop_at_their_caps() {
    let zeros = vec![0_u8; 4 << 20];
    let (big, other) = (name("zeros"), name("more-zeros"));
    let compressed = archive(&[file(&big, &zeros), file(&other, &zeros)]).len();
    assert!(compressed < 64 << 10, "a real bomb: {compressed} bytes in");
    let limits = Limits {
        max_total_bytes: 6 << 20,
        ..Limits::default()
    };
    let (_dir, result) = unpacked(&[file(&big, &zeros), file(&other, &zeros)], &limits);
    assert!(
        matches!(result, Err(ArchiveError::TooLarge(_))),
        "{result:?}"
    );

    let limits = Limits {
        max_file_bytes: 1 << 20,
        ..Limits::default()
    };
    let (_dir, result) = unpacked(&[file(&big, &zeros)], &limits);
    assert!(
        matches!(result, Err(ArchiveError::FileTooLarge { .. })),
        "{result:?}"
    );

    let names: Vec<String> = (0..20).map(|i| name(&format!("f{i}"))).collect();
    let entries: Vec<Entry<'_>> = names.iter().map(|n| file(n, b"x")).collect();
    let limits = Limits {
        max_entries: 10,
        ..Limits::default()
    };
    let (_dir, result) = unpacked(&entries, &limits);
    assert!(
        matches!(result, Err(ArchiveError::TooManyEntries(10))),
        "{result:?}"
    );
}

#[test]
fn something_that_is_not_a_tarball_is_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let result = unpack(
        b"<html>404</html>".as_slice(),
        dir.path(),
        &Limits::default(),
    );
    assert!(
        matches!(result, Err(ArchiveError::Unreadable(_))),
        "{result:?}"
    );
    // Cut short in the middle.
    let sevens = vec![7_u8; 100_000];
    let whole = archive(&[file(&name("a"), &sevens)]);
    let result = unpack(&whole[..whole.len() / 2], dir.path(), &Limits::default());
    assert!(
        matches!(result, Err(ArchiveError::Unreadable(_))),
        "{result:?}"
    );
}

#[test]
fn the_scanners_own_configuration_is_removed_and_only_inside_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kics.config"), "{}").unwrap();
    let removed = remove_files(
        dir.path(),
        &["kics.config".to_owned(), ".bd-rapid-scan.yaml".to_owned()],
    )
    .unwrap();
    assert_eq!(removed, ["kics.config"]);
    assert!(!dir.path().join("kics.config").exists());
    // A link of that name goes (not what it points to); a directory of that name is not
    // configuration: it stays with what it holds, and only the exact path is skipped when
    // the workspace is compared with the commit.
    std::fs::write(dir.path().join("real.yaml"), "x").unwrap();
    std::os::unix::fs::symlink("real.yaml", dir.path().join(".bd-rapid-scan.yaml")).unwrap();
    std::fs::create_dir(dir.path().join("kics.config")).unwrap();
    std::fs::write(dir.path().join("kics.config/evil.tf"), "resource {}\n").unwrap();
    let removed = remove_files(
        dir.path(),
        &["kics.config".to_owned(), ".bd-rapid-scan.yaml".to_owned()],
    )
    .unwrap();
    assert_eq!(removed, [".bd-rapid-scan.yaml"]);
    assert!(dir.path().join("real.yaml").exists());
    assert!(dir.path().join("kics.config/evil.tf").exists());
    let tree = Tree {
        tree: vec![blob("kics.config/hidden.tf", "100644")],
        truncated: false,
    };
    let missing = compare(dir.path(), &tree, &["kics.config".to_owned()]).unwrap();
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0].1, Difference::Missing);
    assert!(remove_files(dir.path(), &["../x".to_owned()]).is_err());
    assert!(remove_files(dir.path(), &["/etc/passwd".to_owned()]).is_err());
}

/// Any 40-digit object id: blob ids are computed with SHA-1, as in the repositories GitHub hosts.
const SHA1_LIKE: &str = "95d09f2b10159347eece71399a7e2e907ea3df4f";

fn blob(path: &str, mode: &str) -> TreeEntry {
    TreeEntry {
        path: path.to_owned(),
        mode: mode.to_owned(),
        kind: "blob".to_owned(),
        sha: "95d09f2b10159347eece71399a7e2e907ea3df4f".to_owned(),
        size: Some(10),
    }
}

#[test]
fn files_the_archive_left_out_are_found_and_restored_under_the_same_rules() {
    let (dir, result) = unpacked(
        &[dir(&name("")), file(&name("main.tf"), b"# main\n")],
        &Limits::default(),
    );
    let mut done = result.unwrap();
    let tree = Tree {
        tree: vec![
            TreeEntry {
                sha: blob_id_of(SHA1_LIKE, b"# main\n"),
                ..blob("main.tf", "100644")
            },
            TreeEntry {
                kind: "tree".to_owned(),
                mode: "040000".to_owned(),
                ..blob("hidden", "040000")
            },
            blob("hidden/iam.tf", "100644"),
            blob("kics.config", "100644"),
            TreeEntry {
                kind: "commit".to_owned(),
                ..blob("vendor/lib", "160000")
            },
        ],
        truncated: false,
    };
    let missing = compare(dir.path(), &tree, &["kics.config".to_owned()]).unwrap();
    let paths: Vec<(&str, Difference)> =
        missing.iter().map(|(e, d)| (e.path.as_str(), *d)).collect();
    assert_eq!(
        paths,
        [("hidden/iam.tf", Difference::Missing)],
        "removed files and submodules are not missing"
    );
    restore(
        dir.path(),
        missing[0].0,
        &mut &b"resource {}\n"[..],
        &Limits::default(),
        &mut done,
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hidden/iam.tf")).unwrap(),
        "resource {}\n"
    );
    assert_eq!((done.files, done.bytes), (2, 19));

    // A tree path that climbs out, a file too large, a link out: refused like archive entries.
    for (entry, content, expected) in [
        (blob("../escape", "100644"), &b"x"[..], "climbs out"),
        (blob("/etc/passwd", "100644"), b"x", "absolute"),
        (
            blob("big.tf", "100644"),
            b"0123456789abcdef0123",
            "larger than 16",
        ),
        (
            blob("out", "120000"),
            b"../../etc/passwd",
            "outside the repository",
        ),
        (blob("main.tf", "100644"), b"again", "twice"),
    ] {
        let limits = Limits {
            max_file_bytes: 16,
            ..Limits::default()
        };
        let error = restore(dir.path(), &entry, &mut &content[..], &limits, &mut done)
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{}: {error}", entry.path);
    }
    assert!(!dir.path().join("out").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("main.tf")).unwrap(),
        "# main\n"
    );
}

#[test]
fn a_restored_link_that_an_earlier_link_climbs_through_is_caught() {
    // `x -> d/l/..` is harmless while `d/l` does not exist; once the left-out `d/l -> ..` is
    // restored, `x` leads to the workspace's parent.
    let (dir, result) = unpacked(
        &[dir(&name("")), symlink(&name("x"), "d/l/..")],
        &Limits::default(),
    );
    let mut done = result.unwrap();
    check_links(dir.path()).unwrap();
    restore(
        dir.path(),
        &blob("d/l", "120000"),
        &mut &b".."[..],
        &Limits::default(),
        &mut done,
    )
    .unwrap();
    let error = check_links(dir.path()).unwrap_err().to_string();
    assert!(error.contains("\"x\""), "{error}");
}

#[test]
fn git_lfs_pointers_are_found_and_other_small_files_are_not() {
    let pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n";
    let (dir, result) = unpacked(
        &[
            dir(&name("")),
            file(&name("infra/main.tf"), pointer),
            file(&name("README.md"), b"version https://example.com\n"),
            file(&name("assets/logo.png"), pointer),
            symlink(&name("link.tf"), "infra/main.tf"),
        ],
        &Limits::default(),
    );
    result.unwrap();
    assert_eq!(
        lfs_pointers(dir.path()).unwrap(),
        ["assets/logo.png", "infra/main.tf"]
    );
}

#[test]
fn blob_ids_are_gits_and_a_file_differing_only_by_crlf_is_the_commits() {
    // `git hash-object` of "hello\n" and of the empty file.
    assert_eq!(
        blob_id_of(SHA1_LIKE, b"hello\n"),
        "ce013625030ba8dba906f756967f9e9ca394464a"
    );
    assert_eq!(
        blob_id_of(SHA1_LIKE, b""),
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    );
    // A CRLF across the 64 KiB read boundary, a lone CR, a CR at the very end.
    let mut text = vec![b'a'; (64 << 10) - 1];
    text.extend_from_slice(b"\r\nb\rc\n\r");
    let committed: Vec<u8> = {
        let mut t = vec![b'a'; (64 << 10) - 1];
        t.extend_from_slice(b"\nb\rc\n\r");
        t
    };
    let (dir, result) = unpacked(
        &[
            dir(&name("")),
            file(&name("crlf.txt"), &text),
            file(&name("utf16.tf"), b"#\0 \0m\0\n\0"),
        ],
        &Limits::default(),
    );
    let mut done = result.unwrap();
    let tree = Tree {
        tree: vec![
            TreeEntry {
                sha: blob_id_of(SHA1_LIKE, &committed),
                ..blob("crlf.txt", "100644")
            },
            TreeEntry {
                sha: blob_id_of(SHA1_LIKE, b"# m\n"),
                ..blob("utf16.tf", "100644")
            },
        ],
        truncated: false,
    };
    let differences = compare(dir.path(), &tree, &[]).unwrap();
    assert_eq!(differences.len(), 1, "{differences:?}");
    assert_eq!(differences[0].0.path, "utf16.tf");
    assert_eq!(differences[0].1, Difference::Differs);
    replace(
        dir.path(),
        differences[0].0,
        &mut &b"# m\n"[..],
        &Limits::default(),
        &mut done,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("utf16.tf")).unwrap(),
        b"# m\n"
    );
    assert_eq!(done.files, 2);
    assert!(compare(dir.path(), &tree, &[]).unwrap().is_empty());
}

#[test]
fn git_lfs_pointers_name_their_object() {
    let pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:4D7A214614AB2935C943F9E0FF69D22EADBB8F32B1258DAAA5E2CA24D17E2393\nsize 12345\n";
    assert_eq!(
        lfs_pointer(pointer),
        Some((
            "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393".to_owned(),
            12345
        ))
    );
    assert_eq!(
        lfs_pointer(b"version https://git-lfs.github.com/spec/v1\nsize 1\n"),
        None
    );
    assert_eq!(lfs_pointer(b"# not a pointer\n"), None);
}

#[test]
fn a_tree_the_workspace_cannot_hold_is_refused_not_a_write_failure() {
    let (dir, result) = unpacked(
        &[dir(&name("")), file(&name("a"), b"x"), dir(&name("d/"))],
        &Limits::default(),
    );
    let mut done = result.unwrap();
    for (tree, expected) in [
        (vec![blob("a/b.tf", "100644")], "under a file"),
        (vec![blob("d", "100644")], "is a directory in the workspace"),
    ] {
        let error = compare(
            dir.path(),
            &Tree {
                tree,
                truncated: false,
            },
            &[],
        )
        .unwrap_err();
        assert!(!matches!(error, ArchiveError::Write { .. }), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
    let link = blob("l", "120000");
    restore(
        dir.path(),
        &link,
        &mut &b"a"[..],
        &Limits::default(),
        &mut done,
    )
    .unwrap();
    for (content, expected) in [(&b"a"[..], "appears twice"), (b"a\0b", "NUL byte")] {
        let error = restore(
            dir.path(),
            &TreeEntry {
                path: if expected == "NUL byte" {
                    "m".to_owned()
                } else {
                    "l".to_owned()
                },
                ..link.clone()
            },
            &mut &content[..],
            &Limits::default(),
            &mut done,
        )
        .unwrap_err();
        assert!(!matches!(error, ArchiveError::Write { .. }), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}
