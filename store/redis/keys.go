package redis

import (
	"strings"
)

// DefaultKeyPrefix starts every key and the events channel when
// Options.KeyPrefix is empty.
const DefaultKeyPrefix = "sipwake:"

// keys builds the store's key names (see README.md):
//
//	<p>aor:{A}           ZSET   instance -> expiry (unix ms); PEXPIREAT max expiry
//	<p>binding:{A}:I     HASH   data (JSON), token, aor, instance; PEXPIREAT expiry
//	<p>token:T           STRING the binding key name; PXAT the binding's expiry
//	<p>secret:N          STRING the secret's raw bytes; no expiry
//	<p>heldcalls:{held}  ZSET   held-call ID -> forget time (unix ms); PEXPIREAT max
//	<p>held:{held}:H     HASH   data (JSON), aor, node; PEXPIREAT forget time
//	<p>node:N            STRING last heartbeat (unix ms); PX the heartbeat's ttl
//	<p>msg:{msg}:M       HASH   aor, sender, data (JSON), exp, attempts, seq,
//	                            npending, p:<instance>, d:<instance>; no expiry
//	<p>msgs:{msg}        ZSET   message ID -> Received (unix ms); no expiry
//	<p>msgexp:{msg}      ZSET   message ID -> Expires (unix ms); no expiry
//	<p>msgaor:{msg}:A'   ZSET   message ID -> Received (unix ms); no expiry
//	<p>lease:L           STRING the holder's node id; PX the lease's ttl
//	<p>reg:{reg}:T       HASH   data (JSON), aor, instance, state, gen, ix,
//	                            put; no expiry
//	<p>regdue:{reg}      ZSET   token -> schedule entry (unix ms); no expiry
//	<p>regindex:{reg}    ZSET   score 0, member regIndexMember(aor, token):
//	                            records by AOR then token (BYLEX); no expiry
//	<p>regstates:{reg}   SET    the states that have records; no expiry
//	<p>regstate:{reg}:S  SET    the tokens of the records in state S
//	<p>accounts:{acct}   HASH   AOR -> the account as JSON; no expiry
//	<p>events            pub/sub channel of JSON store.Event
//
// A is the AOR with '%', '{' and '}' percent-escaped, so that the hash tag
// {A} is exactly the AOR (both keys of an AOR land in one Cluster slot) and
// no AOR/instance pair can produce another pair's key. I, T, N (a secret
// or node name) and H (a held call's ID) are raw. In Cluster mode a secret
// or node key hashes like any plain key (by its name, or by a {tag} inside
// it): it is read and written alone. Every held-call key carries the fixed
// hash tag {held}, so the index and the records share one slot and the
// held-call scripts may touch any of them (the "forget time" is the
// call's Deadline plus store.HeldRetention). Every stored-message key
// carries the fixed hash tag {msg} the same way: M (a message ID) and A'
// (an AOR, unescaped) are raw, after the tag. A lease key L is raw and
// hashes like a node key: every lease script touches that key alone.
// Every registration key carries the fixed hash tag {reg}: T (a token)
// and S (a state) are raw, after the tag. The accounts hash carries
// {acct} (a single key: the tag only keeps it apart from plain keys).
type keys struct{ prefix string }

var aorEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")
var aorUnescaper = strings.NewReplacer("%25", "%", "%7B", "{", "%7D", "}")

func escapeAOR(aor string) string { return aorEscaper.Replace(aor) }

func unescapeAOR(s string) string { return aorUnescaper.Replace(s) }

func (k keys) aor(aor string) string { return k.prefix + "aor:{" + escapeAOR(aor) + "}" }

// bindingPrefix is the key prefix of every binding of aor; a binding's key
// is this prefix followed by the raw instance.
func (k keys) bindingPrefix(aor string) string {
	return k.prefix + "binding:{" + escapeAOR(aor) + "}:"
}

func (k keys) binding(aor, instance string) string { return k.bindingPrefix(aor) + instance }

// tokenPrefix is the prefix of every token key (scripts that find a token
// in a binding build its key from it).
func (k keys) tokenPrefix() string { return k.prefix + "token:" }

func (k keys) token(token string) string { return k.tokenPrefix() + token }

