//! A private `redis-server` for one test: its own free loopback port, its own data directory,
//! stopped (and its directory removed) when the handle is dropped. No shared global Redis, no
//! fixed port, so tests run in parallel without seeing each other's data.
//!
//! The binary is `redis-server` from `PATH`, or the path in `GATEHOUSE_REDIS_SERVER`.
//! `./scripts/test` installs it from Debian's packages when it is missing.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The administrator tests look into Redis as when the chart's ACL users are set up.
const ADMIN: &str = "test-admin";

/// How long a server may take to answer PING after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Starting or controlling a test Redis failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisServerError {
    /// The binary could not be run at all.
    #[error(
        "failed to run {binary:?}: {source} (install it with `apt-get install redis-server`, \
         or run ./scripts/test, which does)"
    )]
    Spawn {
        /// The binary that was tried.
        binary: String,
        /// Why it could not be run.
        source: std::io::Error,
    },
    /// The server did not answer PING in time; its log says why.
    #[error("redis-server on port {port} did not become ready within {timeout:?}; log:\n{log}")]
    NotReady {
        /// Port it was started on.
        port: u16,
        /// How long we waited.
        timeout: Duration,
        /// The server's own log.
        log: String,
    },
    /// Local I/O (temporary directory, free port) failed.
    #[error("failed to prepare a test redis-server: {0}")]
    Io(#[from] std::io::Error),
    /// The chart's ACL users could not be set up.
    #[error("failed to set up the Redis ACL users: {0}")]
    Acl(String),
}

/// Options for a test server.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedisOptions {
    /// Turn on the append-only file with `appendfsync always`, as production runs it; needed by
    /// tests that restart Redis and expect data to survive.
    pub append_only: bool,
    /// `maxmemory-policy`, when not Redis's default (`noeviction`).
    pub maxmemory_policy: Option<&'static str>,
    /// Set up the Helm chart's ACL users from `charts/gatehouse/files/redis-acl-rules.conf`
    /// (each with [`crate::redis_acl::password`]) and turn the `default` user off, as the chart
    /// does: [`RedisServer::url`] then authenticates as `gatehouse`, and
    /// [`RedisServer::url_as`] as any user of the file. Set up again on every restart.
    pub acl: bool,
}

/// A running private `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    options: RedisOptions,
}

impl RedisServer {
    /// Starts a server with default options (no persistence).
    pub fn start() -> Result<RedisServer, RedisServerError> {
        RedisServer::start_with(RedisOptions::default())
    }

    /// Starts a server with `options` on a free loopback port.
    pub fn start_with(options: RedisOptions) -> Result<RedisServer, RedisServerError> {
        // A port found free can be taken by someone else before redis binds it: try a few.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut server = RedisServer {
                child: None,
                port,
                dir: tempfile::Builder::new()
                    .prefix("gatehouse-redis-")
                    .tempdir()?,
                options,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e @ RedisServerError::Spawn { .. }) => return Err(e),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            RedisServerError::Io(std::io::Error::other("no attempt to start redis-server"))
        }))
    }

    /// `redis://127.0.0.1:<port>/0`; with [`RedisOptions::acl`], as the user `gatehouse`
    /// (`redis://gatehouse:<password>@127.0.0.1:<port>/0`).
    pub fn url(&self) -> String {
        if self.options.acl {
            self.url_as(crate::redis_acl::USER)
        } else {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    /// A URL for the test's own looks into Redis, allowed everything: the default user's with
    /// [`RedisOptions::acl`] off, else an administrator the tests add (`test-admin`).
    pub fn admin_url(&self) -> String {
        if self.options.acl {
            self.url_as(ADMIN)
        } else {
            self.url()
        }
    }

    /// A URL that authenticates as `user` with its test password (a user of the rules file
    /// exists only with [`RedisOptions::acl`]).
    pub fn url_as(&self, user: &str) -> String {
        crate::redis_acl::url_as(self.port, user)
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory (AOF and RDB files).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the server answers PING right now.
    pub fn is_up(&self) -> bool {
        ping(self.port)
    }

    /// Stops the server (SIGKILL, as a crash would), keeping its data directory and port for
    /// [`RedisServer::restart`].
    pub fn stop(&mut self) -> Result<(), RedisServerError> {
        if let Some(mut child) = self.child.take() {
            // Already exited is fine: the point is that it no longer runs.
            let _ = child.kill();
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the server again on the same port with the same data directory.
    pub fn restart(&mut self) -> Result<(), RedisServerError> {
        self.stop()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.launch() {
                Ok(()) => return Ok(()),
                // The old socket may linger for a moment; anything else is final.
                Err(RedisServerError::NotReady { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn launch(&mut self) -> Result<(), RedisServerError> {
        let binary =
            std::env::var("GATEHOUSE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned());
        let mut command = Command::new(&binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(["--save", "", "--daemonize", "no"]);
        if let Some(policy) = self.options.maxmemory_policy {
            command.args(["--maxmemory-policy", policy]);
        }
        if self.options.append_only {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| RedisServerError::Spawn {
                binary: binary.clone(),
                source,
            })?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if ping(self.port) {
                if self.options.acl {
                    self.set_up_acl()?;
                }
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .map(|c| c.try_wait().map(|status| status.is_some()))
                .transpose()?
                .unwrap_or(true);
            if exited {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop()?;
        Err(RedisServerError::NotReady {
            port: self.port,
            timeout: START_TIMEOUT,
            log: std::fs::read_to_string(self.log_path()).unwrap_or_default(),
        })
    }
}

impl RedisServer {
    /// Creates the chart's ACL users and turns `default` off (Redis keeps no ACL across a
    /// restart without an ACL file, so this runs on every start).
    fn set_up_acl(&self) -> Result<(), RedisServerError> {
        let acl = |e: &dyn std::fmt::Display| RedisServerError::Acl(e.to_string());
        let users = crate::redis_acl::users().map_err(|e| acl(&e))?;
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.port))
            .map_err(|e| acl(&e))?;
        let mut conn = client.get_connection().map_err(|e| acl(&e))?;
        for user in &users {
            crate::redis_acl::setuser(user, &crate::redis_acl::password(&user.name))
                .query::<()>(&mut conn)
                .map_err(|e| acl(&format!("user {}: {e}", user.name)))?;
        }
        crate::redis_acl::setuser(
            &crate::redis_acl::AclUser {
                name: ADMIN.to_owned(),
                rules: ["~*", "&*", "+@all"].map(str::to_owned).to_vec(),
            },
            &crate::redis_acl::password(ADMIN),
        )
        .query::<()>(&mut conn)
        .map_err(|e| acl(&e))?;
        redis::cmd("ACL")
            .arg(&["SETUSER", "default", "off"][..])
            .query::<()>(&mut conn)
            .map_err(|e| acl(&e))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; the temp directory goes either way.
        let _ = self.stop();
    }
}

fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    // With the default user off (ACL users), a server that is up asks for authentication.
    let mut reply = [0_u8; 7];
    stream.read_exact(&mut reply).is_ok() && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
}
