// Package embedded is sipwake's single-node store on go.etcd.io/bbolt.
//
// It keeps bindings in one file that survives restarts and needs no server.
// Only one process may open the file (bbolt takes an exclusive file lock),
// so it serves one sipwake node: binding-change events are fanned out in
// process only. Use store/redis for several nodes.
//
// Layout of the file (all keys are raw bytes):
//
//	bindings  aorKey(aor) + instance        -> Binding as JSON
//	tokens    token                         -> aorKey(aor) + instance
//	expiry    8-byte big-endian unix nanos + aorKey(aor) + instance -> empty
//	secrets   name                          -> the secret's raw bytes
//
// aorKey escapes NUL as 0x00 0xFF and ends with 0x00 0x01, so a bucket
// cursor walks bindings sorted by AOR then instance, the keys of one AOR
// share a prefix that no other AOR starts with, and any byte is allowed in
// an AOR or an instance. The expiry bucket lets the background sweeper find
// expired bindings without reading every record.
package embedded
