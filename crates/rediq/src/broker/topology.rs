//! Which Redis a builder names, and the checks that it is what the builder said.
//!
//! A [`Target`] is what `Client::builder()`, `ServerBuilder` and `Inspector::builder()` collect:
//! a URL, a mode (standalone, cluster, sentinel) and the sentinel options. [`Target::open`]
//! turns it into the broker's connection source and first connection, and refuses at once,
//! with one sentence, a mode that does not match the server it reaches (cluster mode against a
//! standalone server, a standalone connection to a cluster node or to a sentinel, a master
//! name no sentinel knows), so a misconfiguration is found at `build()`, not at the first
//! enqueue. No message holds a password: every URL in one is masked.
//!
//! URL forms (docs/configuration.md lists them with examples):
//! - standalone: anything the `redis` crate takes (`redis://[user:pass@]host:port/db`,
//!   `rediss://…`, `redis+unix:///path`);
//! - cluster: `redis[s]://[user:pass@]host:port[,host:port…]`, one seed node or several;
//! - sentinel: `redis[s]+sentinel://host:port[,host:port…][/master][/db]` or
//!   `redis[s]://host:port[,…][/master][/db]`; the master name defaults to `mymaster`, the
//!   credentials in the URL are the data nodes', and the sentinels' own are set apart.

use std::time::Duration;

use redis::aio::ConnectionLike;

use super::conn::{ClusterSource, Conn, Source};
use super::sentinel::Master;
use crate::error::mask_url;
use crate::{Error, Result};

/// The master name of a sentinel deployment when neither the URL nor the builder names one.
pub(crate) const DEFAULT_MASTER: &str = "mymaster";

/// Port of a sentinel named without one.
const SENTINEL_PORT: u16 = 26379;

/// Port of a data node named without one.
const REDIS_PORT: u16 = 6379;

/// How long opening a connection may take before it counts as unreachable.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The connection options every builder that talks to Redis has (`Client`, `ServerBuilder`,
/// `InspectorBuilder`), written once: each of those builders keeps a [`Target`] in `target`.
macro_rules! redis_options {
    () => {
        /// The Redis URL (default `redis://127.0.0.1:6379`). Standalone:
        /// `redis://[user:password@]host:port[/db]`; cluster: one seed node or a comma-separated
        /// list (`redis://n1:6379,n2:6379`); sentinel: `redis+sentinel://h1:26379,h2:26379/mymaster[/db]`
        /// or `redis://sentinel:26379`. docs/configuration.md lists every form.
        pub fn redis_url(mut self, url: impl Into<String>) -> Self {
            self.target.url = url.into();
            self
        }

        /// Talk to a Redis Cluster: the URL names one seed node or several, the rest are
        /// discovered. Each queue lives on one slot (its keys share the hash tag `{queue}`).
        /// `build()` fails if the server is not a cluster node.
        pub fn cluster_mode(mut self) -> Self {
            self.target.mode = $crate::broker::Mode::Cluster;
            self
        }

        /// Find the master through Redis Sentinel, and follow it when the sentinels fail over:
        /// the URL names the sentinels, its credentials and database are the data nodes'. The
        /// master name is the URL's path (`redis+sentinel://h1,h2/mymaster`), else
        /// [`sentinel_master`](Self::sentinel_master), else `mymaster`.
        pub fn sentinel_mode(mut self) -> Self {
            self.target.mode = $crate::broker::Mode::Sentinel;
            self
        }

        /// The name the sentinels know the master by (default `mymaster`); sentinel mode only.
        pub fn sentinel_master(mut self, name: impl Into<String>) -> Self {
            self.target.master = Some(name.into());
            self
        }

        /// The PEM root certificate that `rediss://` connections trust (feature `tls`; default:
        /// the webpki roots, which trust public certificate authorities only). Applies to every
        /// node and sentinel of the deployment.
        #[cfg(feature = "tls")]
        pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
            let certs = self
                .target
                .opener
                .certs
                .get_or_insert_with(Default::default);
            certs.root = Some(pem.into());
            self
        }

        /// A PEM client certificate and key for mutual TLS (feature `tls`), presented to every
        /// node and sentinel.
        #[cfg(feature = "tls")]
        pub fn tls_client_certificate(
            mut self,
            cert_pem: impl Into<Vec<u8>>,
            key_pem: impl Into<Vec<u8>>,
        ) -> Self {
            let certs = self
                .target
                .opener
                .certs
                .get_or_insert_with(Default::default);
            certs.client = Some((cert_pem.into(), key_pem.into()));
            self
        }

        /// The sentinels' own password (and, if given, ACL user name), when they require one;
        /// the URL's credentials are the data nodes'. Sentinel mode only. Never printed.
        pub fn sentinel_auth(
            mut self,
            username: Option<&str>,
            password: impl Into<String>,
        ) -> Self {
            self.target.sentinel_username = username.map(str::to_string);
            self.target.sentinel_password = Some(password.into());
            self
        }
    };
}
pub(crate) use redis_options;

