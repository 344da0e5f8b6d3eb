//! TLS for private test servers: a throwaway certificate authority and a certificate for
//! 127.0.0.1 signed by it, made with the `openssl` command line tool, and a server that
//! listens with TLS only ([`RedisServer::start_tls`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::RedisServer;

/// A throwaway CA and a server certificate for `127.0.0.1`/`localhost` signed by it, in a
/// temporary directory removed when dropped.
///
/// ```no_run
/// use rediq::testing::{RedisServer, TlsFiles};
/// let tls = TlsFiles::generate()?;
/// let redis = RedisServer::start_tls(&tls);
/// assert!(redis.url().starts_with("rediss://"));
/// let ca = tls.ca_pem(); // for `.tls_root_certificate(ca)` (feature `tls`)
/// # Ok::<(), String>(())
/// ```
#[derive(Debug)]
pub struct TlsFiles {
    dir: PathBuf,
}

impl TlsFiles {
    /// Makes the CA and the server certificate (needs `openssl` on PATH).
    pub fn generate() -> Result<TlsFiles, String> {
        let dir = std::env::temp_dir().join(format!(
            "rediq-tls-{}-{}",
            std::process::id(),
            crate::task::now_ms()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {dir:?}: {e}"))?;
        let files = TlsFiles { dir };
        std::fs::write(
            files.dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .map_err(|e| format!("cannot write ext.cnf: {e}"))?;
        let steps: [&[&str]; 5] = [
            &["genrsa", "-out", "ca.key", "2048"],
            &[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-key",
                "ca.key",
                "-sha256",
                "-days",
                "2",
                "-subj",
                "/CN=rediq-test-ca",
                "-out",
                "ca.crt",
            ],
            &["genrsa", "-out", "redis.key", "2048"],
            &[
                "req",
                "-new",
                "-key",
                "redis.key",
                "-subj",
                "/CN=127.0.0.1",
                "-out",
                "redis.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "redis.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                "ext.cnf",
                "-out",
                "redis.crt",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&files.dir)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| {
                    format!(
                        "cannot run openssl ({e}); install it (Debian: apt-get install openssl)"
                    )
                })?;
            if !out.status.success() {
                return Err(format!(
                    "openssl {} failed: {}",
                    args[0],
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(files)
    }

    /// The CA certificate (PEM), which clients trust.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_path()).unwrap_or_default()
    }

    /// Where the CA certificate is, for `redis-cli --cacert`.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The `redis-server` arguments that make it use these certificates (clients need no
    /// certificate of their own).
    pub(crate) fn server_args(&self) -> Vec<String> {
        let path = |f: &str| self.dir.join(f).display().to_string();
        vec![
            "--tls-cert-file".into(),
            path("redis.crt"),
            "--tls-key-file".into(),
            path("redis.key"),
            "--tls-ca-cert-file".into(),
            path("ca.crt"),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// Starts a private server that listens with TLS only, with `tls`'s certificates; its
    /// [`url`](RedisServer::url) is `rediss://127.0.0.1:PORT`. Panics when that is impossible.
    pub fn start_tls(tls: &TlsFiles) -> RedisServer {
        match Self::spawn_with(Path::new("redis-server"), None, &[], Some(tls)) {
            Ok(s) => s,
            Err(e) => panic!("cannot start a private TLS redis-server: {e}"),
        }
    }
}
