//! The Redis ACL users the Helm chart creates, read from the very file the chart reads
//! (`charts/gatehouse/files/redis-acl-rules.conf`: one `NAME RULES...` line per user, `#`
//! comments), so that a test running the webhook, the operator or the agent as those users fails
//! when the file lacks a permission the code needs.
//!
//! Tests give each user a fixed password ([`password`]); nothing here is used by production code.

use std::path::PathBuf;

/// The user of the webhook (both roles) and the operator.
pub const USER: &str = "gatehouse";
/// The user of scan pods' `report` step: `XADD` to the results stream, nothing else.
pub const SCAN_USER: &str = "gatehouse-scan";

/// One user of the rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclUser {
    /// The user name.
    pub name: String,
    /// Its ACL rules, word by word, as `ACL SETUSER` takes them.
    pub rules: Vec<String>,
}

/// Reading the rules file failed.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("failed to read the Redis ACL rules from {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line names a user and no rules.
    #[error("line {line} of the Redis ACL rules names user {user:?} without rules")]
    NoRules {
        /// 1-based line number.
        line: usize,
        /// The user.
        user: String,
    },
    /// A line carries a password, which belongs to the installation, not to the file.
    #[error("line {line} of the Redis ACL rules holds a password rule ({rule:?})")]
    Password {
        /// 1-based line number.
        line: usize,
        /// The offending rule.
        rule: String,
    },
}

/// `charts/gatehouse/files/redis-acl-rules.conf`.
pub fn rules_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/gatehouse/files/redis-acl-rules.conf")
}

/// The users of the chart's rules file.
pub fn users() -> Result<Vec<AclUser>, AclError> {
    let path = rules_file();
    let text = std::fs::read_to_string(&path).map_err(|source| AclError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

/// Parses rules text: blank lines and lines starting with `#` are skipped; every other line is
/// a user name and its rules, separated by blanks. Password rules (`>`, `<`, `#`, `!`,
/// `nopass`, `resetpass`) are refused: the file is shared by every installation.
pub fn parse(text: &str) -> Result<Vec<AclUser>, AclError> {
    let mut users = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default().to_owned();
        let rules: Vec<String> = words.map(str::to_owned).collect();
        if rules.is_empty() {
            return Err(AclError::NoRules {
                line: index + 1,
                user: name,
            });
        }
        if let Some(rule) = rules
            .iter()
            .find(|r| r.starts_with(['>', '<', '#', '!']) || *r == "nopass" || *r == "resetpass")
        {
            return Err(AclError::Password {
                line: index + 1,
                rule: rule.clone(),
            });
        }
        users.push(AclUser { name, rules });
    }
    Ok(users)
}

/// The password tests give `user`.
pub fn password(user: &str) -> String {
    format!("{user}-test-password")
}

/// The `ACL SETUSER` command that creates `user` with `password`: `ACL SETUSER name reset on
/// >password RULES...` (reset first, as the chart's ACL file does).
pub fn setuser(user: &AclUser, password: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER")
        .arg(&user.name)
        .arg("reset")
        .arg("on")
        .arg(format!(">{password}"))
        .arg(&user.rules);
    cmd
}

/// `redis://USER:PASSWORD@127.0.0.1:PORT/0`: a URL that authenticates as `user`.
pub fn url_as(port: u16, user: &str) -> String {
    format!("redis://{user}:{}@127.0.0.1:{port}/0", password(user))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_rules_file_names_both_users_with_rules_and_no_passwords() {
        let users = users().unwrap();
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, [USER, SCAN_USER]);
    }

    #[test]
    fn comments_and_blank_lines_are_skipped_and_passwords_refused() {
        let users = parse("# users\n\na ~x +get\n  b -@all +xadd  \n").unwrap();
        assert_eq!(
            users,
            [
                AclUser {
                    name: "a".into(),
                    rules: vec!["~x".into(), "+get".into()]
                },
                AclUser {
                    name: "b".into(),
                    rules: vec!["-@all".into(), "+xadd".into()]
                },
            ]
        );
        assert!(matches!(
            parse("a ~x >secret"),
            Err(AclError::Password { line: 1, .. })
        ));
        assert!(matches!(parse("a\n"), Err(AclError::NoRules { .. })));
    }
}
