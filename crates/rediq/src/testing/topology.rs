//! Redis Cluster and Redis Sentinel made of private `redis-server` processes, for tests.
//!
//! [`RedisCluster::start`] runs six nodes on free ports, joins them with `redis-cli --cluster
//! create` (three masters, one replica each) and waits until every node reports
//! `cluster_state:ok` and knows all six. [`RedisSentinel::start`] runs a master, a replica of it
//! and three sentinels watching it under [`RedisSentinel::MASTER_NAME`], and waits until every
//! sentinel names the master and the replica is in sync. Both stop every process when dropped.
//! A missing `redis-server` or `redis-cli` fails with an install hint, never a silent skip.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{redis_server_available, RedisServer, INSTALL_HINT};

/// How long a topology may take to settle before starting it fails.
const SETTLE: Duration = Duration::from_secs(30);

/// A Redis Cluster of three masters and three replicas on free local ports.
#[derive(Debug)]
pub struct RedisCluster {
    pub(super) nodes: Vec<RedisServer>,
    /// The CA certificate of a TLS cluster ([`RedisCluster::start_tls`]), for `redis-cli`.
    tls_ca: Option<std::path::PathBuf>,
}

impl RedisCluster {
    /// Starts a cluster, panicking with a clear message when that is impossible.
    ///
    /// ```no_run
    /// let cluster = rediq::testing::RedisCluster::start();
    /// println!("seed node: {}", cluster.seed_url());
    /// ```
    pub fn start() -> RedisCluster {
        match Self::try_start() {
            Ok(c) => c,
            Err(e) => panic!("cannot start a private Redis Cluster: {e}"),
        }
    }

    /// Starts a cluster.
    pub fn try_start() -> Result<RedisCluster, String> {
        Self::try_start_with(None)
    }

    /// Starts a cluster whose nodes listen, and talk to each other, with TLS only, with
    /// `tls`'s certificates (node URLs are `rediss://`); panics when that is impossible.
    pub fn start_tls(tls: &super::TlsFiles) -> RedisCluster {
        match Self::try_start_with(Some(tls)) {
            Ok(c) => c,
            Err(e) => panic!("cannot start a private TLS Redis Cluster: {e}"),
        }
    }

    fn try_start_with(tls: Option<&super::TlsFiles>) -> Result<RedisCluster, String> {
        if !redis_server_available() {
            return Err(INSTALL_HINT.to_string());
        }
        let mut nodes = Vec::with_capacity(6);
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        if tls.is_some() {
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"]);
        }
        for _ in 0..6 {
            nodes.push(RedisServer::spawn_with(
                Path::new("redis-server"),
                None,
                &args,
                tls,
            )?);
        }
        let cluster = RedisCluster {
            nodes,
            tls_ca: tls.map(|t| t.ca_path()),
        };
        let addrs: Vec<String> = cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut cli = Command::new("redis-cli");
        if let Some(ca) = &cluster.tls_ca {
            cli.arg("--tls").arg("--cacert").arg(ca);
        }
        let out = cli
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run redis-cli ({e}); {INSTALL_HINT}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&out.stderr).lines())
                    .filter(|l| l.contains("ERR") || l.contains("rror"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        settle("the cluster", || cluster.settled())?;
        Ok(cluster)
    }

    /// The ports of the six nodes, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` with TLS) of one node, for a client that
    /// discovers the rest.
    pub fn seed_url(&self) -> String {
        self.nodes[0].url()
    }

    /// One command to a node, its reply as text: through `redis-cli` on a TLS cluster (the
    /// harness itself is built without TLS).
    fn query(&self, port: u16, args: &[&str]) -> Result<String, String> {
        match &self.tls_ca {
            Some(ca) => cli(port, ca, None, args),
            None => query(port, args),
        }
    }

    /// The URL of every node, comma-separated after the first's scheme
    /// (`redis://127.0.0.1:P1,127.0.0.1:P2,...`): the seed-list form of the configuration.
    pub fn seed_list_url(&self) -> String {
        let rest: Vec<String> = self.ports()[1..]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("{},{}", self.seed_url(), rest.join(","))
    }

    /// The node started `i`-th (0..6), to stop or pause it in fault tests.
    pub fn node(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// The ports of the current masters, as the first node that answers sees them.
    pub fn masters(&self) -> Result<Vec<u16>, String> {
        Ok(self
            .nodes_view()?
            .into_iter()
            .filter(|(_, master)| *master)
            .map(|(port, _)| port)
            .collect())
    }

    /// (port, is master) of every node that the first answering node lists as connected.
    fn nodes_view(&self) -> Result<Vec<(u16, bool)>, String> {
        let mut last = String::from("no node answered");
        for port in self.ports() {
            match self.query(port, &["CLUSTER", "NODES"]) {
                Ok(text) => return Ok(parse_nodes(&text)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The ports of the current replicas, as the first node that answers sees them.
    pub fn replicas(&self) -> Result<Vec<u16>, String> {
        Ok(self
            .nodes_view()?
            .into_iter()
            .filter(|(_, master)| !*master)
            .map(|(port, _)| port)
            .collect())
    }

    /// Promotes the replica on `port` with `CLUSTER FAILOVER` (the coordinated manual failover:
    /// the master pauses its clients until the replica has caught up, so no acknowledged write
    /// is lost), and waits until it reports itself master and the cluster is settled again.
    pub fn fail_over(&self, port: u16) -> Result<(), String> {
        let _: String = query_value(port, None, &["CLUSTER", "FAILOVER"])?;
        settle("the failover", || {
            let role = query_value::<Vec<redis::Value>>(port, None, &["ROLE"])?;
            match role.first() {
                Some(redis::Value::BulkString(b)) if b == b"master" => self.settled(),
                _ => Err(format!("node {port} is not master yet")),
            }
        })
    }

    /// Whether every node reports `cluster_state:ok` and sees three masters and three
    /// replicas (else what is missing).
    fn settled(&self) -> Result<(), String> {
        for port in self.ports() {
            let info = self.query(port, &["CLUSTER", "INFO"])?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("node {port} is not ok yet"));
            }
            let view = parse_nodes(&self.query(port, &["CLUSTER", "NODES"])?);
            let masters = view.iter().filter(|(_, m)| *m).count();
            if view.len() != 6 || masters != 3 {
                return Err(format!(
                    "node {port} sees {} connected nodes, {masters} masters",
                    view.len()
                ));
            }
        }
        Ok(())
    }
}

/// (port, is master) of the connected nodes in a `CLUSTER NODES` reply.
fn parse_nodes(text: &str) -> Vec<(u16, bool)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // <id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link-state> <slots>
            if f.len() < 8 || f[7] != "connected" || f[2].contains("fail") {
                return None;
            }
            let port = f[1].split('@').next()?.rsplit(':').next()?.parse().ok()?;
            Some((port, f[2].contains("master")))
        })
        .collect()
}

