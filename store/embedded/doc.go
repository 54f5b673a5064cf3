// Package embedded is sipwake's single-node store on go.etcd.io/bbolt.
//
// It keeps bindings in one file that survives restarts and needs no server.
// Only one process may open the file (bbolt takes an exclusive file lock),
// so it serves one sipwake node: binding-change events are fanned out in
// process only. Use store/redis for several nodes.
//
// Layout of the file (all keys are raw bytes):
//
//	bindings   aorKey(aor) + instance        -> Binding as JSON
//	tokens     token                         -> aorKey(aor) + instance
//	expiry     8-byte big-endian unix nanos + aorKey(aor) + instance -> empty
//	secrets    name                          -> the secret's raw bytes
//	held       held-call ID                  -> uvarint-prefixed AOR and Node, then the call as JSON
//	heldexpiry 8-byte big-endian unix nanos (Deadline + store.HeldRetention) + ID -> empty
//	nodes      node id                       -> 8-byte big-endian unix nanos when its heartbeat lapses
//	messages   message ID                    -> the message as JSON (strings as base64 bytes)
//	msgaor     aorKey(aor) + 8-byte big-endian unix nanos of Received + ID -> empty
//	msgarrival 8-byte big-endian unix nanos of Received + ID -> empty
//	msgexpiry  8-byte big-endian unix nanos of Expires + ID -> empty
//	leases     lease key                     -> 8-byte big-endian unix nanos when it lapses + holder
//	regs       registration token            -> 8-byte big-endian unix nanos of its schedule entry,
//	                                            uvarint-prefixed AOR, Instance and State, then the record as JSON
//	regdue     8-byte big-endian unix nanos of the schedule entry + token -> empty
//	regaor     aorKey(aor) + token           -> empty
//	regstates  's' + state                   -> 8-byte big-endian count of records in that state
//	accounts   AOR                           -> the account as JSON
//
// aorKey escapes NUL as 0x00 0xFF and ends with 0x00 0x01, so a bucket
// cursor walks bindings sorted by AOR then instance, the keys of one AOR
// share a prefix that no other AOR starts with, and any byte is allowed in
// an AOR or an instance. The expiry and heldexpiry buckets let the
// background sweeper find expired bindings and forgotten held calls
// without reading every record; msgaor and msgarrival walk stored
// messages in arrival order, msgexpiry finds the expired ones for the
// caller's sweeper (the store never deletes a message by itself). regdue
// is the registrations' schedule, which ClaimDue walks earliest first;
// regaor walks them by AOR then token; regstates keeps the per-state
// counts. Every change (ClearPush, ClaimHeld, Acknowledge, Lease,
// PutRegistration and ClaimDue included) is one bbolt write transaction,
// so it is atomic, and bbolt fsyncs it before it returns.
package embedded
