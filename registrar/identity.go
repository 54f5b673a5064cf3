package registrar

// Identities: the normalised address of record a binding is filed under, the
// device identity that makes one binding per device, and the opaque token in
// sipwake's masqueraded contact.

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/store"
)

// Errors returned by NormalizeAOR; compare with errors.Is.
var (
	// ErrBadAOR: the address of record cannot be used (no user part, bad
	// host, broken escape, or not a SIP URI at all).
	ErrBadAOR = errors.New("registrar: invalid address of record")
	// ErrUnsupportedScheme: the address of record is not a sip: or sips:
	// URI (tel:, mailto:, isbn:, ...). It is also an ErrBadAOR. RFC 3261
	// §10.2 requires a SIP or SIPS URI in the To of a REGISTER; RFC 4475
	// §3.3.4 (unksm2) expects a registrar to refuse anything else (400).
	ErrUnsupportedScheme = fmt.Errorf("%w: not a sip or sips uri", ErrBadAOR)
)

// NormalizeAOR returns the key a binding is filed under, "sip:user@host"
// (store.Binding.AOR), from the To URI of a REGISTER.
//
// Like Kamailio's usrloc, which keys on user@domain, it keeps only the user
// and the host:
//   - the scheme must be sip or sips (else ErrUnsupportedScheme); sips is
//     written sip, so a device registering over TLS and one over UDP share
//     the AOR;
//   - password, port, URI parameters and headers are dropped;
//   - the host is lower-cased (RFC 3261 §19.1.4: hosts compare
//     case-insensitively) and must be a plausible host name or IP literal;
//   - the user is compared case-sensitively, as RFC 3261 §19.1.4 says, and
//     is put in one canonical escaped form: every escape is decoded, then
//     only characters that the user grammar does not allow unescaped are
//     escaped again, with upper-case hex ("%61lice" and "alice" are the same
//     AOR; "a%40b" stays escaped).
//
// An empty user part is refused (ErrBadAOR), as Kamailio's registrar does.
func NormalizeAOR(u sip.Uri) (string, error) {
	if !isSIPScheme(u.Scheme) || u.Raw() != "" {
		return "", ErrUnsupportedScheme
	}
	if u.Wildcard {
		return "", fmt.Errorf("%w: wildcard", ErrBadAOR)
	}
	if u.User == "" {
		return "", fmt.Errorf("%w: no user part", ErrBadAOR)
	}
	user, ok := canonicalUser(u.User)
	if !ok {
		return "", fmt.Errorf("%w: malformed user part", ErrBadAOR)
	}
	if !isHostString(u.Host) {
		return "", fmt.Errorf("%w: malformed host", ErrBadAOR)
	}
	return "sip:" + user + "@" + asciiLower(u.Host), nil
}

func isSIPScheme(s string) bool {
	return s == "" || strings.EqualFold(s, "sip") || strings.EqualFold(s, "sips")
}

// isUserChar reports the characters RFC 3261 §25.1 allows unescaped in the
// user part: unreserved and user-unreserved.
func isUserChar(c byte) bool {
	if isAlnumByte(c) {
		return true
	}
	switch c {
	case '-', '_', '.', '!', '~', '*', '\'', '(', ')', // mark
		'&', '=', '+', '$', ',', ';', '?', '/': // user-unreserved
		return true
	}
	return false
}

// canonicalUser decodes every escape of a user part and escapes again only
// what must be. It returns s itself when s is already canonical.
func canonicalUser(s string) (string, bool) {
	canonical := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '%' || !isUserChar(c) {
			canonical = false
			break
		}
	}
	if canonical {
		return s, true
	}
	const hexUpper = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", false
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		}
		if isUserChar(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hexUpper[c>>4], hexUpper[c&0xf])
		}
	}
	return string(b), true
}

