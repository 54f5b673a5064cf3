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
