// Package redis is sipwake's shared store on Redis, through go-redis v9's
// UniversalClient: one server, a Sentinel-managed primary, or a Cluster.
//
// Several sipwake nodes share one Redis: bindings, their token index, held
// calls, node heartbeats and events (Redis pub/sub) all live there. Every
// multi-key change of an AOR runs as one Lua script on keys that share the
// AOR's hash tag, so it is atomic in a Cluster as well. With a single
// server or a Sentinel-managed primary that script also maintains the
// token index and publishes the events, so each write is one round trip;
// with a Cluster those follow in further round trips. Held calls share the
// fixed hash tag {held}, so each held-call script (claims included) is
// atomic on one slot. README.md describes the key layout, the write paths,
// the connection pool and durability choices.
package redis