/// A master, one replica of it and three sentinels watching it, on free local ports.
#[derive(Debug)]
pub struct RedisSentinel {
    pub(super) master: RedisServer,
    pub(super) replica: RedisServer,
    sentinels: Vec<RedisServer>,
    /// The data nodes' and the sentinels' passwords, when they require them.
    passwords: Option<(String, String)>,
    /// The CA certificate of a TLS set ([`RedisSentinel::start_tls`]), for `redis-cli`.
    tls_ca: Option<std::path::PathBuf>,
}

impl RedisSentinel {
    /// The name the sentinels know the master by.
    pub const MASTER_NAME: &'static str = "mymaster";

    /// Starts the set, panicking with a clear message when that is impossible.
    ///
    /// ```no_run
    /// let ha = rediq::testing::RedisSentinel::start();
    /// println!("{}", ha.url()); // redis+sentinel://127.0.0.1:P1,.../mymaster
    /// ```
    pub fn start() -> RedisSentinel {
        match Self::try_start() {
            Ok(s) => s,
            Err(e) => panic!("cannot start a private Redis Sentinel set: {e}"),
        }
    }

    /// Starts the set.
    pub fn try_start() -> Result<RedisSentinel, String> {
        Self::try_start_inner(None, None)
    }

    /// Starts a set whose master, replica and sentinels all listen (and replicate, and
    /// monitor) with TLS only, with `tls`'s certificates; its URL is `rediss+sentinel://…`.
    /// Panics when that is impossible.
    pub fn start_tls(tls: &super::TlsFiles) -> RedisSentinel {
        match Self::try_start_inner(None, Some(tls)) {
            Ok(s) => s,
            Err(e) => panic!("cannot start a private TLS Redis Sentinel set: {e}"),
        }
    }

    /// Starts a set whose data nodes require `data` as password and whose sentinels require
    /// `sentinel`, panicking when that is impossible.
    pub fn start_with_passwords(data: &str, sentinel: &str) -> RedisSentinel {
        match Self::try_start_inner(Some((data.to_string(), sentinel.to_string())), None) {
            Ok(s) => s,
            Err(e) => panic!("cannot start a private Redis Sentinel set: {e}"),
        }
    }

