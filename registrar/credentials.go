package registrar

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/sipwake/sipwake/store"
)

// Digest algorithms an HA1 is computed for (RFC 7616).
const (
	AlgMD5    = "MD5"
	AlgSHA256 = "SHA-256"
)

// ErrNoKey: credentials cannot be sealed or opened because no key is
// configured (registrar.credentials.key_file).
var ErrNoKey = errors.New("registrar: no credentials key configured")

// ErrUnsealable: a sealed account does not open under any configured key
// for its AOR (wrong key, tampered record, or a record moved to another
// AOR).
var ErrUnsealable = errors.New("registrar: credentials do not decrypt for this aor")

// Credential is one HA1: the digest of "username:realm:password" for one
// realm and one algorithm, as lowercase hex.
type Credential struct {
	// Realm is the digest realm it is valid for; "" applies to whatever
	// realm the PBX challenges with.
	Realm string `json:"realm,omitempty"`
	// Algorithm is AlgMD5 or AlgSHA256.
	Algorithm string `json:"algorithm"`
	// HA1 is the lowercase hex digest.
	HA1 string `json:"ha1"`
}

// Credentials are what sipwake answers the PBX's challenges with for one
// AOR. They exist only in memory and sealed in the store.
type Credentials struct {
	// Username is the digest user name (default: the AOR's user part).
	Username string `json:"username"`
	// HA1 lists one entry per realm and algorithm.
	HA1 []Credential `json:"ha1"`
}

// For returns the HA1 for a challenge's realm and algorithm: an exact
// realm first, else one given for any realm.
func (c Credentials) For(realm, algorithm string) (string, bool) {
	alg := canonicalAlgorithm(algorithm)
	var any string
	for _, h := range c.HA1 {
		if h.Algorithm != alg {
			continue
		}
		if h.Realm == realm {
			return h.HA1, true
		}
		if h.Realm == "" && any == "" {
			any = h.HA1
		}
	}
	return any, any != ""
}

// String hides every HA1, so Credentials never reach a log in full.
func (c Credentials) String() string {
	return fmt.Sprintf("credentials(user=%s, %d ha1)", c.Username, len(c.HA1))
}

// HA1 computes the hex HA1 of user:realm:password for algorithm (MD5 or
// SHA-256). The password is not kept anywhere.
func HA1(algorithm, user, realm, password string) (string, error) {
	h, err := newHash(algorithm)
	if err != nil {
		return "", err
	}
	h.Write([]byte(user + ":" + realm + ":" + password))
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ValidHA1 reports whether s is a lowercase hex digest of the length
// algorithm gives.
func ValidHA1(algorithm, s string) bool {
	n := 32
	if canonicalAlgorithm(algorithm) == AlgSHA256 {
		n = 64
	}
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// canonicalAlgorithm maps a challenge's algorithm to AlgMD5 or AlgSHA256
// (the -sess variants use the same HA1); "" is MD5 (RFC 2617).
func canonicalAlgorithm(a string) string {
	a = strings.ToUpper(strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(a), "-sess"), "-SESS"))
	switch a {
	case "", "MD5":
		return AlgMD5
	case "SHA-256":
		return AlgSHA256
	}
	return a
}

func newHash(algorithm string) (hash.Hash, error) {
	switch canonicalAlgorithm(algorithm) {
	case AlgMD5:
		return md5.New(), nil
	case AlgSHA256:
		return sha256.New(), nil
	}
	return nil, fmt.Errorf("registrar: unsupported digest algorithm %q", algorithm)
}

// Keyring holds the AES-256 keys credentials are sealed with: the current
// key seals, every key opens (so records sealed under a previous key keep
// working until Reseal moves them to the current one).
type Keyring struct {
	current string
	keys    map[string]cipher.AEAD
}

