package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/registrar"
	"github.com/sipwake/sipwake/store"
)

// The on-behalf accounts and the upstream registration records of the admin API:
//
//	GET    /v1/accounts            {"accounts": [account...]}
//	PUT    /v1/accounts/{aor}      body accountRequest; the account; 400 bad input, 503 without a key
//	DELETE /v1/accounts/{aor}      204; 404 when the AOR has no account
//	POST   /v1/accounts/rekey      {"resealed": n}; 500 listing the accounts no key opens
//	GET    /v1/registrations[?aor] {"registrations": [registration...]}
//
// The accounts endpoints answer 501 when the daemon runs without the registrar. A password
// is turned into HA1s at once (registrar.SetPassword) and kept nowhere; no answer ever
// holds an HA1 or the sealed record.

// adminNoKeyMessage is the 503 answer when credentials cannot be sealed or opened.
const adminNoKeyMessage = "no credentials key is configured (registrar.credentials.key_file); on-behalf credentials cannot be stored"

// accountRequest is the body of PUT /v1/accounts/{aor}: a password, or HA1s.
type accountRequest struct {
	// Password is turned into MD5 and SHA-256 HA1s for Realm (default: the AOR's domain).
	Password *string `json:"password"`
	// Username is the digest user name (default: the AOR's user part).
	Username string `json:"username"`
	// Realm is for Password only; each HA1 names its own.
	Realm string `json:"realm"`
	// HA1 lists precomputed digests of user:realm:password.
	HA1 []accountHA1 `json:"ha1"`
}

// accountHA1 is one precomputed HA1 of an accountRequest.
type accountHA1 struct {
	// Realm is the digest realm; "" applies to whatever realm the PBX challenges with.
	Realm string `json:"realm"`
	// Algorithm is MD5 (the default) or SHA-256.
	Algorithm string `json:"algorithm"`
	// HA1 is the lowercase hex digest.
	HA1 string `json:"ha1"`
}

// adminAccount is an account as the admin API shows it. It has, on purpose, no field for
// the sealed bytes or any HA1.
type adminAccount struct {
	AOR        string    `json:"aor"`
	KeyID      string    `json:"key_id"`
	Realms     []string  `json:"realms"`
	Algorithms []string  `json:"algorithms"`
	Updated    time.Time `json:"updated"`
	// State sums up the AOR's registration records: the most troubled state among them
	// (needs_login, backing_off, active, push_only, in that order); absent without any.
	State string `json:"state,omitempty"`
	// UpstreamExpires is the earliest time one of them lapses at the PBX.
	UpstreamExpires time.Time `json:"upstream_expires_at,omitzero"`
	// Registrations are the AOR's records, one per sipwake contact at the PBX.
	Registrations []adminAccountReg `json:"registrations,omitempty"`
}

// adminAccountReg is one registration record of an account.
type adminAccountReg struct {
	Instance        string    `json:"instance,omitempty"`
	OnBehalf        bool      `json:"on_behalf"`
	State           string    `json:"state"`
	UpstreamExpires time.Time `json:"upstream_expires_at,omitzero"`
}

// adminAccounts is the body of GET /v1/accounts.
type adminAccounts struct {
	Accounts []adminAccount `json:"accounts"`
}

// adminResealed is the body of POST /v1/accounts/rekey; Error is set on a 500 answer.
type adminResealed struct {
	Resealed int    `json:"resealed"`
	Error    string `json:"error,omitempty"`
}

// stateRank orders registration states from the most troubled down.
var stateRank = map[string]int{store.RegNeedsLogin: 4, store.RegBackingOff: 3, store.RegActive: 2, store.RegPushOnly: 1}

// toAdminAccount shows a with its registration records regs (those of a.AOR).
func toAdminAccount(a store.Account, regs []store.Registration) adminAccount {
	out := adminAccount{
		AOR: a.AOR, KeyID: a.KeyID, Realms: append([]string{}, a.Realms...),
		Algorithms: append([]string{}, a.Algorithms...), Updated: a.Updated.UTC(),
	}
	for _, r := range regs {
		out.Registrations = append(out.Registrations, adminAccountReg{
			Instance: r.Instance, OnBehalf: r.OnBehalf, State: r.State, UpstreamExpires: r.Expires.UTC(),
		})
		if out.State == "" || stateRank[r.State] > stateRank[out.State] {
			out.State = r.State
		}
		if !r.Expires.IsZero() && (out.UpstreamExpires.IsZero() || r.Expires.Before(out.UpstreamExpires)) {
			out.UpstreamExpires = r.Expires.UTC()
		}
	}
	return out
}

// needRegistrar answers 501 when the daemon runs without the registrar module.
func (s *adminServer) needRegistrar(w http.ResponseWriter) bool {
	if s.deps.Registrar == nil {
		writeAdminError(w, http.StatusNotImplemented, "on-behalf accounts need the registrar module, which this process does not run")
		return false
	}
	return true
}

