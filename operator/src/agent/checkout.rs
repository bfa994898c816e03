//! `gatehouse-agent checkout`: the pull request's commit, downloaded as GitHub's tarball with the
//! per-scan token and unpacked into the scan pod's workspace. The archive is hostile input (its
//! contents come from whoever opened the pull request): nothing is written outside the
//! workspace, nothing is written through a link, no link points outside it, and the download,
//! the file count, each file and the whole are capped. Every refusal names the entry.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Caps on what one checkout may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest compressed download.
    pub max_download_bytes: u64,
    /// Most entries (files, directories and links).
    pub max_entries: u64,
    /// Largest single file, unpacked.
    pub max_file_bytes: u64,
    /// Largest total, unpacked (what the workspace volume holds, less a margin).
    pub max_total_bytes: u64,
    /// Longest path of an entry, in bytes.
    pub max_path_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_download_bytes: 1 << 30,
            max_entries: 200_000,
            max_file_bytes: 512 << 20,
            max_total_bytes: 3 << 30,
            max_path_bytes: 4096,
        }
    }
}

/// The archive could not be unpacked safely; nothing of it is trusted.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not a gzip-compressed tar archive, or cut short.
    #[error("the archive is unreadable: {0}")]
    Unreadable(String),
    /// An entry names an absolute path.
    #[error("archive entry {0:?} has an absolute path")]
    AbsolutePath(String),
    /// An entry climbs out with `..`.
    #[error("archive entry {0:?} climbs out of the repository with ..")]
    ParentDirectory(String),
    /// A symbolic link points outside the workspace.
    #[error("archive entry {entry:?} is a link to {target:?}, outside the repository")]
    LinkEscapes {
        /// The link.
        entry: String,
        /// Where it points.
        target: String,
    },
    /// An entry would be written through a link.
    #[error("archive entry {0:?} would be written through a link")]
    ThroughLink(String),
    /// A hard link, device, FIFO or other entry git cannot produce.
    #[error("archive entry {entry:?} is a {kind}, which a repository archive never holds")]
    Unsupported {
        /// The entry.
        entry: String,
        /// What it is.
        kind: String,
    },
    /// The same path twice.
    #[error("archive entry {0:?} appears twice")]
    Duplicate(String),
    /// Too many entries.
    #[error("the archive has more than {0} entries")]
    TooManyEntries(u64),
    /// One file too large.
    #[error("archive entry {entry:?} is larger than {limit} bytes")]
    FileTooLarge {
        /// The entry.
        entry: String,
        /// The cap.
        limit: u64,
    },
    /// Everything together too large (a decompression bomb, or a huge repository).
    #[error("the archive unpacks to more than {0} bytes")]
    TooLarge(u64),
    /// A path longer than the cap.
    #[error("archive entry {0:?}… has a path longer than {1} bytes")]
    PathTooLong(String, usize),
    /// The commit's tree and the workspace disagree on what a path is (a file where a directory
    /// must be, a directory where the tree has a file).
    #[error("{entry:?} is {found} in the workspace, but the commit's tree needs {needed} there")]
    Conflict {
        /// The path.
        entry: String,
        /// What the workspace has there.
        found: &'static str,
        /// What the tree needs there.
        needed: &'static str,
    },
    /// A symbolic link whose target git could not have stored (a NUL byte in it).
    #[error("{0:?} is a link whose target holds a NUL byte")]
    BadLinkTarget(String),
    /// Writing into the workspace failed.
    #[error("failed to write {path}: {source}")]
    Write {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// What was unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files written.
    pub files: u64,
    /// Directories made.
    pub directories: u64,
    /// Symbolic links made.
    pub links: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Unpacks a gzip-compressed tar archive as GitHub serves a repository (one top directory,
/// `<owner>-<repo>-<sha>/`, which is dropped) into `into`, an empty directory.
pub fn unpack(archive: impl Read, into: &Path, limits: &Limits) -> Result<Unpacked, ArchiveError> {
    let root = into.canonicalize().map_err(|source| ArchiveError::Write {
        path: into.display().to_string(),
        source,
    })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut unpacked = Unpacked::default();
    let mut entries_seen = 0_u64;
    let mut links = Vec::new();
    let entries = tar
        .entries()
        .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            // GitHub's pax header with the commit id; the tar crate applies per-entry ones.
            continue;
        }
        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(ArchiveError::TooManyEntries(limits.max_entries));
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if raw.len() > limits.max_path_bytes {
            return Err(ArchiveError::PathTooLong(
                raw.chars().take(80).collect(),
                limits.max_path_bytes,
            ));
        }
        let Some(relative) = relative_path(&raw)? else {
            // The top directory itself.
            continue;
        };
        let target = root.join(&relative);
        if let Some(link) = unpack_entry(
            &mut entry,
            &root,
            &relative,
            &target,
            &raw,
            limits,
            &mut unpacked,
        )? {
            links.push(link);
        }
    }
    // Each link checked once more where it really leads, following the links it goes through
    // (a chain of links that each look harmless on their own can still climb out, even through
    // a part that does not exist yet).
    for (entry, path, target) in links {
        let relative = path.strip_prefix(&root).unwrap_or(&path).to_path_buf();
        if escapes(&root, &relative) {
            return Err(ArchiveError::LinkEscapes { entry, target });
        }
    }
    Ok(unpacked)
}