    fn try_start_inner(
        passwords: Option<(String, String)>,
        tls: Option<&super::TlsFiles>,
    ) -> Result<RedisSentinel, String> {
        if !redis_server_available() {
            return Err(INSTALL_HINT.to_string());
        }
        let bin = Path::new("redis-server");
        let mut data_args: Vec<&str> = match &passwords {
            Some((data, _)) => vec!["--requirepass", data, "--masterauth", data],
            None => vec![],
        };
        if tls.is_some() {
            data_args.extend(["--tls-replication", "yes"]);
        }
        let master = RedisServer::spawn_with(bin, None, &data_args, tls)?;
        let mport = master.port().to_string();
        let mut replica_args = vec!["--replicaof", "127.0.0.1", &mport];
        replica_args.extend(&data_args);
        let replica = RedisServer::spawn_with(bin, None, &replica_args, tls)?;
        let mut conf = format!(
            "sentinel monitor {name} 127.0.0.1 {mport} 2\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n",
            name = Self::MASTER_NAME
        );
        if let Some((data, sentinel)) = &passwords {
            conf.push_str(&format!(
                "sentinel auth-pass {} {data}\nrequirepass {sentinel}\nsentinel sentinel-pass {sentinel}\n",
                Self::MASTER_NAME
            ));
        }
        if tls.is_some() {
            // The sentinels reach the master and the replica over TLS as well.
            conf.push_str("tls-replication yes\n");
        }
        let mut sentinels = Vec::with_capacity(3);
        for _ in 0..3 {
            sentinels.push(RedisServer::spawn_with(
                bin,
                Some(&conf),
                &["--sentinel"],
                tls,
            )?);
        }
        let set = RedisSentinel {
            master,
            replica,
            sentinels,
            passwords,
            tls_ca: tls.map(|t| t.ca_path()),
        };
        settle("the sentinel set", || set.settled())?;
        Ok(set)
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let scheme = if self.tls_ca.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!("{scheme}://{}/{}", hosts.join(","), Self::MASTER_NAME)
    }

    /// The port of the master as sentinel `port` names it.
    fn master_addr(&self, port: u16) -> Result<u16, String> {
        let args = [
            "SENTINEL",
            "GET-MASTER-ADDR-BY-NAME",
            RedisSentinel::MASTER_NAME,
        ];
        let named = match &self.tls_ca {
            Some(ca) => cli(port, ca, self.sentinel_password(), &args)?
                .lines()
                .nth(1)
                .map(str::to_string),
            None => query_value::<Vec<String>>(port, self.sentinel_password(), &args)?
                .get(1)
                .cloned(),
        };
        named.and_then(|p| p.parse().ok()).ok_or_else(|| {
            format!(
                "sentinel {port} does not know {}",
                RedisSentinel::MASTER_NAME
            )
        })
    }

    /// One command to a data node, its reply as text.
    fn data_query(&self, port: u16, args: &[&str]) -> Result<String, String> {
        let password = self.passwords.as_ref().map(|p| p.0.as_str());
        match &self.tls_ca {
            Some(ca) => cli(port, ca, password, args),
            None => query_auth(port, password, args),
        }
    }

    fn sentinel_password(&self) -> Option<&str> {
        self.passwords.as_ref().map(|p| p.1.as_str())
    }