/// Opens `redis::Client`s for the URLs of a deployment: plain, or (feature `tls`) with the
/// root certificate and client certificate the builder was given, for every node and sentinel.
#[derive(Clone, Default)]
pub(crate) struct Opener {
    #[cfg(feature = "tls")]
    pub certs: Option<Certs>,
}

/// The certificates a builder was given (feature `tls`).
#[cfg(feature = "tls")]
#[derive(Clone, Default)]
pub(crate) struct Certs {
    /// PEM root certificate.
    pub root: Option<Vec<u8>>,
    /// PEM client certificate and key (mutual TLS).
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl Opener {
    /// A client for `url` (TLS when it is `rediss://`, with the configured certificates).
    pub fn open(&self, url: &str) -> redis::RedisResult<redis::Client> {
        #[cfg(feature = "tls")]
        if let Some(certs) = self.tls_certificates() {
            if url.starts_with("rediss") {
                return redis::Client::build_with_tls(url, certs);
            }
        }
        redis::Client::open(url)
    }

    /// The certificates in the `redis` crate's form (for a cluster client too).
    #[cfg(feature = "tls")]
    pub fn tls_certificates(&self) -> Option<redis::TlsCertificates> {
        self.certs.as_ref().map(|c| redis::TlsCertificates {
            client_tls: c.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: c.root.clone(),
        })
    }
}

/// The topology a builder was told to expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Mode {
    #[default]
    Standalone,
    Cluster,
    Sentinel,
}

/// What a builder collected about the Redis to use.
#[derive(Clone)]
pub(crate) struct Target {
    pub url: String,
    pub mode: Mode,
    /// The sentinel master name set on the builder (else the URL's, else `mymaster`).
    pub master: Option<String>,
    /// The sentinels' own ACL user and password (the URL's are the data nodes').
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    /// How clients are opened (TLS certificates).
    pub opener: Opener,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            url: crate::client::DEFAULT_REDIS_URL.to_string(),
            mode: Mode::Standalone,
            master: None,
            sentinel_username: None,
            sentinel_password: None,
            opener: Opener::default(),
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.masked())
            .field("mode", &self.mode)
            .field("master", &self.master)
            .field("sentinel_username", &self.sentinel_username)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "****"),
            )
            .finish()
    }
}

/// A multi-host URL taken apart (its `Debug` masks the credentials).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    pub tls: bool,
    /// `user:pass` as written (still percent-encoded), without the `@`.
    pub userinfo: Option<String>,
    pub hosts: Vec<(String, u16)>,
    /// The path's segments that are not numbers (a master name), and the number (a database).
    pub name: Option<String>,
    pub db: Option<i64>,
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parsed")
            .field("tls", &self.tls)
            .field("userinfo", &self.userinfo.as_ref().map(|_| "****"))
            .field("hosts", &self.hosts)
            .field("name", &self.name)
            .field("db", &self.db)
            .finish()
    }
}