/// Whether `relative` (inside `root`) leads outside `root` when resolved as the kernel would:
/// each link on the way replaced by its target, `..` taken from where that leaves; a part that
/// does not exist is taken as it is written. More than 40 links is a loop: taken as escaping.
fn escapes(root: &Path, relative: &Path) -> bool {
    use std::collections::VecDeque;
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: VecDeque<std::ffi::OsString> = relative
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if resolved.pop().is_none() {
                return true;
            }
            continue;
        }
        if part == "." || part.is_empty() {
            continue;
        }
        let mut at = root.to_path_buf();
        at.extend(&resolved);
        at.push(&part);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                let Ok(target) = std::fs::read_link(&at) else {
                    return true;
                };
                if hops > 40 || target.has_root() {
                    return true;
                }
                for component in target.components().rev() {
                    pending.push_front(component.as_os_str().to_owned());
                }
            }
            _ => resolved.push(part),
        }
    }
    false
}

/// Writes one entry; a symbolic link is returned (entry, path, target) for the final check.
fn unpack_entry(
    entry: &mut tar::Entry<'_, impl Read>,
    root: &Path,
    relative: &Path,
    target: &Path,
    raw: &str,
    limits: &Limits,
    unpacked: &mut Unpacked,
) -> Result<Option<(String, PathBuf, String)>, ArchiveError> {
    let raw = raw.to_owned();
    let kind = entry.header().entry_type();
    match kind {
        tar::EntryType::Directory => {
            make_parents(root, target, &raw)?;
            match std::fs::symlink_metadata(target) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => return Err(ArchiveError::Duplicate(raw)),
                Err(_) => {
                    std::fs::create_dir(target).map_err(write_error(target))?;
                    unpacked.directories += 1;
                }
            }
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let size = entry.header().size().unwrap_or(u64::MAX);
            if size > limits.max_file_bytes {
                return Err(ArchiveError::FileTooLarge {
                    entry: raw,
                    limit: limits.max_file_bytes,
                });
            }
            if unpacked.bytes.saturating_add(size) > limits.max_total_bytes {
                return Err(ArchiveError::TooLarge(limits.max_total_bytes));
            }
            make_parents(root, target, &raw)?;
            let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
            let written =
                write_file(entry, target, executable, limits.max_file_bytes).map_err(|error| {
                    match error.kind() {
                        std::io::ErrorKind::AlreadyExists => ArchiveError::Duplicate(raw.clone()),
                        std::io::ErrorKind::FileTooLarge => ArchiveError::FileTooLarge {
                            entry: raw.clone(),
                            limit: limits.max_file_bytes,
                        },
                        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                            ArchiveError::Unreadable(error.to_string())
                        }
                        _ => ArchiveError::Write {
                            path: target.display().to_string(),
                            source: error,
                        },
                    }
                })?;
            unpacked.files += 1;
            unpacked.bytes += written;
            if unpacked.bytes > limits.max_total_bytes {
                return Err(ArchiveError::TooLarge(limits.max_total_bytes));
            }
        }
        tar::EntryType::Symlink => {
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            if !link_stays_inside(relative, &link) {
                return Err(ArchiveError::LinkEscapes {
                    entry: raw,
                    target: link,
                });
            }
            make_parents(root, target, &raw)?;
            std::os::unix::fs::symlink(&link, target).map_err(|error| {
                if error.kind() == std::io::ErrorKind::AlreadyExists {
                    ArchiveError::Duplicate(raw.clone())
                } else {
                    write_error(target)(error)
                }
            })?;
            unpacked.links += 1;
            return Ok(Some((raw, target.to_path_buf(), link)));
        }
        other => {
            return Err(ArchiveError::Unsupported {
                entry: raw,
                kind: kind_name(other),
            });
        }
    }
    Ok(None)
}