// isHostString accepts host names (letters, digits, "-", "_", "."), IPv4
// and bracketed IPv6 literals; it refuses anything that could smuggle a
// separator into a key ("@", "/", ";", spaces, ...).
func isHostString(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	if h[0] == '[' {
		if len(h) < 3 || h[len(h)-1] != ']' {
			return false
		}
		for i := 1; i < len(h)-1; i++ {
			if c := h[i]; !isHex(c) && c != ':' && c != '.' {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !isAlnumByte(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// asciiLower lower-cases ASCII letters, allocating only when there is one.
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// maxInstanceLen bounds a +sip.instance kept as is; longer ones are hashed.
const maxInstanceLen = 256

// DeviceIdentity returns store.Binding.Instance, the identity that gives one
// binding per device under an AOR. In order of preference:
//
//   - the +sip.instance Contact parameter (RFC 5626), given raw as sipgo
//     returns it ("\"<urn:uuid:...>\""): quotes and angle brackets removed,
//     e.g. "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"; a urn:uuid is
//     lower-cased (UUIDs compare case-insensitively). A value that is not a
//     URN is prefixed "instance:" so it can never collide with the two forms
//     below; one that is too long or holds control characters becomes
//     "instance:" and a hash of it;
//   - else, for a device with a push token, "pn:" and the first 32 hex digits
//     of the SHA-256 of push.Token: stable across re-registrations from any
//     address, without putting the secret token in a key that is logged
//     and shown by the admin API;
//   - else "contact:" and the Contact URI in a canonical form: scheme and
//     host lower-cased, user escaped canonically, port kept, push
//     parameters removed, other URI parameters sorted by lower-cased name,
//     URI headers dropped.
func DeviceIdentity(sipInstance string, push *store.PushTarget, contact sip.Uri) string {
	if id := instanceIdentity(sipInstance); id != "" {
		return id
	}
	if push != nil && push.Token != "" {
		return "pn:" + hashHex(push.Token)
	}
	return "contact:" + canonicalContact(&contact)
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

func instanceIdentity(raw string) string {
	v := trimLWS(unquote(trimLWS(raw)))
	if len(v) >= 2 && v[0] == '<' && v[len(v)-1] == '>' {
		v = trimLWS(v[1 : len(v)-1])
	}
	if v == "" {
		return ""
	}
	if len(v) > maxInstanceLen || !isPrintable(v) {
		return "instance:" + hashHex(v)
	}
	if len(v) >= 9 && strings.EqualFold(v[:9], "urn:uuid:") {
		return strings.ToLower(v)
	}
	if len(v) >= 4 && strings.EqualFold(v[:4], "urn:") {
		return strings.Clone(v)
	}
	return "instance:" + v
}

// canonicalContact renders a Contact URI for DeviceIdentity.
func canonicalContact(u *sip.Uri) string {
	var b strings.Builder
	scheme := asciiLower(u.Scheme)
	if scheme == "" {
		scheme = "sip"
	}
	b.WriteString(scheme)
	b.WriteByte(':')
	if raw := u.Raw(); raw != "" {
		b.WriteString(raw)
		return b.String()
	}
	if u.User != "" {
		user, ok := canonicalUser(u.User)
		if !ok {
			user = u.User
		}
		b.WriteString(user)
		b.WriteByte('@')
	}
	b.WriteString(asciiLower(u.Host))
	if u.Port > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(u.Port))
	}
	params := make([]sip.HeaderKV, 0, len(u.UriParams))
	for _, kv := range u.UriParams {
		if classify(kv.K) != slotNone {
			continue
		}
		params = append(params, sip.HeaderKV{K: asciiLower(trimLWS(kv.K)), V: kv.V})
	}
	slices.SortFunc(params, func(a, b sip.HeaderKV) int {
		if c := strings.Compare(a.K, b.K); c != 0 {
			return c
		}
		return strings.Compare(a.V, b.V)
	})
	for _, kv := range params {
		b.WriteByte(';')
		b.WriteString(kv.K)
		if kv.V != "" {
			b.WriteByte('=')
			b.WriteString(kv.V)
		}
	}
	return b.String()
}

// bindingTokenEncoding is lower-case RFC 4648 base32 without padding: only
// a-z and 2-7, safe in a SIP user part, a URI parameter and a URL path.
var bindingTokenEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// bindingTokenLen is the length of a NewBindingToken: 128 bits in base32.
const bindingTokenLen = 26

// NewBindingToken returns a fresh store.Binding.Token: 128 bits from
// crypto/rand as 26 lower-case base32 characters (a-z, 2-7).
func NewBindingToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
	return bindingTokenEncoding.EncodeToString(b[:])
}

// BindingToken derives the binding token of a device from a secret key:
// HMAC-SHA256(key, aor NUL identity), the first 128 bits, in the same
// encoding as NewBindingToken. The same device under the same AOR always
// gets the same token, so its contact at the PBX is replaced rather than
// duplicated when it registers again, on any node and after restarts,
// with no store lookup; without the key it cannot be guessed.
func BindingToken(key []byte, aor, identity string) string {
	return bindingToken(hmac.New(sha256.New, key), aor, identity)
}

func bindingToken(m hash.Hash, aor, identity string) string {
	_, _ = io.WriteString(m, aor)
	_, _ = m.Write([]byte{0})
	_, _ = io.WriteString(m, identity)
	var sum [sha256.Size]byte
	return bindingTokenEncoding.EncodeToString(m.Sum(sum[:0])[:16])
}

// tokenMACs derives binding tokens (BindingToken) with one key, reusing
// its HMAC states: a fresh one costs two hash states and two hashed
// blocks, and every REGISTER needs a token.
type tokenMACs struct {
	pool sync.Pool // of hash.Hash
}

func newTokenMACs(key []byte) *tokenMACs {
	t := &tokenMACs{}
	t.pool.New = func() any { return hmac.New(sha256.New, key) }
	return t
}

// token is BindingToken(key, aor, identity).
func (t *tokenMACs) token(aor, identity string) string {
	m := t.pool.Get().(hash.Hash)
	m.Reset()
	tok := bindingToken(m, aor, identity)
	t.pool.Put(m)
	return tok
}

// IsBindingToken reports whether s has the shape of a NewBindingToken, so a
// Request-URI that cannot be one is refused without a store lookup.
func IsBindingToken(s string) bool {
	if len(s) != bindingTokenLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}