impl Parsed {
    /// `scheme://[userinfo@]host:port/db` for one of the hosts, as the `redis` crate reads it.
    pub fn node_url(&self, host: &str, port: u16, userinfo: Option<&str>) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]") // IPv6
        } else {
            host.to_string()
        };
        format!("{scheme}://{auth}{host}:{port}/{}", self.db.unwrap_or(0))
    }
}

impl Target {
    /// The URL with any password masked, for messages.
    pub fn masked(&self) -> String {
        masked_url(&self.url)
    }

    /// Connects as the mode says, checks that the server agrees, and returns the source of
    /// further connections with the first one.
    pub async fn open(&self) -> Result<(Conn, Source)> {
        match self.mode {
            Mode::Standalone => self.open_standalone().await,
            Mode::Cluster => self.open_cluster().await,
            Mode::Sentinel => self.open_sentinel().await,
        }
    }

    fn wrong(&self, reason: impl Into<String>) -> Error {
        Error::Topology {
            url: self.masked(),
            reason: reason.into(),
        }
    }

    fn unreachable(&self, source: redis::RedisError) -> Error {
        Error::Connection {
            url: self.masked(),
            source,
        }
    }

    async fn open_standalone(&self) -> Result<(Conn, Source)> {
        // A comma in the host part (not in a password) lists several hosts.
        let after_scheme = self.url.split_once("://").map_or(&self.url[..], |(_, r)| r);
        if split_rest(after_scheme).1.contains(',') {
            return Err(self.wrong(
                "a list of hosts names a cluster or a set of sentinels: add .cluster_mode() or .sentinel_mode()",
            ));
        }
        self.refuse_master()?;
        let client = self
            .opener
            .open(self.url.as_str())
            .map_err(|e| self.unreachable(e))?;
        let source = Source::Single(Box::new(client));
        let mut conn = source.connect().await.map_err(|e| self.unreachable(e))?;
        match redis_mode(&mut conn).await.map_err(|e| self.unreachable(e))?.as_str() {
            "cluster" => Err(self.wrong(
                "this is a Redis Cluster node (it would answer MOVED for most queues): add .cluster_mode()",
            )),
            "sentinel" => Err(self.wrong(
                "this is a Redis Sentinel, not a data node: add .sentinel_mode()",
            )),
            _ => Ok((conn, source)),
        }
    }

    async fn open_cluster(&self) -> Result<(Conn, Source)> {
        self.refuse_master()?;
        let parsed = self.parse(REDIS_PORT)?;
        if parsed.db.is_some_and(|db| db != 0) || parsed.name.is_some() {
            return Err(
                self.wrong("a Redis Cluster has only database 0: remove the path from the URL")
            );
        }
        let seeds: Vec<String> = parsed
            .hosts
            .iter()
            .map(|(h, p)| parsed.node_url(h, *p, parsed.userinfo.as_deref()))
            .collect();
        // Ask the first seed that answers what it is: the cluster client's own error for a
        // standalone server ("cluster support disabled") is less plain than this.
        let mut last = None;
        let mut checked = false;
        for seed in &seeds {
            match probe_mode(&self.opener, seed).await {
                Ok(mode) if mode == "cluster" || mode == "unknown" => {
                    checked = true;
                    break;
                }
                Ok(mode) => {
                    return Err(Error::Topology {
                        url: masked_url(seed),
                        reason: format!(
                            "cluster mode was asked for, but this is a {mode} Redis server (cluster support disabled): remove .cluster_mode()"
                        ),
                    })
                }
                Err(e) => last = Some(e),
            }
        }
        if !checked {
            return Err(match last {
                Some(e) => self.unreachable(e),
                None => self.wrong("no host in the URL"),
            });
        }
        let cluster = ClusterSource::new(seeds, parsed, self.opener.clone())
            .map_err(|e| self.unreachable(e))?;
        let source = Source::Cluster(std::sync::Arc::new(cluster));
        let conn = source.connect().await.map_err(|e| self.unreachable(e))?;
        Ok((conn, source))
    }