/// The entry's path inside the repository (the archive's top directory dropped), or `None` for
/// the top directory itself.
fn relative_path(raw: &str) -> Result<Option<PathBuf>, ArchiveError> {
    let path = Path::new(raw);
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(ArchiveError::ParentDirectory(raw.to_owned())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(ArchiveError::AbsolutePath(raw.to_owned()));
            }
        }
    }
    if parts.len() < 2 {
        return Ok(None);
    }
    Ok(Some(parts[1..].iter().collect()))
}

/// Whether a link at `link_path` (relative to the repository root) pointing at `target` stays
/// inside the repository, judged on the text alone.
fn link_stays_inside(link_path: &Path, target: &str) -> bool {
    let target = Path::new(target);
    if target.as_os_str().is_empty() || target.has_root() {
        return false;
    }
    let mut depth: Vec<&std::ffi::OsStr> = link_path
        .parent()
        .map(|p| {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    for component in target.components() {
        match component {
            Component::Normal(part) => depth.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// Makes the directories above `target` inside `root`, refusing to go through anything that is
/// not a plain directory (a link the archive made earlier).
fn make_parents(root: &Path, target: &Path, raw: &str) -> Result<(), ArchiveError> {
    let Some(parent) = target.parent() else {
        return Ok(());
    };
    let Ok(inside) = parent.strip_prefix(root) else {
        return Err(ArchiveError::ParentDirectory(raw.to_owned()));
    };
    let mut at = root.to_path_buf();
    for component in inside.components() {
        at.push(component);
        match std::fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(ArchiveError::ThroughLink(raw.to_owned()));
            }
            Ok(_) => {
                return Err(ArchiveError::Conflict {
                    entry: raw.to_owned(),
                    found: "under a file",
                    needed: "a directory above it",
                });
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&at).map_err(write_error(&at))?;
            }
            Err(error) => return Err(write_error(&at)(error)),
        }
    }
    Ok(())
}

/// Writes one file: created new (`O_CREAT | O_EXCL`: an existing path, a link included, is
/// never opened or followed), read/write for its owner and readable by others (and executable
/// when the archive says so), never setuid.
fn write_file(
    content: &mut impl Read,
    target: &Path,
    executable: bool,
    max_bytes: u64,
) -> std::io::Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if executable { 0o755 } else { 0o644 })
        .open(target)?;
    let written = std::io::copy(&mut content.take(max_bytes.saturating_add(1)), &mut file)?;
    if written > max_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            "file larger than its cap",
        ));
    }
    Ok(written)
}

fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Write {
        path: path.display().to_string(),
        source,
    }
}

fn kind_name(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Link => "hard link".to_owned(),
        tar::EntryType::Char => "character device".to_owned(),
        tar::EntryType::Block => "block device".to_owned(),
        tar::EntryType::Fifo => "FIFO".to_owned(),
        tar::EntryType::GNUSparse => "sparse file".to_owned(),
        other => format!("{other:?} entry"),
    }
}

/// The commit's tree as GitHub's trees API lists it (`GET /repos/{o}/{r}/git/trees/{sha}?recursive=1`).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct Tree {
    /// Every file, directory, link and submodule of the commit.
    pub tree: Vec<TreeEntry>,
    /// Whether GitHub listed only part of it (more than 100,000 entries or 7 MB).
    #[serde(default)]
    pub truncated: bool,
}

