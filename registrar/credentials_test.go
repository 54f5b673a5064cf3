package registrar

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	oldKey := testKey(t)
	kr, err := NewKeyring(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	ha1, _ := HA1(AlgMD5, "1001", "pbx.test", "secret")
	c := Credentials{Username: "1001", HA1: []Credential{{Realm: "pbx.test", Algorithm: AlgMD5, HA1: ha1}}}
	a, err := kr.Seal("sip:1001@pbx.test", c, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(a.Sealed, []byte(ha1)) || bytes.Contains(a.Sealed, mustHex(t, ha1)) {
		t.Fatal("sealed record holds the HA1 in clear")
	}
	if a.KeyID != kr.CurrentKeyID() || len(a.Realms) != 1 || a.Realms[0] != "pbx.test" || a.Algorithms[0] != AlgMD5 {
		t.Fatalf("account metadata %+v", a)
	}
	got, err := kr.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := got.For("pbx.test", "MD5"); !ok || h != ha1 {
		t.Fatalf("For = %q %v", h, ok)
	}
	if _, ok := got.For("other", "MD5"); ok {
		t.Fatal("HA1 for one realm answered another")
	}

	// Moved to another AOR: the associated data no longer matches.
	moved := a
	moved.AOR = "sip:1002@pbx.test"
	if _, err := kr.Open(moved); !errors.Is(err, ErrUnsealable) {
		t.Fatalf("moved record: %v, want ErrUnsealable", err)
	}
	// Tampered.
	bad := a
	bad.Sealed = append([]byte(nil), a.Sealed...)
	bad.Sealed[len(bad.Sealed)-1] ^= 1
	if _, err := kr.Open(bad); !errors.Is(err, ErrUnsealable) {
		t.Fatalf("tampered record: %v", err)
	}
	// Another key.
	other, _ := NewKeyring(testKey(t))
	if _, err := other.Open(a); !errors.Is(err, ErrUnsealable) {
		t.Fatalf("other key: %v", err)
	}
	// Rotation: the new keyring with the old key as an old key opens it.
	rotated, _ := NewKeyring(testKey(t), oldKey)
	if _, err := rotated.Open(a); err != nil {
		t.Fatalf("rotated keyring: %v", err)
	}
	if rotated.CurrentKeyID() == a.KeyID {
		t.Fatal("rotation kept the key id")
	}
}

func mustHex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAnyRealmCredential(t *testing.T) {
	c := Credentials{HA1: []Credential{{Algorithm: AlgMD5, HA1: "a"}, {Realm: "r", Algorithm: AlgMD5, HA1: "b"}, {Algorithm: AlgSHA256, HA1: "c"}}}
	for _, tc := range []struct{ realm, alg, want string }{
		{"r", "MD5", "b"}, {"x", "", "a"}, {"x", "SHA-256", "c"}, {"r", "sha-256-sess", "c"}, {"x", "MD5-sess", "a"},
	} {
		if got, ok := c.For(tc.realm, tc.alg); !ok || got != tc.want {
			t.Errorf("For(%q, %q) = %q %v, want %q", tc.realm, tc.alg, got, ok, tc.want)
		}
	}
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	k := testKey(t)
	for name, content := range map[string][]byte{
		"raw": k, "hex": []byte(hex.EncodeToString(k) + "\n"),
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadKeyFile(p)
		if err != nil || !bytes.Equal(got, k) {
			t.Errorf("%s: %x %v", name, got, err)
		}
	}
	p := filepath.Join(dir, "short")
	_ = os.WriteFile(p, []byte("abcd"), 0o600)
	if _, err := ReadKeyFile(p); err == nil {
		t.Error("short key accepted")
	}
}

func TestValidHA1(t *testing.T) {
	md5, _ := HA1(AlgMD5, "u", "r", "p")
	sha, _ := HA1(AlgSHA256, "u", "r", "p")
	if !ValidHA1(AlgMD5, md5) || !ValidHA1(AlgSHA256, sha) || ValidHA1(AlgMD5, sha) || ValidHA1(AlgMD5, "ZZ"+md5[2:]) {
		t.Fatal("ValidHA1 wrong")
	}
}
