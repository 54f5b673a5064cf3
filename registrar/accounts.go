package registrar

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/store"
)

// ParseAOR normalises an AOR given by an operator ("sip:1001@pbx.test",
// or "1001@pbx.test").
func ParseAOR(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, ":") {
		s = "sip:" + s
	}
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil {
		return "", fmt.Errorf("registrar: aor %q: %w", s, err)
	}
	if u.User == "" {
		return "", fmt.Errorf("registrar: aor %q has no user part", s)
	}
	return NormalizeAOR(u)
}

// SetAccount seals c and stores it as aor's on-behalf credentials.
func (r *Registrar) SetAccount(ctx context.Context, aor string, c Credentials) (store.Account, error) {
	aor, err := ParseAOR(aor)
	if err != nil {
		return store.Account{}, err
	}
	if len(c.HA1) == 0 {
		return store.Account{}, errors.New("registrar: no credentials given")
	}
	for i, h := range c.HA1 {
		h.Algorithm = canonicalAlgorithm(h.Algorithm)
		h.HA1 = strings.ToLower(strings.TrimSpace(h.HA1))
		if h.Algorithm != AlgMD5 && h.Algorithm != AlgSHA256 {
			return store.Account{}, fmt.Errorf("registrar: unsupported digest algorithm %q", h.Algorithm)
		}
		if !ValidHA1(h.Algorithm, h.HA1) {
			return store.Account{}, fmt.Errorf("registrar: %s HA1 must be %d lowercase hex digits", h.Algorithm, map[string]int{AlgMD5: 32, AlgSHA256: 64}[h.Algorithm])
		}
		c.HA1[i] = h
	}
	if c.Username == "" {
		c.Username = userOf(aor)
	}
	a, err := r.cfg.Keyring.Seal(aor, c, time.Now())
	if err != nil {
		return store.Account{}, err
	}
	if err := r.store.PutAccount(ctx, a); err != nil {
		return store.Account{}, err
	}
	r.log.Info("credentials stored", proxy.AOR(aor), zap.Strings("realms", a.Realms), zap.Strings("algorithms", a.Algorithms), zap.String("key_id", a.KeyID))
	return a, nil
}

// SetPassword turns a password into the HA1 of both algorithms (MD5,
// SHA-256) for realm, the AOR's domain when realm is empty, and stores
// them; the password itself is kept nowhere.
func (r *Registrar) SetPassword(ctx context.Context, aor, username, realm, password string) (store.Account, error) {
	norm, err := ParseAOR(aor)
	if err != nil {
		return store.Account{}, err
	}
	if password == "" {
		return store.Account{}, errors.New("registrar: empty password")
	}
	if username == "" {
		username = userOf(norm)
	}
	if realm == "" {
		_, realm, _ = strings.Cut(norm, "@")
	}
	c := Credentials{Username: username}
	for _, alg := range []string{AlgMD5, AlgSHA256} {
		h, err := HA1(alg, username, realm, password)
		if err != nil {
			return store.Account{}, err
		}
		c.HA1 = append(c.HA1, Credential{Realm: realm, Algorithm: alg, HA1: h})
	}
	return r.SetAccount(ctx, norm, c)
}

// DeleteAccount removes aor's credentials; store.ErrNotFound when there
// are none.
func (r *Registrar) DeleteAccount(ctx context.Context, aor string) error {
	norm, err := ParseAOR(aor)
	if err != nil {
		return err
	}
	if err := r.store.DeleteAccount(ctx, norm); err != nil {
		return err
	}
	r.log.Info("credentials deleted", proxy.AOR(norm))
	return nil
}

// Accounts lists the stored accounts without their sealed bytes.
func (r *Registrar) Accounts(ctx context.Context) ([]store.Account, error) {
	as, err := r.store.ListAccounts(ctx)
	for i := range as {
		as[i].Sealed = nil
	}
	return as, err
}

// Reseal re-encrypts every account not sealed under the current key (a
// key rotation: the new key in registrar.credentials.key_file, the old one
// in old_key_files). It returns how many it moved; an account no
// configured key opens is left as it is and reported in err.
func (r *Registrar) Reseal(ctx context.Context) (int, error) {
	if r.cfg.Keyring == nil {
		return 0, ErrNoKey
	}
	as, err := r.store.ListAccounts(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var failed []string
	for _, a := range as {
		if a.KeyID == r.cfg.Keyring.CurrentKeyID() {
			continue
		}
		c, err := r.cfg.Keyring.Open(a)
		if err != nil {
			failed = append(failed, a.AOR)
			continue
		}
		na, err := r.cfg.Keyring.Seal(a.AOR, c, time.Now())
		if err != nil {
			return n, err
		}
		if err := r.store.PutAccount(ctx, na); err != nil {
			return n, err
		}
		n++
	}
	r.log.Info("credentials re-encrypted", zap.Int("count", n), zap.Int("failed", len(failed)), zap.String("key_id", r.cfg.Keyring.CurrentKeyID()))
	if len(failed) > 0 {
		return n, fmt.Errorf("%w: %s", ErrUnsealable, strings.Join(failed, ", "))
	}
	return n, nil
}

// Registrations lists the records of what sipwake keeps for devices
// (filter by AOR when set).
func (r *Registrar) Registrations(ctx context.Context, aor string) ([]store.Registration, error) {
	return r.store.ListRegistrations(ctx, store.RegistrationFilter{AOR: aor})
}

func userOf(aor string) string {
	u := strings.TrimPrefix(strings.TrimPrefix(aor, "sips:"), "sip:")
	u, _, _ = strings.Cut(u, "@")
	return u
}