/// One entry of a [`Tree`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct TreeEntry {
    /// Path from the repository root.
    pub path: String,
    /// Git's mode: `100644` file, `100755` executable, `120000` link, `040000` directory,
    /// `160000` submodule.
    pub mode: String,
    /// `blob`, `tree` or `commit` (a submodule).
    #[serde(rename = "type")]
    pub kind: String,
    /// The object's SHA.
    pub sha: String,
    /// Size of a blob, in bytes.
    #[serde(default)]
    pub size: Option<u64>,
}

/// How a file (or link) of the commit's tree stands in the workspace, when not as in the commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Difference {
    /// Not there: left out of GitHub's archive (`export-ignore` in the commit's
    /// `.gitattributes`, which the pull request controls).
    Missing,
    /// There, with other content than the commit's blob: `git archive` applied the commit's own
    /// `.gitattributes` (`working-tree-encoding`, `export-subst`, `ident`, a filter), or the
    /// archive holds a Git LFS object where the commit has its pointer.
    Differs,
}

/// What the workspace holds at a path.
enum Found {
    Nothing,
    File,
    Link(std::ffi::OsString),
}

/// The commit's files (and links) that the workspace lacks or holds with other content than
/// the commit: each regular file's git blob id (SHA-1 of `blob <length>\0<content>`) is compared
/// with the tree's, each link's target likewise. A file that differs only by line endings
/// (`eol=crlf`: LF made CRLF) is the commit's text and is kept. Files removed on purpose
/// (`removed`, as given to [`remove_files`]) are skipped, at exactly those paths (what a
/// directory of that name holds is compared like the rest); a path the workspace has as something
/// the tree cannot have there (a directory where the tree has a file, a file or link where it
/// has a directory) is refused.
pub fn compare<'t>(
    root: &Path,
    tree: &'t Tree,
    removed: &[String],
) -> Result<Vec<(&'t TreeEntry, Difference)>, ArchiveError> {
    let mut differences = Vec::new();
    for entry in tree.tree.iter().filter(|e| e.kind == "blob") {
        let relative = tree_path(&entry.path)?;
        if removed.contains(&entry.path) {
            continue;
        }
        let path = root.join(&relative);
        let same = match inspect(root, &relative, &entry.path)? {
            Found::Nothing => {
                differences.push((entry, Difference::Missing));
                continue;
            }
            Found::Link(target) if entry.mode == "120000" => {
                blob_id_of(&entry.sha, target.as_encoded_bytes()).eq_ignore_ascii_case(&entry.sha)
            }
            Found::File if entry.mode != "120000" => {
                file_blob_id(&entry.sha, &path, false)
                    .map_err(write_error(&path))?
                    .is_some_and(|id| id.eq_ignore_ascii_case(&entry.sha))
                    || file_blob_id(&entry.sha, &path, true)
                        .map_err(write_error(&path))?
                        .is_some_and(|id| id.eq_ignore_ascii_case(&entry.sha))
            }
            Found::Link(_) | Found::File => false,
        };
        if !same {
            differences.push((entry, Difference::Differs));
        }
    }
    Ok(differences)
}

/// What the workspace holds at `relative`, every directory above it checked to be one.
fn inspect(root: &Path, relative: &Path, raw: &str) -> Result<Found, ArchiveError> {
    let mut at = root.to_path_buf();
    let parts: Vec<Component<'_>> = relative.components().collect();
    for (index, part) in parts.iter().enumerate() {
        at.push(part);
        let last = index + 1 == parts.len();
        let meta = match std::fs::symlink_metadata(&at) {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Found::Nothing);
            }
            Err(error) => return Err(write_error(&at)(error)),
        };
        let kind = meta.file_type();
        let conflict = |found, needed| ArchiveError::Conflict {
            entry: raw.to_owned(),
            found,
            needed,
        };
        match (last, kind.is_dir(), kind.is_symlink()) {
            (false, true, _) => {}
            (false, false, true) => return Err(conflict("under a link", "a directory above it")),
            (false, false, false) => return Err(conflict("under a file", "a directory above it")),
            (true, true, _) => return Err(conflict("a directory", "a file")),
            (true, false, true) => {
                return Ok(Found::Link(
                    std::fs::read_link(&at)
                        .map_err(write_error(&at))?
                        .into_os_string(),
                ));
            }
            (true, false, false) if kind.is_file() => return Ok(Found::File),
            (true, false, false) => {
                return Err(conflict("neither a file nor a link", "a file"));
            }
        }
    }
    Ok(Found::Nothing)
}

