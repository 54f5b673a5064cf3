package store

import (
	"context"
	"sort"
	"time"
)

// Registration states, as Registration.State and the
// sipwake_registrar_upstream_registrations{state} gauge name them.
const (
	// RegActive: refreshed on schedule.
	RegActive = "active"
	// RegBackingOff: the last refresh failed for a transient reason
	// (timeout, 408, 5xx); it is retried with backoff.
	RegBackingOff = "backing_off"
	// RegNeedsLogin: the PBX refused sipwake's credentials (401/403) too
	// many times in a row; nothing is sent until the device registers
	// again by itself.
	RegNeedsLogin = "needs_login"
	// RegPushOnly: sipwake does not refresh the PBX registration itself
	// (pass-through mode), it only sends the device refresh pushes.
	RegPushOnly = "push_only"
)

// Registration is what sipwake does for one sipwake contact between the
// device's own REGISTERs: refresh pushes to the device, and, in on-behalf
// mode, the REGISTERs that keep the contact alive at the PBX. It is keyed
// by the contact's token: a binding's token (one per device), or an AOR's
// token when every device of the AOR shares one contact at the PBX.
type Registration struct {
	// Token is the user part of the sipwake contact at the PBX; the key.
	Token string `json:"token"`
	// AOR is the normalised address of record.
	AOR string `json:"aor"`
	// Instance is the device (Binding.Instance); empty for a contact
	// shared by every device of the AOR.
	Instance string `json:"instance,omitempty"`
	// OnBehalf is set when sipwake refreshes the PBX registration itself;
	// otherwise only refresh pushes are sent.
	OnBehalf bool `json:"on_behalf,omitempty"`
	// Transport is the transport towards the PBX the contact was
	// registered over ("udp", "tcp", "tls").
	Transport string `json:"transport,omitempty"`
	// CallID and CSeq are those of the last REGISTER sipwake sent for the
	// contact itself (never the device's own); CSeq only grows.
	CallID string `json:"call_id,omitempty"`
	CSeq   uint32 `json:"cseq,omitempty"`
	// Expires is when the PBX's registration of the contact lapses.
	Expires time.Time `json:"expires"`
	// Granted is the expiry the PBX last granted.
	Granted time.Duration `json:"granted,omitempty"`
	// DeviceExpires is when the device's own registration with sipwake
	// lapses; LastSeen is when the device last registered by itself.
	DeviceExpires time.Time `json:"device_expires"`
	LastSeen      time.Time `json:"last_seen"`
	// RefreshAt is when sipwake next refreshes the PBX registration
	// (on-behalf only); zero when none is planned.
	RefreshAt time.Time `json:"refresh_at,omitempty"`
	// Due is when the next action falls due (refresh, push, clean-up).
	Due time.Time `json:"due"`
	// State is RegActive, RegBackingOff, RegNeedsLogin or RegPushOnly.
	State string `json:"state"`
	// Failures counts failed refreshes in a row; AuthFailures those of
	// them the PBX refused with 401, 403 or 407.
	Failures     int `json:"failures,omitempty"`
	AuthFailures int `json:"auth_failures,omitempty"`
	// LastPush is when the device was last sent a refresh push.
	LastPush time.Time `json:"last_push,omitempty"`
	// Gen is the record's generation: every write adds one, and a
	// conditional write fails when the stored Gen differs (see
	// PutRegistration).
	Gen uint64 `json:"gen"`
}

// RegistrationFilter narrows ListRegistrations.
type RegistrationFilter struct {
	// AOR, when set, must match.
	AOR string
	// Limit caps the number returned (0 = no cap).
	Limit int
}

// Registrations keeps the Registration records and the schedule of their
// Due times. Tokens and AORs are compared as raw bytes.
type Registrations interface {
	// PutRegistration stores r with Gen set to r.Gen+1 and returns the new
	// Gen. With check set it stores only when the stored record's Gen
	// equals r.Gen (an absent record counts as Gen 0), else it returns
	// ErrConflict and stores nothing; without check it replaces whatever
	// is stored (Gen = stored Gen + 1 then, 1 for an absent record,
	// whatever r.Gen says). r.Token and r.AOR must not be empty. The
	// record is scheduled at r.Due: its schedule entry moves there, also
	// when a ClaimDue lease on it is still running.
	PutRegistration(ctx context.Context, r Registration, check bool) (gen uint64, err error)
	// Registration returns one record; ErrNotFound when absent.
	Registration(ctx context.Context, token string) (Registration, error)
	// DeleteRegistration removes a record and its schedule entry;
	// ErrNotFound when absent.
	DeleteRegistration(ctx context.Context, token string) error
	// ListRegistrations lists records sorted by AOR then Token (byte
	// order), at most f.Limit of them.
	ListRegistrations(ctx context.Context, f RegistrationFilter) ([]Registration, error)
	// ClaimDue returns at most limit records whose schedule entry is not
	// after now, earliest entry first (ties by Token), and atomically
	// moves each one's schedule entry (not the record) to now+lease, so
	// that no other node claims it before the lease runs out (from
	// now+lease on it is due again unless it was written meanwhile). A
	// record's schedule entry is its Due as last written by
	// PutRegistration, or the end of the lease of the last ClaimDue that
	// returned it. The returned records are as stored (their Due and Gen
	// unchanged); a node that handled one writes it back with a new Due.
	// limit and lease must be positive. The Redis backend keeps schedule
	// entries to the millisecond (bbolt: nanosecond).
	ClaimDue(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]Registration, error)
	// CountRegistrations counts records per State (raw bytes, "" too).
	// A state without records is absent from the map, never 0; with no
	// records the map is empty, not nil.
	CountRegistrations(ctx context.Context) (map[string]int, error)
}

// Account holds the sealed credentials sipwake answers the PBX's
// challenges with, for one AOR (on-behalf mode). The store keeps Sealed
// as opaque bytes: the registrar encrypts it (AES-256-GCM, the AOR as
// associated data) before it reaches the store.
type Account struct {
	// AOR is the normalised address of record; the key.
	AOR string `json:"aor"`
	// KeyID names the key Sealed is encrypted under.
	KeyID string `json:"key_id"`
	// Sealed is the encrypted credentials.
	Sealed []byte `json:"sealed"`
	// Realms lists the realms the credentials cover ("" = the realm the
	// PBX challenges with) and Algorithms the digest algorithms (MD5,
	// SHA-256): not secret, shown by the admin API.
	Realms     []string `json:"realms,omitempty"`
	Algorithms []string `json:"algorithms,omitempty"`
	// Updated is when the record was last written.
	Updated time.Time `json:"updated"`
}

// Accounts keeps on-behalf credentials. AORs are compared as raw bytes.
type Accounts interface {
	// PutAccount inserts or replaces the account of a.AOR (not empty).
	PutAccount(ctx context.Context, a Account) error
	// Account returns one account; ErrNotFound when absent.
	Account(ctx context.Context, aor string) (Account, error)
	// DeleteAccount removes an account; ErrNotFound when absent.
	DeleteAccount(ctx context.Context, aor string) error
	// ListAccounts lists every account sorted by AOR.
	ListAccounts(ctx context.Context) ([]Account, error)
}

// SortRegistrations orders records as ListRegistrations returns them: by
// AOR, then Token.
func SortRegistrations(rs []Registration) {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].AOR != rs[j].AOR {
			return rs[i].AOR < rs[j].AOR
		}
		return rs[i].Token < rs[j].Token
	})
}
