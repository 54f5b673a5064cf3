package redis

import (
	"strings"
	"testing"
)

func TestKeysAreInjective(t *testing.T) {
	k := keys{prefix: "p:"}
	pairs := [][2]string{
		{"sip:x}:y", "z"}, {"sip:x", "y}:z"},
		{"sip:a", "b:c"}, {"sip:a:b", "c"},
		{"sip:%7B@x", "i"}, {"sip:{@x", "i"}, {"sip:%257B@x", "i"},
		{"sip:a}", "b"}, {"sip:a", "}b"}, {"sip:a%7D", "b"},
		{"sip:a\x00", "b"}, {"sip:a", "\x00b"},
	}
	seen := map[string][2]string{}
	for _, p := range pairs {
		bk := k.binding(p[0], p[1])
		if other, dup := seen[bk]; dup {
			t.Errorf("binding key %q shared by %q and %q", bk, other, p)
		}
		seen[bk] = p
		ak := k.aor(p[0])
		got, ok := k.aorFromKey(ak)
		if !ok || got != p[0] {
			t.Errorf("aorFromKey(%q) = %q, %v; want %q", ak, got, ok, p[0])
		}
	}
}

func TestHashTagIsTheAOR(t *testing.T) {
	// Redis hashes the bytes between the first '{' and the next '}'.
	tag := func(key string) string {
		for i := 0; i < len(key); i++ {
			if key[i] == '{' {
				for j := i + 1; j < len(key); j++ {
					if key[j] == '}' {
						return key[i+1 : j]
					}
				}
				return ""
			}
		}
		return ""
	}
	k := keys{prefix: "sipwake:"}
	for _, aor := range []string{"sip:alice@example.com", "sip:a}b@x", "sip:{a}@x", "sip:%7D@x", "sip:ü@例え.jp"} {
		ak, bk := k.aor(aor), k.binding(aor, "}{inst}")
		if tag(ak) != escapeAOR(aor) || tag(bk) != tag(ak) {
			t.Errorf("aor %q: hash tags %q (set) and %q (binding), want both %q", aor, tag(ak), tag(bk), escapeAOR(aor))
		}
	}
}

func TestAORPatternEscapesPrefix(t *testing.T) {
	k := keys{prefix: `a*b?c[d]e\f:`}
	if got, want := k.aorPattern(), `a\*b\?c\[d\]e\\f:aor:{*}`; got != want {
		t.Errorf("aorPattern = %q, want %q", got, want)
	}
}

func TestHeldKeys(t *testing.T) {
	k := keys{prefix: "p:"}
	seen := map[string]string{k.heldIndex(): "index"}
	for _, id := range []string{"", "a", "a:", "{held}", "}", "x\x00y", "calls:{held}"} {
		key := k.held(id)
		if other, dup := seen[key]; dup {
			t.Errorf("held key %q of %q collides with %q", key, id, other)
		}
		seen[key] = id
	}
	// Redis hashes the bytes between the first '{' and the next '}': the
	// prefix has no braces, so every held-call key hashes "held".
	for key := range seen {
		i := strings.IndexByte(key, '{')
		j := strings.IndexByte(key[i+1:], '}')
		if i < 0 || j < 0 || key[i+1:i+1+j] != "held" {
			t.Errorf("key %q does not carry the hash tag {held}", key)
		}
	}
}

func TestMessageKeys(t *testing.T) {
	k := keys{prefix: "p:"}
	seen := map[string]string{k.msgIndex(): "index", k.msgExpiry(): "expiry index"}
	for _, id := range []string{"", "a", "a:", "{msg}", "}", "x\x00y", "s:{msg}"} {
		for what, key := range map[string]string{"message": k.msg(id), "aor index": k.msgAOR(id)} {
			if other, dup := seen[key]; dup {
				t.Errorf("%s key %q of %q collides with %q", what, key, id, other)
			}
			seen[key] = what + " " + id
		}
	}
	// Every stored-message key hashes "msg" (the prefix has no braces).
	for key := range seen {
		i := strings.IndexByte(key, '{')
		j := strings.IndexByte(key[i+1:], '}')
		if i < 0 || j < 0 || key[i+1:i+1+j] != "msg" {
			t.Errorf("key %q does not carry the hash tag {msg}", key)
		}
	}
	if a, b := k.lease("x"), k.lease("x\x00"); a == b {
		t.Errorf("lease keys of distinct names collide: %q", a)
	}
}

func TestRegistrationKeys(t *testing.T) {
	k := keys{prefix: "p:"}
	seen := map[string]string{k.regDue(): "schedule", k.regIndex(): "index", k.regStates(): "states"}
	for _, id := range []string{"", "a", "a:", "{reg}", "}", "x\x00y", "due:{reg}", "s"} {
		for what, key := range map[string]string{"record": k.reg(id), "state set": k.regStatePrefix() + id} {
			if other, dup := seen[key]; dup {
				t.Errorf("%s key %q of %q collides with %q", what, key, id, other)
			}
			seen[key] = what + " " + id
		}
	}
	// Every registration key hashes "reg" (the prefix has no braces).
	for key := range seen {
		i := strings.IndexByte(key, '{')
		j := strings.IndexByte(key[i+1:], '}')
		if i < 0 || j < 0 || key[i+1:i+1+j] != "reg" {
			t.Errorf("key %q does not carry the hash tag {reg}", key)
		}
	}
	if got := k.accounts(); got != "p:accounts:{acct}" {
		t.Errorf("accounts key %q, want p:accounts:{acct}", got)
	}
}

func TestRegIndexMembers(t *testing.T) {
	// The members sort as (aor, token) pairs compare, byte by byte, and
	// an AOR's range holds exactly its members.
	pairs := [][2]string{
		{"sip:a", ""}, {"sip:a", "\x00"}, {"sip:a", "z"}, {"sip:a\x00", "a"}, {"sip:a\x00\x01b", "a"},
		{"sip:a\x01", "a"}, {"sip:ab", "a"}, {"\xff", "\xff"}, {"sip:a\x00\x02", ""},
	}
	for _, p := range pairs {
		for _, q := range pairs {
			mp, mq := regIndexMember(p[0], p[1]), regIndexMember(q[0], q[1])
			want := p[0] < q[0] || (p[0] == q[0] && p[1] < q[1])
			if got := mp < mq; got != want {
				t.Errorf("member of %q < member of %q = %v, want %v", p, q, got, want)
			}
			lo, hi := regIndexRange(p[0])
			in := mq >= lo[1:] && mq < hi[1:]
			if in != (q[0] == p[0]) {
				t.Errorf("member of %q in the range of aor %q = %v", q, p[0], in)
			}
		}
	}
	if lo, hi := regIndexRange(""); lo != "-" || hi != "+" {
		t.Errorf("regIndexRange(\"\") = %q, %q; want - and +", lo, hi)
	}
}