/// A digest context for a git object id like `like` (40 hex digits SHA-1, 64 SHA-256), fed the
/// blob header of `length` bytes.
fn blob_hasher(like: &str, length: u64) -> ring::digest::Context {
    let algorithm = if like.len() == 64 {
        &ring::digest::SHA256
    } else {
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY
    };
    let mut context = ring::digest::Context::new(algorithm);
    context.update(format!("blob {length}\0").as_bytes());
    context
}

/// The git blob id of `content`, of the kind of `like`.
pub fn blob_id_of(like: &str, data: &[u8]) -> String {
    let mut context = blob_hasher(like, data.len() as u64);
    context.update(data);
    hex::encode(context.finish())
}

/// The git blob id of the file at `path`, or with `crlf_to_lf` of its content with every CRLF
/// made LF (`None` then when it has no CRLF).
fn file_blob_id(like: &str, path: &Path, crlf_to_lf: bool) -> std::io::Result<Option<String>> {
    let (length, crlf) = if crlf_to_lf {
        let mut length = 0_u64;
        let crlf = each_chunk(path, true, |chunk| length += chunk.len() as u64)?;
        (length, crlf)
    } else {
        (std::fs::symlink_metadata(path)?.len(), false)
    };
    if crlf_to_lf && !crlf {
        return Ok(None);
    }
    let mut context = blob_hasher(like, length);
    each_chunk(path, crlf_to_lf, |chunk| context.update(chunk))?;
    Ok(Some(hex::encode(context.finish())))
}

/// Feeds the file's content to `sink` in chunks, with `crlf_to_lf` every CRLF made LF; returns
/// whether there was a CRLF.
fn each_chunk(path: &Path, crlf_to_lf: bool, mut sink: impl FnMut(&[u8])) -> std::io::Result<bool> {
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0_u8; 64 << 10];
    let (mut held_cr, mut crlf) = (false, false);
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        let chunk = &buffer[..read];
        if !crlf_to_lf {
            sink(chunk);
            continue;
        }
        if held_cr {
            held_cr = false;
            if chunk[0] == b'\n' {
                crlf = true;
            } else {
                sink(b"\r");
            }
        }
        let mut start = 0;
        for (i, byte) in chunk.iter().enumerate() {
            if *byte != b'\r' {
                continue;
            }
            match chunk.get(i + 1) {
                Some(b'\n') => {
                    sink(&chunk[start..i]);
                    start = i + 1;
                    crlf = true;
                }
                Some(_) => {}
                None => {
                    sink(&chunk[start..i]);
                    start = chunk.len();
                    held_cr = true;
                }
            }
        }
        sink(&chunk[start..]);
    }
    if held_cr {
        sink(b"\r");
    }
    Ok(crlf)
}

/// The Git LFS object a pointer names (SHA-256 in hex, size), or `None` when `content` is not a
/// pointer.
pub fn lfs_pointer(content: &[u8]) -> Option<(String, u64)> {
    if content.len() > 1024 || !LFS_POINTER_STARTS.iter().any(|p| content.starts_with(p)) {
        return None;
    }
    let text = std::str::from_utf8(content).ok()?;
    let (mut oid, mut size) = (None, None);
    for line in text.lines() {
        if let Some(hex) = line.strip_prefix("oid sha256:") {
            oid = Some(hex.to_ascii_lowercase())
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        } else if let Some(number) = line.strip_prefix("size ") {
            size = number.parse().ok();
        }
    }
    Some((oid?, size?))
}