// accountAOR is the AOR of a /v1/accounts/{aor} path: normalised as for bindings, and
// with a user part, as the registrar files accounts.
func accountAOR(r *http.Request) (string, error) {
	aor, err := pathAOR(r, "/v1/accounts/")
	if err != nil {
		return "", err
	}
	if _, err := registrar.ParseAOR(aor); err != nil {
		return "", fmt.Errorf("aor %q has no user part", aor)
	}
	return aor, nil
}

// accountError answers a failed registrar call made after the input was checked: 503 for a
// missing key, 404 for a missing account, else what storeError says.
func (s *adminServer) accountError(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, registrar.ErrNoKey) {
		writeAdminError(w, http.StatusServiceUnavailable, "%s: %s", what, adminNoKeyMessage)
		return
	}
	s.storeError(w, what, err)
}

// checkHA1s validates and normalises the HA1s of a request: algorithm MD5 (default) or
// SHA-256, lowercase hex of the algorithm's length, one per realm and algorithm. The
// messages never quote a digest.
func checkHA1s(in []accountHA1, username string) (registrar.Credentials, error) {
	c := registrar.Credentials{Username: username}
	seen := map[[2]string]bool{}
	for i, h := range in {
		alg := strings.ToUpper(strings.TrimSpace(h.Algorithm))
		switch alg {
		case "", registrar.AlgMD5:
			alg = registrar.AlgMD5
		case registrar.AlgSHA256:
		default:
			return c, fmt.Errorf("ha1[%d]: unsupported algorithm %q: want MD5 or SHA-256", i, h.Algorithm)
		}
		digest := strings.ToLower(strings.TrimSpace(h.HA1))
		if !registrar.ValidHA1(alg, digest) {
			n := 32
			if alg == registrar.AlgSHA256 {
				n = 64
			}
			return c, fmt.Errorf("ha1[%d]: a %s HA1 is %d hex digits (the digest of user:realm:password), got %d characters", i, alg, n, len(digest))
		}
		realm := strings.TrimSpace(h.Realm)
		key := [2]string{realm, alg}
		if seen[key] {
			return c, fmt.Errorf("ha1[%d]: a second %s HA1 for realm %q", i, alg, realm)
		}
		seen[key] = true
		c.HA1 = append(c.HA1, registrar.Credential{Realm: realm, Algorithm: alg, HA1: digest})
	}
	return c, nil
}

func (s *adminServer) listAccounts(w http.ResponseWriter, r *http.Request) {
	if !s.needRegistrar(w) {
		return
	}
	as, err := s.deps.Registrar.Accounts(r.Context())
	if err != nil {
		s.accountError(w, "list accounts", err)
		return
	}
	regs, err := s.deps.Registrar.Registrations(r.Context(), "")
	if err != nil {
		s.storeError(w, "list registrations", err)
		return
	}
	byAOR := map[string][]store.Registration{}
	for _, rg := range regs {
		byAOR[rg.AOR] = append(byAOR[rg.AOR], rg)
	}
	out := adminAccounts{Accounts: make([]adminAccount, 0, len(as))}
	for _, a := range as {
		out.Accounts = append(out.Accounts, toAdminAccount(a, byAOR[a.AOR]))
	}
	writeAdminJSON(w, http.StatusOK, out)
}

func (s *adminServer) putAccount(w http.ResponseWriter, r *http.Request) {
	if !s.needRegistrar(w) {
		return
	}
	aor, err := accountAOR(r)
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	var req accountRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// A decoding error names a field or a position, never a value.
		writeAdminError(w, http.StatusBadRequest, "request body: %v", err)
		return
	}
	if dec.More() {
		writeAdminError(w, http.StatusBadRequest, "request body: more than one JSON value")
		return
	}
	req.Username = strings.TrimSpace(req.Username)
	var (
		a   store.Account
		how string
	)
	switch {
	case req.Password != nil && len(req.HA1) > 0:
		writeAdminError(w, http.StatusBadRequest, "give either password or ha1, not both")
		return
	case req.Password != nil:
		if *req.Password == "" {
			writeAdminError(w, http.StatusBadRequest, "password is empty")
			return
		}
		how = "password"
		a, err = s.deps.Registrar.SetPassword(r.Context(), aor, req.Username, strings.TrimSpace(req.Realm), *req.Password)
	case len(req.HA1) > 0:
		if req.Realm != "" {
			writeAdminError(w, http.StatusBadRequest, "realm goes with password; give each ha1 entry its own realm")
			return
		}
		c, cerr := checkHA1s(req.HA1, req.Username)
		if cerr != nil {
			writeAdminError(w, http.StatusBadRequest, "%v", cerr)
			return
		}
		how = "ha1"
		a, err = s.deps.Registrar.SetAccount(r.Context(), aor, c)
	default:
		writeAdminError(w, http.StatusBadRequest, "give password, or ha1 (a list of {realm, algorithm, ha1})")
		return
	}
	if err != nil {
		s.accountError(w, "set account "+aor, err)
		return
	}
	regs, err := s.deps.Registrar.Registrations(r.Context(), a.AOR)
	if err != nil {
		// The account is stored; only its registrations are not shown.
		s.log.Warn("admin: registrations of a stored account", zap.String("aor", a.AOR), zap.Error(err))
		regs = nil
	}
	s.log.Info("account set by admin", proxy.AOR(a.AOR), zap.String("from", how),
		zap.Strings("realms", a.Realms), zap.Strings("algorithms", a.Algorithms), zap.String("key_id", a.KeyID))
	writeAdminJSON(w, http.StatusOK, toAdminAccount(a, regs))
}