    async fn open_sentinel(&self) -> Result<(Conn, Source)> {
        let parsed = self.parse(SENTINEL_PORT)?;
        let name = match (&self.master, &parsed.name) {
            (Some(a), Some(b)) if a != b => {
                return Err(self.wrong(format!(
                    "the URL names master {b:?} and sentinel_master() names {a:?}: keep one"
                )))
            }
            (Some(a), _) => a.clone(),
            (None, Some(b)) => b.clone(),
            (None, None) => DEFAULT_MASTER.to_string(),
        };
        let master = Master::new(self, parsed, name)?;
        let (conn, source) = master.open().await?;
        Ok((conn, source))
    }

    fn refuse_master(&self) -> Result<()> {
        if self.master.is_some() || self.sentinel_password.is_some() {
            return Err(self.wrong(
                "sentinel options were set, but not .sentinel_mode(): add it or drop them",
            ));
        }
        Ok(())
    }

    /// Takes a multi-host URL apart; hosts without a port get `default_port`.
    pub fn parse(&self, default_port: u16) -> Result<Parsed> {
        parse_hosts(&self.url, default_port).map_err(|reason| self.wrong(reason))
    }
}

/// Splits what follows `scheme://` into credentials, hosts and path. The credentials end at
/// the last `@` (hosts and paths hold none), so a password with an unencoded `/`, `,` or `?`
/// never spills into the hosts, and nothing before that `@` is ever quoted in a message.
fn split_rest(rest: &str) -> (Option<&str>, &str, &str) {
    let (userinfo, tail) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    match tail.find('/') {
        Some(i) => (userinfo, &tail[..i], &tail[i..]),
        None => (userinfo, tail, ""),
    }
}

/// Takes `scheme://[userinfo@]host[:port][,host[:port]…][/seg[/seg]]` apart.
pub(crate) fn parse_hosts(url: &str, default_port: u16) -> std::result::Result<Parsed, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "expected a URL such as redis://host:6379".to_string())?;
    let tls = match scheme {
        "redis" | "redis+sentinel" => false,
        "rediss" | "rediss+sentinel" => true,
        other => {
            return Err(format!(
            "unknown scheme {other:?} (expected redis, rediss, redis+sentinel or rediss+sentinel)"
        ))
        }
    };
    if tls && !cfg!(feature = "tls") {
        return Err("rediss:// needs rediq's `tls` cargo feature".into());
    }
    let (userinfo, hostlist, path) = split_rest(rest);
    let userinfo = userinfo.map(str::to_string);
    if hostlist.contains('?') || path.contains('?') {
        return Err("query parameters are not read in cluster or sentinel URLs".into());
    }
    let mut hosts = Vec::new();
    for h in hostlist.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        hosts.push(host_port(h, default_port)?);
    }
    if hosts.is_empty() {
        return Err("no host in the URL".into());
    }
    let (mut name, mut db) = (None, None);
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        match seg.parse::<i64>() {
            Ok(n) if db.is_none() && n >= 0 => db = Some(n),
            Ok(n) => return Err(format!("unexpected number {n} in the URL's path")),
            Err(_) if name.is_none() && db.is_none() => name = Some(seg.to_string()),
            Err(_) => {
                return Err(format!(
                    "unexpected {seg:?} in the URL's path (expected /master/db)"
                ))
            }
        }
    }
    Ok(Parsed {
        tls,
        userinfo,
        hosts,
        name,
        db,
    })
}