/// Whether the workspace's file of `entry` is the Git LFS object of SHA-256 `oid` and `size`
/// bytes (GitHub's "Include Git LFS objects in archives" put it there instead of its pointer).
pub fn is_lfs_object(
    root: &Path,
    entry: &TreeEntry,
    oid: &str,
    size: u64,
) -> Result<bool, ArchiveError> {
    let relative = tree_path(&entry.path)?;
    if !matches!(inspect(root, &relative, &entry.path)?, Found::File) {
        return Ok(false);
    }
    let path = root.join(relative);
    if std::fs::symlink_metadata(&path)
        .map_err(write_error(&path))?
        .len()
        != size
    {
        return Ok(false);
    }
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    each_chunk(&path, false, |chunk| context.update(chunk)).map_err(write_error(&path))?;
    Ok(hex::encode(context.finish()) == oid)
}

/// Writes a file (or link) of the commit that the archive left out, from its blob's content,
/// under the same rules as the archive's entries; [`check_links`] must follow, once every
/// file is restored.
pub fn restore(
    root: &Path,
    entry: &TreeEntry,
    content: &mut impl Read,
    limits: &Limits,
    unpacked: &mut Unpacked,
) -> Result<(), ArchiveError> {
    let root = root.canonicalize().map_err(write_error(root))?;
    let relative = tree_path(&entry.path)?;
    let target = root.join(&relative);
    let raw = entry.path.clone();
    make_parents(&root, &target, &raw)?;
    match entry.mode.as_str() {
        "120000" => {
            let mut link = String::new();
            content
                .take(limits.max_path_bytes as u64 + 1)
                .read_to_string(&mut link)
                .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
            if link.contains('\0') {
                return Err(ArchiveError::BadLinkTarget(raw));
            }
            if link.len() > limits.max_path_bytes || !link_stays_inside(&relative, &link) {
                return Err(ArchiveError::LinkEscapes {
                    entry: raw,
                    target: link,
                });
            }
            std::os::unix::fs::symlink(&link, &target).map_err(|error| {
                if error.kind() == std::io::ErrorKind::AlreadyExists {
                    ArchiveError::Duplicate(raw.clone())
                } else {
                    write_error(&target)(error)
                }
            })?;
            unpacked.links += 1;
        }
        "100644" | "100755" => {
            let space_left = limits
                .max_file_bytes
                .min(limits.max_total_bytes.saturating_sub(unpacked.bytes));
            let written = write_file(content, &target, entry.mode == "100755", space_left)
                .map_err(|error| match error.kind() {
                    std::io::ErrorKind::AlreadyExists => ArchiveError::Duplicate(raw.clone()),
                    std::io::ErrorKind::FileTooLarge if space_left < limits.max_file_bytes => {
                        ArchiveError::TooLarge(limits.max_total_bytes)
                    }
                    std::io::ErrorKind::FileTooLarge => ArchiveError::FileTooLarge {
                        entry: raw.clone(),
                        limit: limits.max_file_bytes,
                    },
                    _ => write_error(&target)(error),
                })?;
            unpacked.files += 1;
            unpacked.bytes += written;
        }
        other => {
            return Err(ArchiveError::Unsupported {
                entry: raw,
                kind: format!("blob of mode {other}"),
            });
        }
    }
    Ok(())
}

/// Replaces the workspace's file (or link) of `entry`, which differs from the commit's, with
/// the blob's content, under the same rules as [`restore`].
pub fn replace(
    root: &Path,
    entry: &TreeEntry,
    content: &mut impl Read,
    limits: &Limits,
    unpacked: &mut Unpacked,
) -> Result<(), ArchiveError> {
    let relative = tree_path(&entry.path)?;
    if !matches!(inspect(root, &relative, &entry.path)?, Found::Nothing) {
        let path = root.join(&relative);
        let meta = std::fs::symlink_metadata(&path).map_err(write_error(&path))?;
        std::fs::remove_file(&path).map_err(write_error(&path))?;
        if meta.file_type().is_symlink() {
            unpacked.links = unpacked.links.saturating_sub(1);
        } else {
            unpacked.files = unpacked.files.saturating_sub(1);
            unpacked.bytes = unpacked.bytes.saturating_sub(meta.len());
        }
    }
    restore(root, entry, content, limits, unpacked)
}