    /// The ports of the three sentinels.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(RedisServer::port).collect()
    }

    /// The server that was the master at start.
    pub fn master(&mut self) -> &mut RedisServer {
        &mut self.master
    }

    /// The server that was the replica at start.
    pub fn replica(&mut self) -> &mut RedisServer {
        &mut self.replica
    }

    /// Fails the master over with `SENTINEL FAILOVER` (sent again while the sentinels answer
    /// that no replica is good yet, `NOGOODSLAVE`, or that a failover is in progress), and
    /// waits until every sentinel names the new master, the new master says it is one, and
    /// the old master replicates from it. Returns the new master's port.
    pub fn fail_over(&self) -> Result<u16, String> {
        let old = self.current_master_port()?;
        let port = self.sentinel_ports()[0];
        let deadline = Instant::now() + SETTLE;
        loop {
            match query_value::<String>(
                port,
                self.sentinel_password(),
                &["SENTINEL", "FAILOVER", Self::MASTER_NAME],
            ) {
                Ok(_) => break,
                Err(e)
                    if Instant::now() < deadline
                        && (e.contains("NOGOODSLAVE") || e.contains("INPROG")) =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(format!("SENTINEL FAILOVER: {e}")),
            }
        }
        let data_pw = self.passwords.as_ref().map(|p| p.0.as_str());
        settle("the sentinel failover", || {
            let mut new = None;
            for s in self.sentinel_ports() {
                let named = self.master_addr(s)?;
                if named == old {
                    return Err(format!("sentinel {s} still names {old}"));
                }
                new = Some(named);
            }
            let new = new.ok_or("no sentinel")?;
            let role = query_value::<Vec<redis::Value>>(new, data_pw, &["ROLE"])?;
            if !matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master") {
                return Err(format!("{new} is not master yet"));
            }
            let info = self.data_query(old, &["INFO", "replication"])?;
            if !info.contains(&format!("master_port:{new}")) {
                return Err(format!("the old master {old} does not follow {new} yet"));
            }
            Ok(())
        })?;
        self.current_master_port()
    }

    /// The port of the master as the first answering sentinel names it now.
    pub fn current_master_port(&self) -> Result<u16, String> {
        let mut last = String::from("no sentinel answered");
        for port in self.sentinel_ports() {
            match self.master_addr(port) {
                Ok(p) => return Ok(p),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Whether every sentinel names the master and the replica's link to it is up (else what
    /// is missing).
    fn settled(&self) -> Result<(), String> {
        for port in self.sentinel_ports() {
            let named = self.master_addr(port)?;
            if named != self.master.port() {
                return Err(format!("sentinel {port} names port {named} as master"));
            }
        }
        let info = self.data_query(self.replica.port(), &["INFO", "replication"])?;
        if !info.contains("master_link_status:up") {
            return Err("the replica is not in sync yet".into());
        }
        Ok(())
    }
}

/// Polls `settled` until it answers `Ok` or [`SETTLE`] has passed (then the last reason).
fn settle(what: &str, settled: impl Fn() -> Result<(), String>) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        match settled() {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() >= deadline => {
                return Err(format!("{what} did not settle within {SETTLE:?}: {why}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// One command to 127.0.0.1:`port` over TLS through `redis-cli` (the harness itself is built
/// without TLS), its reply as text, one element per line.
fn cli(port: u16, ca: &Path, password: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("--tls").arg("--cacert").arg(ca);
    if let Some(pw) = password {
        cmd.env("REDISCLI_AUTH", pw);
    }
    let out = cmd
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run redis-cli ({e}); {INSTALL_HINT}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() || text.starts_with("ERR") || text.contains("Could not connect") {
        return Err(format!("port {port}: {text}"));
    }
    Ok(text)
}

/// One command to 127.0.0.1:`port`, its reply as text.
fn query(port: u16, args: &[&str]) -> Result<String, String> {
    query_value(port, None, args)
}

fn query_auth(port: u16, password: Option<&str>, args: &[&str]) -> Result<String, String> {
    query_value(port, password, args)
}

/// One command to 127.0.0.1:`port` on a short-lived connection.
fn query_value<T: redis::FromRedisValue>(
    port: u16,
    password: Option<&str>,
    args: &[&str],
) -> Result<T, String> {
    let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
    let client = redis::Client::open(format!("redis://{auth}127.0.0.1:{port}"))
        .map_err(|e| format!("port {port}: {e}"))?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .map_err(|e| format!("port {port}: {e}"))?;
    let _ = con.set_read_timeout(Some(Duration::from_secs(2)));
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con).map_err(|e| format!("port {port}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_with_three_masters_and_three_replicas() {
        let cluster = RedisCluster::start();
        assert_eq!(cluster.masters().unwrap().len(), 3);
        for port in cluster.ports() {
            let info = query(port, &["CLUSTER", "INFO"]).unwrap();
            assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        }
        assert_eq!(cluster.seed_list_url().matches(',').count(), 5);
        let ports = cluster.ports();
        drop(cluster);
        assert!(
            ports.iter().all(|p| !super::super::ping(*p)),
            "a node outlived its cluster"
        );
    }

    #[test]
    fn a_sentinel_set_names_its_master_and_the_replica_follows() {
        let mut ha = RedisSentinel::start();
        let mport = ha.master().port();
        assert_eq!(ha.current_master_port().unwrap(), mport);
        assert_eq!(
            ha.url(),
            format!(
                "redis+sentinel://{}/mymaster",
                ha.sentinel_ports()
                    .iter()
                    .map(|p| format!("127.0.0.1:{p}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        );
        // A write on the master reaches the replica.
        let _: () = query_value(mport, None, &["SET", "k", "v"]).unwrap();
        let rport = ha.replica().port();
        let deadline = Instant::now() + Duration::from_secs(5);
        while query(rport, &["GET", "k"]).ok().as_deref() != Some("v") {
            assert!(Instant::now() < deadline, "the replica did not follow");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
