//! The hash map of the proxy path's lookups: the caches a call reads (principals,
//! candidates, data keys, demo first use, prompt-guard overrides), each provider's origin
//! and the outbound pool's connections by origin. A call made seven such lookups, and
//! std's SipHash cost about 2,200 instructions of them (callgrind, BENCHMARKS.md round
//! seven); foldhash costs a fraction of that.
//!
//! foldhash is seeded per process, but not from a cryptographic source, and its authors
//! call it only minimally resistant to a flood of chosen colliding keys. So it is used
//! only for maps that nobody unauthenticated can insert into: keys keygate chooses (ids,
//! configured origins), SHA-256 digests stored after authentication succeeded, and
//! values an authenticated owner sets (a Bedrock credential's region names its host).
//! Each is bounded in size or by configuration. A map an anonymous client can fill
//! stays on std's hasher.

/// A `HashMap` on foldhash's seeded hasher (see the module's documentation for where
/// it may be used).
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