fn host_port(h: &str, default_port: u16) -> std::result::Result<(String, u16), String> {
    // [v6]:port, v6 without port is ambiguous and refused.
    if let Some(rest) = h.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in host {h:?}"))?;
        let port = match tail.strip_prefix(':') {
            Some(p) => parse_port(p, h)?,
            None if tail.is_empty() => default_port,
            None => return Err(format!("cannot read host {h:?}")),
        };
        return Ok((host.to_string(), port));
    }
    match h.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => Ok((host.to_string(), parse_port(p, h)?)),
        Some(_) => Err(format!(
            "write the IPv6 address in {h:?} in brackets: [addr]:port"
        )),
        None => Ok((h.to_string(), default_port)),
    }
}

fn parse_port(p: &str, h: &str) -> std::result::Result<u16, String> {
    p.parse()
        .map_err(|_| format!("port {p:?} of host {h:?} is not a number from 1 to 65535"))
}

/// A URL with its password masked, multi-host URLs included.
pub(crate) fn masked_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if rest.contains(',') || scheme.contains("sentinel") => {
            match split_rest(rest) {
                (Some(userinfo), hosts, path) => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:****@{hosts}{path}")
                }
                (None, ..) => url.to_string(),
            }
        }
        _ => mask_url(url),
    }
}

/// `redis_mode` from `INFO server`: standalone, cluster or sentinel; `unknown` when the ACL
/// user may not run `INFO` (then the mode is taken on trust).
pub(crate) async fn redis_mode(conn: &mut impl ConnectionLike) -> redis::RedisResult<String> {
    let info: String = match redis::cmd("INFO").arg("server").query_async(conn).await {
        Err(e) if e.code() == Some("NOPERM") => return Ok("unknown".into()),
        r => r?,
    };
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("redis_mode:"))
        .map(|m| m.trim().to_string())
        .unwrap_or_else(|| "standalone".into()))
}

/// Connects to one node (with the connect timeout) and asks its mode.
async fn probe_mode(opener: &Opener, url: &str) -> redis::RedisResult<String> {
    let client = opener.open(url)?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT));
    let mut c = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    redis_mode(&mut c).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_lists() {
        let p = parse_hosts("redis://:pw@a:1,b:2,[::1]:3/mymaster/2", 26379).unwrap();
        assert_eq!(p.userinfo.as_deref(), Some(":pw"));
        assert_eq!(
            p.hosts,
            vec![("a".into(), 1), ("b".into(), 2), ("::1".into(), 3)]
        );
        assert_eq!(p.name.as_deref(), Some("mymaster"));
        assert_eq!(p.db, Some(2));
        assert_eq!(p.node_url("::1", 3, Some(":pw")), "redis://:pw@[::1]:3/2");
        let p = parse_hosts("redis+sentinel://s1,s2:1", 26379).unwrap();
        assert_eq!(p.hosts, vec![("s1".into(), 26379), ("s2".into(), 1)]);
        assert_eq!((p.name, p.db), (None, None));
        assert!(parse_hosts("redis://a:x", 1).unwrap_err().contains("\"x\""));
        assert!(parse_hosts("http://a", 1).unwrap_err().contains("\"http\""));
        assert!(parse_hosts("redis://a/1/2", 1).is_err());
        assert!(parse_hosts("redis://", 1).is_err());
    }

    #[test]
    fn masks_multi_host_urls() {
        let m = masked_url("redis://u:secret@a:1,b:2/0");
        assert_eq!(m, "redis://u:****@a:1,b:2/0");
        let m = masked_url("redis+sentinel://:secret@a/mymaster");
        assert!(!m.contains("secret"), "{m}");
        assert!(!masked_url("redis://:secret@a:1").contains("secret"));
        // Unencoded `/`, `,` and `@` in a password stay on the credentials' side.
        for url in [
            "redis+sentinel://:se/cret@s1,s2/m",
            "redis://u:se/cret@a:1,b:2",
            "redis://u:se,cr@et@a:1,b:2/0",
        ] {
            let m = masked_url(url);
            assert!(!m.contains("cret"), "{m}");
            let p = parse_hosts(url, 1).unwrap();
            assert!(!format!("{p:?}").contains("cret"));
            assert_eq!(p.hosts.len(), 2, "{url}");
        }
    }
}