/// A path of the commit's tree, refused unless it is plainly inside the repository.
fn tree_path(raw: &str) -> Result<PathBuf, ArchiveError> {
    let path = Path::new(raw);
    if path.has_root() {
        return Err(ArchiveError::AbsolutePath(raw.to_owned()));
    }
    if raw.contains('\0') {
        return Err(ArchiveError::Unsupported {
            entry: raw.replace('\0', "\\0"),
            kind: "path holding a NUL byte".to_owned(),
        });
    }
    if raw.is_empty()
        || path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(ArchiveError::ParentDirectory(raw.to_owned()));
    }
    Ok(path.to_path_buf())
}

/// What a Git LFS pointer file starts with (and the name LFS had before its first release).
const LFS_POINTER_STARTS: [&[u8]; 2] = [
    b"version https://git-lfs.github.com/spec/v1",
    b"version https://hawser.github.com/spec/v1",
];

/// The workspace's files that are Git LFS pointers (a pointer is at most 1024 bytes): GitHub's
/// archive holds the pointer, not the content, unless the repository includes LFS objects in
/// its archives. Sorted, relative to `root`; links are not followed.
pub fn lfs_pointers(root: &Path) -> Result<Vec<String>, ArchiveError> {
    let mut found = Vec::new();
    walk(root, &mut |relative, path, kind| {
        if !kind.is_file() {
            return Ok(());
        }
        if std::fs::symlink_metadata(path)
            .map_err(write_error(path))?
            .len()
            > 1024
        {
            return Ok(());
        }
        let mut head = Vec::with_capacity(64);
        std::fs::File::open(path)
            .and_then(|f| f.take(64).read_to_end(&mut head))
            .map_err(write_error(path))?;
        if LFS_POINTER_STARTS.iter().any(|p| head.starts_with(p)) {
            found.push(relative.display().to_string());
        }
        Ok(())
    })?;
    found.sort();
    Ok(found)
}

/// Checks every link of the workspace once more, where it really leads: a file restored after
/// unpacking can be a link that another, earlier link goes through.
pub fn check_links(root: &Path) -> Result<(), ArchiveError> {
    let root = root.canonicalize().map_err(write_error(root))?;
    walk(&root, &mut |relative, path, kind| {
        if kind.is_symlink() && escapes(&root, relative) {
            return Err(ArchiveError::LinkEscapes {
                entry: relative.display().to_string(),
                target: std::fs::read_link(path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default(),
            });
        }
        Ok(())
    })
}

/// Calls `visit(relative, path, kind)` for everything under `root`, links not followed.
fn walk(
    root: &Path,
    visit: &mut impl FnMut(&Path, &Path, std::fs::FileType) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let mut pending = vec![PathBuf::new()];
    while let Some(dir) = pending.pop() {
        let at = root.join(&dir);
        for item in std::fs::read_dir(&at).map_err(write_error(&at))? {
            let item = item.map_err(write_error(&at))?;
            let kind = item.file_type().map_err(write_error(&at))?;
            let relative = dir.join(item.file_name());
            visit(&relative, &item.path(), kind)?;
            if kind.is_dir() {
                pending.push(relative);
            }
        }
    }
    Ok(())
}

/// Removes the files the scanner must not read (its repository-provided configuration), given
/// relative to the repository root: a regular file or a link at exactly that path. A directory
/// of that name is not configuration and stays, with everything in it (a pull request could
/// otherwise hide `kics.config/main.tf` from the scanner). A missing one is fine, a path that is
/// not plainly inside the repository is refused.
pub fn remove_files(root: &Path, files: &[String]) -> Result<Vec<String>, ArchiveError> {
    let mut removed = Vec::new();
    for file in files {
        let relative = Path::new(file);
        if relative.has_root()
            || relative
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(ArchiveError::ParentDirectory(file.clone()));
        }
        let path = root.join(relative);
        match std::fs::symlink_metadata(&path) {
            // A directory of that name is not configuration: it is scanned like the rest.
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&path).map_err(write_error(&path))?;
                removed.push(file.clone());
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(write_error(&path)(error)),
        }
    }
    Ok(removed)
}
