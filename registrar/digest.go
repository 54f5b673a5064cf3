package registrar

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// challenge is a parsed WWW-Authenticate or Proxy-Authenticate Digest
// challenge (RFC 7616, RFC 3261 §22.4).
type challenge struct {
	realm, nonce, opaque, algorithm string
	qopAuth                         bool // qop offered and includes "auth"
	qopOffered                      bool
}

// parseChallenge reads a Digest challenge header value.
func parseChallenge(v string) (challenge, error) {
	var c challenge
	v = strings.TrimSpace(v)
	scheme, rest, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Digest") {
		return c, fmt.Errorf("registrar: challenge scheme %q is not Digest", scheme)
	}
	for _, kv := range splitParams(rest) {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		val = strings.Trim(strings.TrimSpace(val), `"`)
		switch k {
		case "realm":
			c.realm = val
		case "nonce":
			c.nonce = val
		case "opaque":
			c.opaque = val
		case "algorithm":
			c.algorithm = val
		case "qop":
			c.qopOffered = true
			for _, q := range strings.Split(val, ",") {
				if strings.EqualFold(strings.TrimSpace(q), "auth") {
					c.qopAuth = true
				}
			}
		}
	}
	if c.nonce == "" {
		return c, errors.New("registrar: challenge without nonce")
	}
	if c.qopOffered && !c.qopAuth {
		return c, errors.New("registrar: challenge offers no qop=auth")
	}
	if _, err := newHash(c.algorithm); err != nil {
		return c, err
	}
	return c, nil
}

// splitParams splits "a=1, b="x,y", c" at commas outside quotes.
func splitParams(s string) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// authorization answers the challenge with the HA1 of the realm: the
// header value of an Authorization (or Proxy-Authorization).
// cnonce is the client nonce (newCnonce), used with qop=auth and the
// -sess algorithms.
func (c challenge) authorization(username, ha1, method, uri string, nc uint32, cnonce string) string {
	h := func(s string) string {
		x, _ := newHash(c.algorithm)
		x.Write([]byte(s))
		return hex.EncodeToString(x.Sum(nil))
	}
	if strings.HasSuffix(strings.ToLower(c.algorithm), "-sess") {
		ha1 = h(ha1 + ":" + c.nonce + ":" + cnonce)
	}
	ha2 := h(method + ":" + uri)
	ncs := fmt.Sprintf("%08x", nc)
	var resp string
	if c.qopAuth {
		resp = h(ha1 + ":" + c.nonce + ":" + ncs + ":" + cnonce + ":auth:" + ha2)
	} else {
		resp = h(ha1 + ":" + c.nonce + ":" + ha2)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s"`,
		username, c.realm, c.nonce, uri, resp)
	if c.algorithm != "" {
		b.WriteString(", algorithm=" + c.algorithm)
	}
	if c.opaque != "" {
		fmt.Fprintf(&b, `, opaque="%s"`, c.opaque)
	}
	if c.qopAuth {
		fmt.Fprintf(&b, `, qop=auth, nc=%s, cnonce="%s"`, ncs, cnonce)
	}
	return b.String()
}

// newCnonce returns a fresh client nonce.
func newCnonce() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
