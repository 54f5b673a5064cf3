package store

import (
	"context"
	"errors"
	"sort"
	"time"
)

// Errors every Store returns for the same conditions; compare with errors.Is.
var (
	// ErrNotFound: the record asked for does not exist or has expired.
	ErrNotFound = errors.New("store: not found")
	// ErrTooManyBindings: adding the binding would exceed the per-AOR limit.
	ErrTooManyBindings = errors.New("store: too many bindings for aor")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrConflict: a conditional write found the record changed (another
	// node claimed a held call first).
	ErrConflict = errors.New("store: conflict")
)

// Flow names the connection that owns a device's TCP/TLS flow: the node that
// accepted it and that node's id for the connection (its remote address).
type Flow struct {
	Node string `json:"node"`
	Conn string `json:"conn"`
	// NodeURI is how other nodes reach the owning node over SIP (its
	// advertised address), so a request for the device goes through it.
	NodeURI string `json:"node_uri,omitempty"`
}

// PushTarget is how a device is woken. Built by the registrar from the
// Contact's push parameters (RFC 8599 or Linphone legacy); secrets inside
// (tokens) are never logged in full and never sent to the PBX.
type PushTarget struct {
	// Provider is the RFC 8599 pn-provider: apns, apns.dev, fcm, webpush.
	Provider string `json:"provider"`
	// Token is the primary device token (pn-prid). With Apple's
	// "remote&voip" form it is the VoIP token when one was given.
	Token string `json:"token"`
	// Param is pn-param: APNs "TEAMID.bundle.id[.voip]", FCM project id.
	Param string `json:"param,omitempty"`
	// PURR is the RFC 8599 pn-purr, when the device gave one.
	PURR string `json:"purr,omitempty"`
	// Types lists the push types the device accepts: voip, remote, ...
	Types []string `json:"types,omitempty"`
	// Tokens maps a push type to its token when the device gave one per
	// type (Apple "remote&voip" multi-token form).
	Tokens map[string]string `json:"tokens,omitempty"`
	// Legacy keeps Linphone legacy options (pn-msg-str, pn-call-str,
	// pn-silent, pn-timeout, ...) verbatim.
	Legacy map[string]string `json:"legacy,omitempty"`
}

// Upstream is the state of a device's registration at the PBX.
type Upstream struct {
	// CallID and CSeq of the last REGISTER sipwake sent upstream for it.
	CallID string `json:"call_id,omitempty"`
	CSeq   uint32 `json:"cseq,omitempty"`
	// Expires is when the PBX's registration lapses (granted expiry).
	Expires time.Time `json:"expires,omitempty"`
}

// Binding is one device's registration under an AOR.
type Binding struct {
	// AOR is the normalised address of record, "sip:user@domain".
	AOR string `json:"aor"`
	// Instance is the device identity: +sip.instance, else the push token,
	// else the Contact URI. One binding per (AOR, Instance).
	Instance string `json:"instance"`
	// SIPInstance is the raw +sip.instance value, when the device sent one.
	SIPInstance string `json:"sip_instance,omitempty"`
	// RegID is the RFC 5626 reg-id, 0 when absent.
	RegID int `json:"reg_id,omitempty"`
	// Contact is the device's Contact URI without push parameters.
	Contact string `json:"contact"`
	// Source is the address ("ip:port") the REGISTER came from.
	Source string `json:"source"`
	// Transport is udp, tcp, tls, ws or wss.
	Transport string `json:"transport"`
	// Flow is the connection that owns the device's flow (reliable
	// transports; for UDP the node that received the REGISTER).
	Flow Flow `json:"flow"`
	// Push is nil when the device gave no push parameters.
	Push *PushTarget `json:"push,omitempty"`
	// Token is the opaque, unguessable token in sipwake's masqueraded
	// contact for this binding; BindingByToken finds the binding from it.
	Token string `json:"token"`
	// Expires is when the device's registration lapses.
	Expires time.Time `json:"expires"`
	// Upstream is the registration state at the PBX.
	Upstream Upstream `json:"upstream"`
	// UserAgent is the device's User-Agent header.
	UserAgent string `json:"user_agent,omitempty"`
	// RefreshPush is set when the device wants a push before its
	// registration lapses (it sent +sip.pnsreg, RFC 8599 §4.1.1, or is a
	// legacy client that has no way to say).
	RefreshPush bool `json:"refresh_push,omitempty"`
	// LastSeen is when the device last registered.
	LastSeen time.Time `json:"last_seen"`
}

// Live reports whether the binding has not expired at now.
func (b *Binding) Live(now time.Time) bool { return now.Before(b.Expires) }

// EventKind says what happened to a binding.
type EventKind string

// Event kinds.
const (
	// EventBindingPut: a binding was stored (the PBX accepted the REGISTER).
	EventBindingPut EventKind = "put"
	// EventBindingDeleted: a binding was removed.
	EventBindingDeleted EventKind = "deleted"
	// EventHeldCancelled: a node received a CANCEL for a call another node
	// holds; Key is the held call's ID.
	EventHeldCancelled EventKind = "held_cancelled"
	// EventResync: the subscription was interrupted and is live again
	// (the Redis connection was re-established); events made meanwhile
	// may be lost, so the subscriber re-reads the state it depends on.
	// Only Kind is set; it is never published, only delivered.
	EventResync EventKind = "resync"
)

// Event is a change published to every node.
type Event struct {
	Kind     EventKind `json:"kind"`
	AOR      string    `json:"aor"`
	Instance string    `json:"instance"`
	// Node is the node that made the change.
	Node string `json:"node"`
	// Key names the record for events that are not about a binding
	// (the held call's ID for EventHeldCancelled).
	Key string `json:"key,omitempty"`
	// NoMessages, on an EventBindingPut, says the store saw no message
	// stored for the AOR in the same atomic step as the write, so a
	// subscriber need not look for messages to deliver. A store that
	// cannot tell cheaply leaves it false: then the subscriber looks.
	NoMessages bool `json:"no_messages,omitempty"`
}

// ListOptions filters ListBindings.
type ListOptions struct {
	// AOR, when set, limits the listing to that AOR.
	AOR string
	// Limit caps the number returned (0 = no cap).
	Limit int
}

// Bindings stores device registrations. Expired bindings are never
// returned; the store removes them by itself.
type Bindings interface {
	// PutBinding inserts or replaces the binding (AOR, Instance) atomically.
	// When a new instance would make the AOR hold more than max live
	// bindings (max > 0), it returns ErrTooManyBindings and stores nothing.
	// It reports whether it replaced a live binding of the same instance.
	// It also drops any other binding of the AOR whose Token equals b.Token.
	//
	// The limit counts the AOR's live bindings as they would be after the
	// put: bindings dropped for carrying the same Token do not count, and
	// replacing an existing live instance never fails with
	// ErrTooManyBindings (even when max was lowered since). An expired
	// binding under the same instance is not "replaced".
	// b.AOR and b.Instance must not be empty; both are compared as raw
	// bytes (any string, NUL and non-ASCII included). An empty Token
	// matches nothing. The store publishes EventBindingPut for b and
	// EventBindingDeleted for every binding dropped by Token.
	PutBinding(ctx context.Context, b Binding, max int) (replaced bool, err error)
	// DeleteBinding removes one binding; ErrNotFound when absent or
	// expired. It publishes EventBindingDeleted.
	DeleteBinding(ctx context.Context, aor, instance string) error
	// DeleteAOR removes every binding of the AOR and returns how many live
	// ones it removed (0 and no error when there were none). It publishes
	// one EventBindingDeleted per live binding removed.
	DeleteAOR(ctx context.Context, aor string) (int, error)
	// Bindings returns the live bindings of one AOR, oldest first: by
	// LastSeen ascending, then by Instance. An AOR without live bindings
	// gives an empty slice and no error.
	Bindings(ctx context.Context, aor string) ([]Binding, error)
	// BindingByToken finds a live binding by its contact token.
	BindingByToken(ctx context.Context, token string) (Binding, error)
	// ListBindings lists live bindings across AORs, sorted by AOR then
	// instance.
	ListBindings(ctx context.Context, opt ListOptions) ([]Binding, error)
	// CountBindings counts the live bindings by push provider (Push.
	// Provider; "" for bindings without a push target), without building
	// them: the bindings gauge runs it on every node.
	CountBindings(ctx context.Context) (map[string]int, error)
	// ClearPush removes the push target of binding (aor, instance) only
	// when its current Push.Token equals token, so that a permanent push
	// error cannot erase a token a fresh REGISTER just stored. It reports
	// whether it cleared anything; ErrNotFound when the binding is absent.
	// It publishes EventBindingPut when it changed the binding.
	ClearPush(ctx context.Context, aor, instance, token string) (bool, error)
}

// HeldCall is the small record of an INVITE held for a push, so that a
// restarted node or a peer can finish it instead of leaving the caller in
// silence.
type HeldCall struct {
	// ID is unique per held INVITE: its Call-ID and top Via branch.
	ID string `json:"id"`
	// CallID is the INVITE's Call-ID.
	CallID string `json:"call_id"`
	// AOR is the called address of record.
	AOR string `json:"aor"`
	// Node owns the call: it holds the server transaction.
	Node string `json:"node"`
	// Received is when the INVITE arrived; Deadline when the hold ends.
	Received time.Time `json:"received"`
	Deadline time.Time `json:"deadline"`
	// Instances lists the devices pushed for the call.
	Instances []string `json:"instances,omitempty"`
	// Source and Transport are where the INVITE came from; Request is the
	// INVITE as received (without its body), enough to answer it.
	Source    string `json:"source"`
	Transport string `json:"transport"`
	Request   []byte `json:"request,omitempty"`
	// Cancelled is set when the caller cancelled (a device may still be
	// told about the call, see wake.cancelled_call_delivery).
	Cancelled bool `json:"cancelled,omitempty"`
}

// HeldRetention is how long after its Deadline a held call is kept: a
// minute after the Deadline the store forgets it by itself.
const HeldRetention = time.Minute

// Kept reports whether the store still keeps the held call at now: until
// HeldRetention after its Deadline.
func (h *HeldCall) Kept(now time.Time) bool { return now.Before(h.Deadline.Add(HeldRetention)) }

// HeldFilter narrows ListHeld.
type HeldFilter struct {
	// AOR and Node, when set, must match.
	AOR  string
	Node string
}

// Held keeps held-INVITE records and node liveness. A held call's ID, AOR
// and Node are kept and compared as raw bytes (any byte allowed), and its
// Request byte for byte.
type Held interface {
	// PutHeld inserts or replaces a held call. The store forgets it by
	// itself a minute after its Deadline.
	PutHeld(ctx context.Context, h HeldCall) error
	// DeleteHeld removes a held call; ErrNotFound when absent.
	DeleteHeld(ctx context.Context, id string) error
	// ListHeld lists held calls (not yet forgotten), sorted by Received
	// then ID.
	ListHeld(ctx context.Context, f HeldFilter) ([]HeldCall, error)
	// ClaimHeld atomically moves a held call from node from to node to and
	// returns it as stored after the move; ErrNotFound when absent,
	// ErrConflict when its owner is not from.
	ClaimHeld(ctx context.Context, id, from, to string) (HeldCall, error)
	// Heartbeat records that node is alive for ttl.
	Heartbeat(ctx context.Context, node string, ttl time.Duration) error
	// NodeAlive reports whether node's last heartbeat has not lapsed.
	NodeAlive(ctx context.Context, node string) (bool, error)
}

// Events carries binding-change events between nodes.
type Events interface {
	// Subscribe delivers every binding-change event made from now on, by
	// any node, until ctx ends; the channel is closed then, and also when
	// the store is closed. Events are best effort (a subscriber that does
	// not keep up may miss some; each backend documents how) and carry no
	// ordering guarantee between different writers. A binding that simply
	// expires produces no event. A backend whose subscription can be
	// interrupted delivers EventResync once it is live again.
	Subscribe(ctx context.Context) (<-chan Event, error)
	// Publish sends an event to every subscriber, this node's included.
	Publish(ctx context.Context, e Event) error
}

// StoredMessage is a SIP MESSAGE accepted with 202 for devices that could
// not take it at once: kept until every target device acknowledged it
// (2xx) or it expired.
type StoredMessage struct {
	// ID identifies the message for de-duplication: derived from its
	// Call-ID, From tag and CSeq, so a retransmission or a PBX retry of
	// the same MESSAGE maps to the same ID.
	ID string `json:"id"`
	// AOR is the addressed AOR.
	AOR string `json:"aor"`
	// Received is when it arrived; Expires when it is given up.
	Received time.Time `json:"received"`
	Expires  time.Time `json:"expires"`
	// Request is the MESSAGE as received, headers and body.
	Request []byte `json:"request"`
	// Sender is the From URI (pushes are collapsed per sender).
	Sender string `json:"sender,omitempty"`
	// Pending lists the device instances that have not acknowledged it;
	// Delivered those that have.
	Pending   []string `json:"pending"`
	Delivered []string `json:"delivered,omitempty"`
	// Attempts counts delivery attempts (all devices).
	Attempts int `json:"attempts,omitempty"`
}

// Expired reports whether the message has expired at now: its Expires is
// not after now.
func (m *StoredMessage) Expired(now time.Time) bool { return !now.Before(m.Expires) }

// MessageFilter narrows ListMessages.
type MessageFilter struct {
	// AOR, when set, must match.
	AOR string
	// Expired: only messages whose Expires has passed (for the sweeper);
	// otherwise only live ones.
	Expired bool
	// Limit caps the number returned (0 = no cap).
	Limit int
}

// Messages keeps MESSAGEs accepted for sleeping devices. A write returns
// only once the backend has it as durably as it is configured to
// (bbolt: fsync; Redis: see store/redis/README.md).
type Messages interface {
	// PutMessage stores m unless a message with m.ID exists (a duplicate):
	// then it stores nothing and reports created false. m.ID, m.AOR and
	// m.Pending must not be empty.
	PutMessage(ctx context.Context, m StoredMessage) (created bool, err error)
	// Message returns one message (expired or not); ErrNotFound when
	// absent.
	Message(ctx context.Context, id string) (StoredMessage, error)
	// ListMessages lists messages in arrival order (Received, then ID).
	ListMessages(ctx context.Context, f MessageFilter) ([]StoredMessage, error)
	// MessagesFor returns the live messages still pending for one device
	// of an AOR, in arrival order, at most limit of them (0 = no cap): a
	// device with many waiting gets the first ones without every message
	// being read.
	MessagesFor(ctx context.Context, aor, instance string, limit int) ([]StoredMessage, error)
	// Acknowledge moves instance from message id's Pending to Delivered,
	// atomically, and deletes the message when no device is pending. It returns how many
	// remain; ErrNotFound when the message is absent.
	Acknowledge(ctx context.Context, id, instance string) (remaining int, err error)
	// AddPending adds instance to message id's Pending unless it is in
	// Pending or Delivered already (a device that registered for the AOR
	// after the message arrived, while the message still waits for
	// another device); ErrNotFound when the message is absent.
	AddPending(ctx context.Context, id, instance string) error
	// CountAttempt adds one to the message's Attempts.
	CountAttempt(ctx context.Context, id string) error
	// DeleteMessage removes a message; ErrNotFound when absent.
	DeleteMessage(ctx context.Context, id string) error
	// Lease takes or renews the lease named key for node, for ttl: true
	// when node holds it now, false when another node does. Used so that
	// two nodes do not deliver to one device at the same time.
	Lease(ctx context.Context, key, node string, ttl time.Duration) (bool, error)
	// ReleaseLease gives up node's lease on key (nothing when another
	// node holds it).
	ReleaseLease(ctx context.Context, key, node string) error
}

// Store is everything sipwake keeps.
type Store interface {
	Bindings
	Held
	Messages
	Registrations
	Accounts
	Events
	// Secret returns the named secret, creating it with n random bytes
	// (crypto/rand) if it does not exist yet; every node sharing the store
	// gets the same bytes, also after restarts. Concurrent first calls
	// agree on one value.
	//
	// It holds the keys that sign binding tokens and flow tokens, so that
	// every node and every restart derive the same tokens. A secret is
	// never changed or expired by the store: a call for an existing secret
	// returns the stored bytes even when n differs from their length (the
	// caller checks the length if it matters). name must not be empty (it
	// is compared as raw bytes) and n must be positive.
	Secret(ctx context.Context, name string, n int) ([]byte, error)
	// Ping reports whether the backend is reachable (readiness).
	Ping(ctx context.Context) error
	// Close releases the backend and closes every subscription channel.
	// It is safe to call more than once; after it, every method returns
	// ErrClosed.
	Close() error
}

// SortOldestFirst orders bindings as Bindings returns them: by LastSeen,
// then by instance.
func SortOldestFirst(bs []Binding) {
	sort.SliceStable(bs, func(i, j int) bool {
		if !bs[i].LastSeen.Equal(bs[j].LastSeen) {
			return bs[i].LastSeen.Before(bs[j].LastSeen)
		}
		return bs[i].Instance < bs[j].Instance
	})
}

// SortHeld orders held calls as ListHeld returns them: by Received, then
// by ID.
func SortHeld(hs []HeldCall) {
	sort.SliceStable(hs, func(i, j int) bool {
		if !hs[i].Received.Equal(hs[j].Received) {
			return hs[i].Received.Before(hs[j].Received)
		}
		return hs[i].ID < hs[j].ID
	})
}

// SortMessages orders stored messages as ListMessages and MessagesFor
// return them (arrival order): by Received, then by ID.
func SortMessages(ms []StoredMessage) {
	sort.SliceStable(ms, func(i, j int) bool {
		if !ms[i].Received.Equal(ms[j].Received) {
			return ms[i].Received.Before(ms[j].Received)
		}
		return ms[i].ID < ms[j].ID
	})
}
