package pushtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
)

// jwtParts is a decoded compact JWS.
type jwtParts struct {
	header  map[string]any
	claims  map[string]any
	signed  []byte // header.payload, the signing input
	sig     []byte
	encoded string
}

func decodeJWT(s string) (*jwtParts, error) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a compact jws")
	}
	p := &jwtParts{signed: []byte(parts[0] + "." + parts[1]), encoded: s}
	for i, dst := range []*map[string]any{&p.header, &p.claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return nil, err
		}
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, err
	}
	p.sig = sig
	return p, nil
}

func (p *jwtParts) str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func (p *jwtParts) num(k string) int64 {
	f, _ := p.claims[k].(float64)
	return int64(f)
}

// verifyES256 checks an ES256 signature (r||s, 32 bytes each).
func (p *jwtParts) verifyES256(pub *ecdsa.PublicKey) bool {
	if p.str(p.header, "alg") != "ES256" || len(p.sig) != 64 {
		return false
	}
	h := sha256.Sum256(p.signed)
	r := new(big.Int).SetBytes(p.sig[:32])
	s := new(big.Int).SetBytes(p.sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

// verifyRS256 checks an RS256 (PKCS #1 v1.5, SHA-256) signature.
func (p *jwtParts) verifyRS256(pub *rsa.PublicKey) bool {
	if p.str(p.header, "alg") != "RS256" {
		return false
	}
	h := sha256.Sum256(p.signed)
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, h[:], p.sig) == nil
}
