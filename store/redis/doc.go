// Package redis is sipwake's shared store on Redis, through go-redis v9's
// UniversalClient: one server, a Sentinel-managed primary, or a Cluster.
//
// Several sipwake nodes share one Redis: bindings, their token index, held
// calls, node heartbeats, stored MESSAGEs, delivery leases and events
// (Redis pub/sub) all live there. Every
// multi-key change of an AOR runs as one Lua script on keys that share the
// AOR's hash tag, so it is atomic in a Cluster as well. With a single
// server or a Sentinel-managed primary that script also maintains the
// token index and publishes the events, so each write is one round trip;
// with a Cluster those follow in further round trips. Held calls share the
// fixed hash tag {held}, so each held-call script (claims included) is
// atomic on one slot; stored messages share {msg} the same way (puts with
// de-duplication, acknowledgements), and registrations {reg} (conditional
// writes, claims of the due schedule). A stored message outlives a Redis
// restart only as durably as the server is configured: README.md says
// what appendfsync always, everysec with WAIT (Options.WaitReplicas) and no
// AOF each give, and CheckDurability reports the server's settings.
// README.md also describes the key layout, the write paths and the
// connection pool.
package redis