func (s *adminServer) deleteAccount(w http.ResponseWriter, r *http.Request) {
	if !s.needRegistrar(w) {
		return
	}
	aor, err := accountAOR(r)
	if err != nil {
		writeAdminError(w, http.StatusBadRequest, "%v", err)
		return
	}
	if err := s.deps.Registrar.DeleteAccount(r.Context(), aor); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			writeAdminError(w, http.StatusNotFound, "no account for %s", aor)
			return
		}
		s.accountError(w, "delete account "+aor, err)
		return
	}
	s.log.Info("account deleted by admin", proxy.AOR(aor))
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (s *adminServer) rekeyAccounts(w http.ResponseWriter, r *http.Request) {
	if !s.needRegistrar(w) {
		return
	}
	n, err := s.deps.Registrar.Reseal(r.Context())
	switch {
	case err == nil:
		s.log.Info("accounts re-encrypted by admin", zap.Int("count", n))
		writeAdminJSON(w, http.StatusOK, adminResealed{Resealed: n})
	case errors.Is(err, registrar.ErrNoKey):
		writeAdminError(w, http.StatusServiceUnavailable, "rekey: %s", adminNoKeyMessage)
	case errors.Is(err, registrar.ErrUnsealable):
		failed := strings.TrimPrefix(err.Error(), registrar.ErrUnsealable.Error()+": ")
		s.log.Warn("accounts re-encrypted by admin, some left as they were", zap.Int("count", n), zap.String("unopened", failed))
		writeAdminJSON(w, http.StatusInternalServerError, adminResealed{Resealed: n, Error: fmt.Sprintf(
			"rekey: %d account(s) re-encrypted; no configured key (registrar.credentials.key_file, old_key_files) opens these, left as they are: %s",
			n, failed)})
	default:
		s.log.Warn("admin rekey failed", zap.Int("count", n), zap.Error(err))
		writeAdminJSON(w, http.StatusServiceUnavailable, adminResealed{Resealed: n, Error: fmt.Sprintf("rekey: %d account(s) re-encrypted, then: %v", n, err)})
	}
}

// adminRegistration is an upstream registration record as the admin API shows it: the
// contact token masked, the instance as bindings show it.
type adminRegistration struct {
	Token         string    `json:"token"`
	AOR           string    `json:"aor"`
	Instance      string    `json:"instance,omitempty"`
	OnBehalf      bool      `json:"on_behalf"`
	Transport     string    `json:"transport,omitempty"`
	State         string    `json:"state"`
	Failures      int       `json:"failures"`
	AuthFailures  int       `json:"auth_failures"`
	ExpiresAt     time.Time `json:"expires_at,omitzero"`
	DeviceExpires time.Time `json:"device_expires_at,omitzero"`
	LastSeen      time.Time `json:"last_seen,omitzero"`
	LastPush      time.Time `json:"last_push,omitzero"`
	RefreshAt     time.Time `json:"refresh_at,omitzero"`
	Due           time.Time `json:"due,omitzero"`
}

// adminRegistrations is the body of GET /v1/registrations.
type adminRegistrations struct {
	Registrations []adminRegistration `json:"registrations"`
}

func toAdminRegistration(r store.Registration) adminRegistration {
	return adminRegistration{
		Token: proxy.Mask(r.Token), AOR: r.AOR, Instance: r.Instance, OnBehalf: r.OnBehalf, Transport: r.Transport,
		State: r.State, Failures: r.Failures, AuthFailures: r.AuthFailures, ExpiresAt: r.Expires.UTC(),
		DeviceExpires: r.DeviceExpires.UTC(), LastSeen: r.LastSeen.UTC(), LastPush: r.LastPush.UTC(),
		RefreshAt: r.RefreshAt.UTC(), Due: r.Due.UTC(),
	}
}

// listRegistrations reads the store directly: the records exist whatever the registrar's
// mode, and a node without the registrar module can still show them.
func (s *adminServer) listRegistrations(w http.ResponseWriter, r *http.Request) {
	var f store.RegistrationFilter
	if a := r.URL.Query().Get("aor"); a != "" {
		aor, err := parseAOR(a)
		if err != nil {
			writeAdminError(w, http.StatusBadRequest, "%v", err)
			return
		}
		f.AOR = aor
	}
	rs, err := s.deps.Store.ListRegistrations(r.Context(), f)
	if err != nil {
		s.storeError(w, "list registrations", err)
		return
	}
	out := adminRegistrations{Registrations: make([]adminRegistration, 0, len(rs))}
	for _, rg := range rs {
		out.Registrations = append(out.Registrations, toAdminRegistration(rg))
	}
	writeAdminJSON(w, http.StatusOK, out)
}