func (k keys) secret(name string) string { return k.prefix + "secret:" + name }

func (k keys) events() string { return k.prefix + "events" }

// heldIndex is the sorted set of every held call's ID.
func (k keys) heldIndex() string { return k.prefix + "heldcalls:{held}" }

// heldPrefix is the prefix of every held-call record key; a record's key
// is this prefix followed by the raw ID.
func (k keys) heldPrefix() string { return k.prefix + "held:{held}:" }

func (k keys) held(id string) string { return k.heldPrefix() + id }

func (k keys) node(node string) string { return k.prefix + "node:" + node }

// msgIndex is the sorted set of every stored message's ID by arrival.
func (k keys) msgIndex() string { return k.prefix + "msgs:{msg}" }

// msgExpiry is the sorted set of every stored message's ID by expiry.
func (k keys) msgExpiry() string { return k.prefix + "msgexp:{msg}" }

// msgAORPrefix is the prefix of every per-AOR message index; an AOR's
// index is this prefix followed by the raw AOR.
func (k keys) msgAORPrefix() string { return k.prefix + "msgaor:{msg}:" }

func (k keys) msgAOR(aor string) string { return k.msgAORPrefix() + aor }

// msgPrefix is the prefix of every stored message's hash; a message's key
// is this prefix followed by the raw ID.
func (k keys) msgPrefix() string { return k.prefix + "msg:{msg}:" }

func (k keys) msg(id string) string { return k.msgPrefix() + id }

func (k keys) lease(key string) string { return k.prefix + "lease:" + key }

// regPrefix is the prefix of every registration record's hash; a
// record's key is this prefix followed by the raw token.
func (k keys) regPrefix() string { return k.prefix + "reg:{reg}:" }

func (k keys) reg(token string) string { return k.regPrefix() + token }

// regDue is the sorted set of every registration's schedule entry.
func (k keys) regDue() string { return k.prefix + "regdue:{reg}" }

// regIndex is the sorted set that orders registrations by AOR then token.
func (k keys) regIndex() string { return k.prefix + "regindex:{reg}" }

// regStates is the set of the states that have at least one record.
func (k keys) regStates() string { return k.prefix + "regstates:{reg}" }

// regStatePrefix is the prefix of every per-state token set; a state's
// set is this prefix followed by the raw state.
func (k keys) regStatePrefix() string { return k.prefix + "regstate:{reg}:" }

// accounts is the hash of every on-behalf account by AOR.
func (k keys) accounts() string { return k.prefix + "accounts:{acct}" }

// regIndexAOR returns the start of the regindex members of aor: the AOR
// with NUL written as 00 FF, then 00 01. Byte order of (aor, token) pairs
// is kept, and no other AOR's members start with it.
func regIndexAOR(aor string) string {
	b := make([]byte, 0, len(aor)+2)
	for i := 0; i < len(aor); i++ {
		if aor[i] == 0 {
			b = append(b, 0, 0xff)
			continue
		}
		b = append(b, aor[i])
	}
	return string(append(b, 0, 1))
}

// regIndexMember is the regindex member of the record of token under aor.
func regIndexMember(aor, token string) string { return regIndexAOR(aor) + token }

// regIndexRange returns the ZRANGEBYLEX bounds of the members of aor, or
// of every member when aor is empty.
func regIndexRange(aor string) (lo, hi string) {
	if aor == "" {
		return "-", "+"
	}
	p := regIndexAOR(aor)
	// p ends with 00 01: every member of aor is below p with 00 02 at its end.
	return "[" + p, "(" + p[:len(p)-1] + "\x02"
}

// aorPattern is the SCAN MATCH pattern of every AOR set.
func (k keys) aorPattern() string { return globEscape(k.prefix) + "aor:{*}" }

// aorFromKey returns the AOR of an AOR-set key name.
func (k keys) aorFromKey(key string) (string, bool) {
	s, ok := strings.CutPrefix(key, k.prefix+"aor:{")
	if !ok {
		return "", false
	}
	s, ok = strings.CutSuffix(s, "}")
	if !ok || strings.ContainsAny(s, "{}") {
		return "", false
	}
	return unescapeAOR(s), true
}

// globEscape quotes the glob characters of Redis MATCH patterns.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
