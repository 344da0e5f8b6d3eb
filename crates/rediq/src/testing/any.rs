//! One test suite, three topologies: [`Topology`] starts the one `REDIQ_TEST_TOPOLOGY` names
//! and hands out builders in the matching mode.

use super::{RedisCluster, RedisSentinel, RedisServer};

/// A private Redis of one of the three topologies, and builders pointed at it in the right
/// mode: what lets one test suite run on all three. [`Topology::from_env`] picks the topology
/// named by the `REDIQ_TEST_TOPOLOGY` environment variable (`standalone`, the default;
/// `cluster`; `sentinel`).
///
/// ```no_run
/// # async fn demo() -> rediq::Result<()> {
/// let redis = rediq::testing::Topology::from_env();
/// let client = redis.client().build().await?;
/// # let _ = client; Ok(()) }
/// ```
#[derive(Debug)]
pub enum Topology {
    /// One server.
    Standalone(RedisServer),
    /// Three masters, three replicas.
    Cluster(RedisCluster),
    /// A master, a replica and three sentinels.
    Sentinel(RedisSentinel),
}

impl Topology {
    /// The variable [`Topology::from_env`] reads.
    pub const VARIABLE: &'static str = "REDIQ_TEST_TOPOLOGY";

    /// Starts the topology `REDIQ_TEST_TOPOLOGY` names (standalone when unset); panics on an
    /// unknown name or when it cannot start.
    pub fn from_env() -> Topology {
        let name = std::env::var(Self::VARIABLE).unwrap_or_default();
        Self::start(&name)
    }

    /// Starts `standalone` (or ""), `cluster` or `sentinel`.
    pub fn start(name: &str) -> Topology {
        match name {
            "" | "standalone" => Topology::Standalone(RedisServer::start()),
            "cluster" => Topology::Cluster(RedisCluster::start()),
            "sentinel" => Topology::Sentinel(RedisSentinel::start()),
            other => panic!(
                "{}={other:?}: expected standalone, cluster or sentinel",
                Self::VARIABLE
            ),
        }
    }

    /// `standalone`, `cluster` or `sentinel`.
    pub fn name(&self) -> &'static str {
        match self {
            Topology::Standalone(_) => "standalone",
            Topology::Cluster(_) => "cluster",
            Topology::Sentinel(_) => "sentinel",
        }
    }

    /// The URL a builder is given: the server's, the cluster's seed list, the sentinels'.
    pub fn url(&self) -> String {
        match self {
            Topology::Standalone(s) => s.url(),
            Topology::Cluster(c) => c.seed_list_url(),
            Topology::Sentinel(s) => s.url(),
        }
    }

    /// The URL of the node that holds the data now (the master under Sentinel); `None` on a
    /// cluster, whose data is spread over three masters.
    pub fn data_url(&self) -> Option<String> {
        match self {
            Topology::Standalone(s) => Some(s.url()),
            Topology::Cluster(_) => None,
            Topology::Sentinel(s) => s
                .current_master_port()
                .ok()
                .map(|p| format!("redis://127.0.0.1:{p}")),
        }
    }

    /// The URL of every node that holds data now: the server, the cluster's six nodes, the
    /// sentinel set's master.
    pub fn data_urls(&self) -> Vec<String> {
        match self {
            Topology::Cluster(c) => c.nodes.iter().map(RedisServer::url).collect(),
            other => other.data_url().into_iter().collect(),
        }
    }

    /// The servers that hold data (not the sentinels), to stop or freeze them all.
    pub fn data_servers(&mut self) -> Vec<&mut RedisServer> {
        match self {
            Topology::Standalone(s) => vec![s],
            Topology::Cluster(c) => c.nodes.iter_mut().collect(),
            Topology::Sentinel(s) => vec![&mut s.master, &mut s.replica],
        }
    }

    /// A client builder pointed at this Redis, in its mode.
    pub fn client(&self) -> crate::ClientBuilder {
        let b = crate::Client::builder().redis_url(self.url());
        match self {
            Topology::Standalone(_) => b,
            Topology::Cluster(_) => b.cluster_mode(),
            Topology::Sentinel(_) => b.sentinel_mode(),
        }
    }

    /// A server builder pointed at this Redis, in its mode.
    pub fn server(&self) -> crate::server::ServerBuilder {
        let b = crate::server::ServerBuilder::new().redis_url(self.url());
        match self {
            Topology::Standalone(_) => b,
            Topology::Cluster(_) => b.cluster_mode(),
            Topology::Sentinel(_) => b.sentinel_mode(),
        }
    }

    /// An inspector builder pointed at this Redis, in its mode.
    pub fn inspector(&self) -> crate::InspectorBuilder {
        let b = crate::Inspector::builder().redis_url(self.url());
        match self {
            Topology::Standalone(_) => b,
            Topology::Cluster(_) => b.cluster_mode(),
            Topology::Sentinel(_) => b.sentinel_mode(),
        }
    }
}
