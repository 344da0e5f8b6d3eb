//! Script calls built straight into command buffers.
//!
//! redis-rs's `ScriptInvocation` keeps every key and argument as a `Vec<u8>` of its own and
//! copies them all once more into the command it sends. An acknowledgement of 70 tasks passes
//! ~360 keys and arguments (ids, tokens, two index bucket keys per id), so that cost more
//! allocations than the rest of the client's work on the batch. [`Call`] writes keys and
//! arguments into two [`Cmd`] buffers (contiguous bytes, no allocation per argument; a key
//! written through `writer_for_next_arg` costs no `String` either) and joins them into one
//! `EVALSHA` when invoked. The script is loaded on `NOSCRIPT`, as redis-rs does.

use redis::{Arg, Cmd, FromRedisValue, RedisResult, Script, ToRedisArgs};

/// A Lua script of the broker (the registry in `mod.rs`).
pub(crate) struct Lua(Script);

impl Lua {
    pub fn new(code: &str) -> Lua {
        Lua(Script::new(code))
    }

    /// An empty call of this script.
    pub fn prepare_invoke(&self) -> Call<'_> {
        Call {
            script: &self.0,
            keys: Cmd::with_capacity(16, 512),
            args: Cmd::with_capacity(16, 512),
        }
    }

    /// A call with its first key.
    pub fn key<T: ToRedisArgs>(&self, key: T) -> Call<'_> {
        let mut call = self.prepare_invoke();
        call.key(key);
        call
    }
}

/// The keys and arguments of one call of a [`Lua`] script.
pub(crate) struct Call<'a> {
    script: &'a Script,
    keys: Cmd,
    args: Cmd,
}

impl Call<'_> {
    /// Appends a key (`KEYS[i]`).
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        key.write_redis_args(&mut self.keys);
        self
    }

    /// Appends several keys in order (a block of keys such as the group block).
    pub fn keys<T: ToRedisArgs>(&mut self, keys: &[T]) -> &mut Self {
        for k in keys {
            self.key(k);
        }
        self
    }

    /// Appends an argument (`ARGV[i]`).
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        arg.write_redis_args(&mut self.args);
        self
    }

    /// The `EVALSHA` command of this call (for a pipeline; the caller handles `NOSCRIPT`).
    pub fn cmd(&self) -> Cmd {
        let keys = self.keys.args_iter();
        let args = self.args.args_iter();
        let bytes: usize = keys
            .clone()
            .chain(args.clone())
            .map(|a| match a {
                Arg::Simple(b) => b.len(),
                _ => 0,
            })
            .sum();
        let mut cmd = Cmd::with_capacity(3 + keys.len() + args.len(), bytes + 64);
        cmd.arg("EVALSHA")
            .arg(self.script.get_hash())
            .arg(keys.len());
        for a in keys.chain(args) {
            if let Arg::Simple(b) = a {
                cmd.arg(b);
            }
        }
        cmd
    }

    /// Runs the script and then `WAIT replicas timeout` on the same connection, as one
    /// pipeline, so the wait covers this very write (a separate `WAIT` could reach another
    /// connection after a reconnect or a failover, and confirm nothing). Returns the script's
    /// reply and how many replicas confirmed.
    pub async fn invoke_waiting<T: FromRedisValue>(
        &self,
        con: &mut impl redis::aio::ConnectionLike,
        replicas: u32,
        timeout: std::time::Duration,
    ) -> RedisResult<(T, i64)> {
        let mut p = redis::pipe();
        p.add_command(self.cmd())
            .cmd("WAIT")
            .arg(replicas)
            .arg(timeout.as_millis().max(1) as u64);
        match p.query_async(con).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.load_async(con).await?;
                p.query_async(con).await
            }
            r => r,
        }
    }

    /// Runs the script (loading it first when Redis does not know it).
    pub async fn invoke_async<T: FromRedisValue>(
        &self,
        con: &mut impl redis::aio::ConnectionLike,
    ) -> RedisResult<T> {
        let cmd = self.cmd();
        match cmd.query_async(con).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                self.script.load_async(con).await?;
                cmd.query_async(con).await
            }
            r => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::RedisServer;

    #[tokio::test]
    async fn a_call_passes_its_keys_and_arguments_in_order_and_loads_the_script() {
        let redis = RedisServer::start();
        let client = redis::Client::open(redis.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let lua = Lua::new("return {#KEYS, KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]}");
        let mut call = lua.key("k1");
        call.arg(7u64)
            .key(&b"k\x002"[..])
            .arg("")
            .arg(&[0u8, 255][..]);
        // Unknown to this fresh server: NOSCRIPT, then loaded and run.
        let v: (u64, Vec<u8>, Vec<u8>, String, Vec<u8>, Vec<u8>) =
            call.invoke_async(&mut c).await.unwrap();
        assert_eq!(
            v,
            (
                2,
                b"k1".to_vec(),
                b"k\x002".to_vec(),
                "7".into(),
                vec![],
                vec![0, 255]
            )
        );
    }
}