// KeyID names a key: the first 8 bytes of a SHA-256 over it, in hex.
// Stored with each record so the right key opens it.
func KeyID(key []byte) string {
	s := sha256.Sum256(append([]byte("sipwake credentials key\x00"), key...))
	return hex.EncodeToString(s[:8])
}

// NewKeyring builds a keyring; current seals new records, old only open
// existing ones. Every key is 32 bytes.
func NewKeyring(current []byte, old ...[]byte) (*Keyring, error) {
	k := &Keyring{keys: map[string]cipher.AEAD{}}
	for i, key := range append([][]byte{current}, old...) {
		if len(key) != 32 {
			return nil, fmt.Errorf("registrar: credentials key %d is %d bytes, want 32", i, len(key))
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("registrar: credentials key: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("registrar: credentials key: %w", err)
		}
		id := KeyID(key)
		if i == 0 {
			k.current = id
		}
		k.keys[id] = aead
	}
	return k, nil
}

// LoadKeyring reads the current key file and older ones. A key file
// holds 32 bytes: raw, or as 64 hex digits, or base64 (surrounding
// whitespace ignored).
func LoadKeyring(currentFile string, oldFiles []string) (*Keyring, error) {
	cur, err := ReadKeyFile(currentFile)
	if err != nil {
		return nil, err
	}
	var old [][]byte
	for _, f := range oldFiles {
		k, err := ReadKeyFile(f)
		if err != nil {
			return nil, err
		}
		old = append(old, k)
	}
	return NewKeyring(cur, old...)
}

// ReadKeyFile reads one credentials key file (see LoadKeyring).
func ReadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("registrar: credentials key: %w", err)
	}
	if len(b) == 32 {
		return b, nil
	}
	s := strings.TrimSpace(string(b))
	if k, err := hex.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(s); err == nil && len(k) == 32 {
			return k, nil
		}
	}
	return nil, fmt.Errorf("registrar: credentials key %s: not 32 bytes (raw, 64 hex digits or base64)", path)
}

// CurrentKeyID is the id of the key new records are sealed with.
func (k *Keyring) CurrentKeyID() string { return k.current }

// Seal encrypts c for aor under the current key (AES-256-GCM, random
// nonce, the AOR as associated data) into an account record.
func (k *Keyring) Seal(aor string, c Credentials, now time.Time) (store.Account, error) {
	if k == nil {
		return store.Account{}, ErrNoKey
	}
	plain, err := json.Marshal(c)
	if err != nil {
		return store.Account{}, err
	}
	aead := k.keys[k.current]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return store.Account{}, err
	}
	sealed := aead.Seal(nonce, nonce, plain, []byte(aor))
	clear(plain)
	a := store.Account{AOR: aor, KeyID: k.current, Sealed: sealed, Updated: now.UTC()}
	realms, algs := map[string]bool{}, map[string]bool{}
	for _, h := range c.HA1 {
		realms[h.Realm] = true
		algs[h.Algorithm] = true
	}
	a.Realms, a.Algorithms = sortedKeys(realms), sortedKeys(algs)
	return a, nil
}

// Open decrypts an account record; ErrUnsealable when no key opens it
// for its AOR.
func (k *Keyring) Open(a store.Account) (Credentials, error) {
	if k == nil {
		return Credentials{}, ErrNoKey
	}
	aead, ok := k.keys[a.KeyID]
	if !ok {
		return Credentials{}, fmt.Errorf("%w: key %s is not configured", ErrUnsealable, a.KeyID)
	}
	if len(a.Sealed) < aead.NonceSize() {
		return Credentials{}, ErrUnsealable
	}
	n := aead.NonceSize()
	plain, err := aead.Open(nil, a.Sealed[:n], a.Sealed[n:], []byte(a.AOR))
	if err != nil {
		return Credentials{}, ErrUnsealable
	}
	var c Credentials
	err = json.Unmarshal(plain, &c)
	clear(plain)
	if err != nil {
		return Credentials{}, fmt.Errorf("%w: %v", ErrUnsealable, err)
	}
	return c, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
