package embedded

import (
	"encoding/binary"
	"time"
)

// aorKey returns the escaped, terminated form of aor that prefixes every
// key of the AOR: NUL becomes 0x00 0xFF and 0x00 0x01 ends it. The
// encoding keeps the byte order of (aor, instance) pairs.
func aorKey(aor string) []byte {
	k := make([]byte, 0, len(aor)+2)
	for i := 0; i < len(aor); i++ {
		if aor[i] == 0 {
			k = append(k, 0, 0xff)
			continue
		}
		k = append(k, aor[i])
	}
	return append(k, 0, 1)
}

// bindingKey is the key of binding (aor, instance).
func bindingKey(aor, instance string) []byte {
	return append(aorKey(aor), instance...)
}

// splitBindingKey reverses bindingKey; ok is false for a malformed key.
func splitBindingKey(k []byte) (aor, instance string, ok bool) {
	var b []byte
	for i := 0; i < len(k); i++ {
		if k[i] != 0 {
			b = append(b, k[i])
			continue
		}
		if i+1 >= len(k) {
			return "", "", false
		}
		switch k[i+1] {
		case 0xff:
			b = append(b, 0)
			i++
		case 1:
			return string(b), string(k[i+2:]), true
		default:
			return "", "", false
		}
	}
	return "", "", false
}

// expiryKey is the expiry-index key of a binding key expiring at t.
func expiryKey(t time.Time, bkey []byte) []byte {
	n := t.UnixNano()
	if n < 0 {
		n = 0
	}
	k := make([]byte, 8, 8+len(bkey))
	binary.BigEndian.PutUint64(k, uint64(n))
	return append(k, bkey...)
}

// splitExpiryKey returns the expiry time and binding key of an expiry-index
// key.
func splitExpiryKey(k []byte) (time.Time, []byte, bool) {
	if len(k) < 8 {
		return time.Time{}, nil, false
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))), k[8:], true
}
